"""What a flow finds: a list of checks. A failed check is a finding, never an exception: the
flow run ends Failed with a one-line message naming what failed, and its data is the list."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from typing import Any

from prefect import get_run_logger
from prefect.states import Completed, Failed, State

from flows.config import FlowsConfig


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str


def now() -> datetime:
    return datetime.now(timezone.utc)


def finish(flow: str, config: FlowsConfig, checks: list[Check]) -> State:
    """Log every check, append the run's summary to the day's log file, end the run."""
    logger = get_run_logger()
    for check in checks:
        (logger.info if check.ok else logger.warning)("%s %s: %s", "ok  " if check.ok else "FAIL", check.name, check.detail)
    failed = [c for c in checks if not c.ok]
    summary = f"{len(checks) - len(failed)} of {len(checks)} checks passed"
    if failed:
        summary += "; failed: " + "; ".join(f"{c.name} ({c.detail})" for c in failed)
    write_log(config, flow, summary)
    data: list[dict[str, Any]] = [asdict(c) for c in checks]
    return Failed(message=summary, data=data) if failed else Completed(message=summary, data=data)


def write_log(config: FlowsConfig, flow: str, line: str) -> None:
    """One line per run in `logs/<flow>-<day>.log` on the state volume (weekly-cleanup ages them out)."""
    stamp = now()
    config.log_dir.mkdir(parents=True, exist_ok=True)
    with open(config.log_dir / f"{flow}-{stamp:%Y-%m-%d}.log", "a", encoding="utf-8") as log:
        log.write(f"{stamp.isoformat()} {line}\n")
