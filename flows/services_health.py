"""services-health: every declared service's health endpoint, container by container;
reports which are down and since when (state on the runner's volume)."""

from __future__ import annotations

import socket

import httpx
from prefect import flow

from flows import state
from flows.config import Probe, load_config
from flows.report import Check, finish

STATE = "services-health"


def probe(target: Probe, timeout: float) -> str | None:
    """None when healthy, else why not."""
    try:
        if target.kind == "tcp":
            with socket.create_connection((target.host, target.port), timeout=timeout):
                return None
        response = httpx.get(target.target, timeout=timeout)
    except (OSError, httpx.HTTPError) as exc:
        return f"unreachable: {exc.__class__.__name__}: {exc}"
    return None if response.status_code < 400 else f"answered {response.status_code}"


@flow(name="services-health")
def services_health():
    config = load_config()
    down = {}
    for target in config.probes:
        problem = probe(target, config.probe_timeout_s)
        if problem:
            down[target.container] = f"{target.target} {problem}"
    started, _, since = state.transitions(config, STATE, down)
    for container, detail in started.items():
        state.record(config, "health-failure", f"{container}: {detail}")
    checks = [
        Check(target.container, target.container not in down,
              f"down since {since[target.container]}: {down[target.container]}" if target.container in down
              else f"{target.target} healthy")
        for target in config.probes
    ]
    return finish(STATE, config, checks)
