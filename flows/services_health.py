"""services-health: every declared service's health endpoint, container by container;
reports which are down and since when (state on the runner's volume)."""

from __future__ import annotations

import socket

import httpx
from prefect import flow

from flows import state
from flows.config import FlowsConfig, Probe, load_config
from flows.docker_api import DockerApi
from flows.report import Check, finish

STATE = "services-health"


def docker_states(config: FlowsConfig) -> dict[str, str] | str:
    """This stack's containers by name and stable replica name -> Docker's status line ("Up 3
    hours (healthy)"), or why the Docker API did not answer."""
    try:
        listed = DockerApi(config.docker_url, config.stack).containers()
    except (httpx.HTTPError, OSError) as exc:
        return f"the Docker API at {config.docker_url} did not answer: {exc}"
    # A rolling replica's name changes each deploy; its `coderz.replica` label is the stable name.
    return {
        name: f"{c.get('State', '?')}: {c.get('Status', '')}"
        for c in listed
        for name in [*(n.lstrip("/") for n in c["Names"]), *filter(None, [(c.get("Labels") or {}).get("coderz.replica")])]
    }


def docker_verdict(target: Probe, states: dict[str, str] | str) -> str | None:
    if isinstance(states, str):
        return states
    status = states.get(target.container)
    if status is None:
        return "no such container"
    if not status.startswith("running") or "(unhealthy)" in status:
        return f"Docker reports {status}"
    return None


def probe(target: Probe, timeout: float) -> str | None:
    """None when healthy, else why not (a network probe; Docker's verdict is docker_verdict)."""
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
    states = docker_states(config) if any(t.kind == "docker" for t in config.probes) else {}
    down = {}
    for target in config.probes:
        if target.kind == "docker":
            problem = docker_verdict(target, states)
        else:
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
