"""docker-restart-monitor: this stack's containers whose restart count rose since the last
run (counts kept on the runner's volume); a rise is mailed and journaled."""

from __future__ import annotations

import httpx
from prefect import flow

from flows import mail, state
from flows.config import load_config
from flows.docker_api import DockerApi
from flows.report import Check, finish

STATE = "restart-counts"


def restart_counts(api: DockerApi) -> dict[str, dict[str, object]]:
    """Container name -> {id, count}."""
    counts = {}
    for summary in api.containers():
        details = api.inspect(summary["Id"])
        counts[details["Name"].lstrip("/")] = {"id": details["Id"], "count": details.get("RestartCount", 0)}
    return counts


def risen(previous: dict, current: dict) -> dict[str, int]:
    """Name -> restarts since the last run. A container seen for the first time sets the
    baseline; a re-created one (new id) counts from zero."""
    rises = {}
    for name, now in current.items():
        before = previous.get(name)
        if before is None:
            continue
        base = before["count"] if before["id"] == now["id"] else 0
        if now["count"] > base:
            rises[name] = now["count"] - base
    return rises


@flow(name="docker-restart-monitor")
def docker_restart_monitor():
    config = load_config()
    api = DockerApi(config.docker_url, config.stack)
    try:
        current = restart_counts(api)
    except (httpx.HTTPError, OSError) as exc:
        return finish("docker-restart-monitor", config,
                      [Check("docker", False, f"Docker API at {config.docker_url} did not answer: {exc}")])
    previous = state.load(config, STATE)
    state.save(config, STATE, current)
    rises = risen(previous, current)
    checks = [Check(name, name not in rises, f"restarted {rises[name]} time(s) since the last run (total {info['count']})"
                    if name in rises else f"{info['count']} restarts in total, none new")
              for name, info in sorted(current.items())]
    if rises:
        for name, count in rises.items():
            state.record(config, "restart", f"{name} restarted {count} time(s)")
        lines = "\n".join(f"{name}: +{count}" for name, count in sorted(rises.items()))
        checks.append(mail.send(config, f"{len(rises)} container(s) restarted", lines + "\n"))
    return finish("docker-restart-monitor", config, checks)
