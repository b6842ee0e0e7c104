"""The runner's entry point (`python -m flows.serve`), started as the container starts it, on
a flows config rendered by the program: its deployments and schedules are read back from a
real Prefect server (the test harness) and compared to the list of the platform reference."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from components.prefect import render
from components.prefect.settings import PrefectConfig
from flows.config import FlowsConfig
from flows.registry import FLOWS
from flows.serve import deployments
from infra.catalog import declare_services
from infra.config import stack_file_config
from tests.servers import free_port, http

REPO = Path(__file__).resolve().parent.parent
# The ORCHESTRATION block of the platform reference, in UTC.
REFERENCE_SCHEDULES = {
    "system-health": "*/5 * * * *",
    "services-health": "*/10 * * * *",
    "threshold-alerts": "*/15 * * * *",
    "k8s-health": "*/15 * * * *",
    "docker-restart-monitor": "*/10 * * * *",
    "daily-summary": "0 6 * * *",
    "weekly-cleanup": "0 2 * * 0",
}


def rendered(tmp_path: Path, prefect: PrefectConfig) -> Path:
    config = stack_file_config("dev")
    text = render.render_flows_config(declare_services(config), prefix="coderz-dev", prefect=prefect,
                                      thresholds=config.monitoring.thresholds, smtp=None,
                                      docker_url="http://docker-proxy:2375", state_dir=str(tmp_path / "state"))
    path = tmp_path / "flows.json"
    path.write_text(text)
    return path


def read_deployments() -> dict[str, dict]:
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        found = {}
        for deployment in client.read_deployments():
            flow = client.read_flow(deployment.flow_id)
            found[deployment.name] = {
                "flow": flow.name,
                "schedules": [(s.schedule.cron, s.schedule.timezone, s.active) for s in deployment.schedules],
                "paused": deployment.paused,
            }
        return found


def test_the_runner_serves_the_seven_deployments_on_the_reference_schedules(prefect_api, tmp_path):
    config = rendered(tmp_path, PrefectConfig())
    health_port = free_port()
    env = {**os.environ, "PREFECT_API_URL": prefect_api, "CODERZ_FLOWS_CONFIG": str(config),
           "PREFECT_RUNNER_SERVER_ENABLE": "true", "PREFECT_RUNNER_SERVER_HOST": "127.0.0.1",
           "PREFECT_RUNNER_SERVER_PORT": str(health_port), "PREFECT_RUNNER_POLL_FREQUENCY": "1"}
    log = open(tmp_path / "runner.log", "wb")
    runner = subprocess.Popen([sys.executable, "-m", "flows.serve"], cwd=REPO, env=env, stdout=log,
                              stderr=subprocess.STDOUT)
    try:
        deadline, found, healthy = time.monotonic() + 60, {}, False
        while time.monotonic() < deadline and not (len(found) == 7 and healthy):
            assert runner.poll() is None, (tmp_path / "runner.log").read_text()[-3000:]
            found = read_deployments()
            healthy = healthy or _answers(health_port)
            time.sleep(0.5)
        # A run of a served deployment, executed by the runner as a schedule would start it.
        run = run_deployment("k8s-health/k8s-health", timeout=90) if len(found) == 7 else None
    finally:
        runner.terminate()
        runner.wait(15)
        log.close()
    assert healthy, "the runner's /health (the container's health check) never answered"
    assert {name: d["schedules"] for name, d in found.items()} == {
        name: [(cron, "UTC", True)] for name, cron in REFERENCE_SCHEDULES.items()}
    assert {name: d["flow"] for name, d in found.items()} == {name: name for name in REFERENCE_SCHEDULES}
    assert not any(d["paused"] for d in found.values())
    assert run is not None and run.state.is_completed(), run and run.state
    assert run.state.message == "1 of 1 checks passed"
    # the runner ran it against the rendered file: its state volume got the run's log line
    assert "1 of 1 checks passed" in next((tmp_path / "state" / "logs").glob("k8s-health-*.log")).read_text()


def run_deployment(name: str, timeout: float):
    from prefect.deployments import run_deployment as run

    return run(name, timeout=timeout)


def _answers(port: int) -> bool:
    try:
        return http("GET", f"http://127.0.0.1:{port}/health", timeout=1)[0] == 200
    except OSError:
        return False


def test_a_stack_turns_deployments_off_and_moves_schedules(tmp_path):
    prefect = PrefectConfig.model_validate({"flows": {"weekly-cleanup": {"enabled": False},
                                                      "daily-summary": {"cron": "30 7 * * 1-5"}}})
    config = FlowsConfig.model_validate_json(rendered(tmp_path, prefect).read_text())
    served = {d.name: [(s.schedule.cron, s.schedule.timezone) for s in d.schedules] for d in deployments(config)}
    expected = {name: [(cron, "UTC")] for name, cron in REFERENCE_SCHEDULES.items() if name != "weekly-cleanup"}
    assert served == {**expected, "daily-summary": [("30 7 * * 1-5", "UTC")]}


def test_the_flows_and_the_programs_schedules_name_the_same_deployments():
    from components.prefect.settings import DEFAULT_SCHEDULES

    assert DEFAULT_SCHEDULES == REFERENCE_SCHEDULES
    assert list(FLOWS) == list(DEFAULT_SCHEDULES)
    assert {name: flow.name for name, flow in FLOWS.items()} == {name: name for name in FLOWS}
