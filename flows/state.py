"""Small JSON files on the runner's state volume: what the last run saw, and a journal of
events (alerts, restarts, health failures) that daily-summary reads back."""

from __future__ import annotations

import json
import os
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from flows.config import FlowsConfig
from flows.report import now

JOURNAL = "events.jsonl"


def _path(config: FlowsConfig, name: str) -> Path:
    folder = Path(config.state_dir)
    folder.mkdir(parents=True, exist_ok=True)
    return folder / name


def load(config: FlowsConfig, name: str) -> dict[str, Any]:
    path = _path(config, f"{name}.json")
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return {}


def save(config: FlowsConfig, name: str, data: dict[str, Any]) -> None:
    # Written aside and renamed: a run killed mid-write leaves the old state, not half a file.
    path = _path(config, f"{name}.json")
    scratch = path.with_suffix(".tmp")
    scratch.write_text(json.dumps(data, sort_keys=True))
    os.replace(scratch, path)


def record(config: FlowsConfig, kind: str, detail: str) -> None:
    with open(_path(config, JOURNAL), "a", encoding="utf-8") as journal:
        journal.write(json.dumps({"at": now().isoformat(), "kind": kind, "detail": detail}) + "\n")


def events_since(config: FlowsConfig, since: timedelta) -> list[dict[str, str]]:
    cutoff = now() - since
    events = []
    try:
        lines = _path(config, JOURNAL).read_text().splitlines()
    except FileNotFoundError:
        return []
    for line in lines:
        try:
            event = json.loads(line)
            if datetime.fromisoformat(event["at"]) >= cutoff:
                events.append(event)
        except (ValueError, KeyError, TypeError):
            continue  # a torn line from a killed run
    return events


def transitions(config: FlowsConfig, name: str, bad: dict[str, str]) -> tuple[dict[str, str], dict[str, str], dict[str, str]]:
    """Compare the problems found now (`bad`: key -> detail) with the last run's: returns
    (started, cleared, since) where `since` maps each current problem to when it began."""
    previous = load(config, name)
    stamp = now().isoformat()
    started = {k: v for k, v in bad.items() if k not in previous}
    cleared = {k: previous[k]["detail"] for k in previous if k not in bad}
    current = {k: {"detail": v, "since": previous.get(k, {}).get("since", stamp)} for k, v in bad.items()}
    save(config, name, current)
    return started, cleared, {k: v["since"] for k, v in current.items()}
