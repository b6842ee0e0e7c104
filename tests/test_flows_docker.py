"""docker-restart-monitor and weekly-cleanup against the real Docker daemon, run by a real
Prefect server (the test harness). The image is imported from Debian's busybox-static (no
pull); every object is labelled with this run's own stack names and removed afterwards.

The flows reach the daemon through its socket here: the socket proxy's image cannot be
pulled on this machine. tests/test_flows_units.py checks that every call they make is one
the proxy's allowlist lets through.
"""

from __future__ import annotations

import os
import re
import time
import uuid

import pytest

from components.prefect.render import DOCKER_ALLOW
from flows.docker_api import DockerApi
from tests.flows_support import DOCKER_SOCKET, busybox_image, checks_of, docker, require_docker, write_config

RUN = uuid.uuid4().hex[:8]
STACK, OTHER = f"coderz-flowtest-{RUN}", f"coderz-flowtest-other-{RUN}"
HEALTH_STACK = f"coderz-flowtest-health-{RUN}"


@pytest.fixture(scope="module")
def image():
    """The busybox image; on the way out, every object this module labelled goes."""
    require_docker()
    tag = f"coderz-flowtest/busybox:{RUN}"
    busybox_image(tag)
    yield tag
    for stack in (STACK, OTHER, HEALTH_STACK):
        ids = docker("ps", "-aq", "--filter", f"label=coderz.stack={stack}").split()
        if ids:
            docker("rm", "-f", *ids, check=False)
        for volume in docker("volume", "ls", "-q", "--filter", f"label=coderz.stack={stack}").split():
            docker("volume", "rm", volume, check=False)
        for leftover in docker("images", "-q", "--filter", f"label=coderz.stack={stack}").split():
            docker("rmi", "-f", leftover, check=False)
    docker("rmi", "-f", tag, check=False)


def container(image: str, stack: str, name: str, *argv: str, restart: str = "no", start: bool = True,
              options: tuple[str, ...] = ()) -> str:
    verb = "run" if start else "create"
    detach = ["-d"] if start else []
    return docker(verb, *detach, "--name", f"{stack}-{name}", "--label", f"coderz.stack={stack}",
                  "--network", "none", "--restart", restart, *options, image, *argv)


def restart_count(name: str) -> int:
    return int(docker("inspect", "-f", "{{.RestartCount}}", name))


def test_restart_monitor_reports_the_containers_that_restarted_since_the_last_run(prefect_api, image, tmp_path,
                                                                                   monkeypatch):
    from flows.docker_restart_monitor import docker_restart_monitor

    write_config(tmp_path, monkeypatch, stack=STACK)
    container(image, STACK, "steady", "sleep", "300")
    # Created, not started: the first run records it at 0 restarts.
    container(image, STACK, "crasher", "sh", "-c", "sleep 0.3; exit 3", restart="on-failure:2", start=False)
    container(image, OTHER, "crasher", "sh", "-c", "sleep 0.3; exit 3", restart="on-failure:2")

    first = docker_restart_monitor(return_state=True)
    assert first.is_completed(), first.message
    assert set(checks_of(first)) == {f"{STACK}-steady", f"{STACK}-crasher"}  # never another stack's

    docker("start", f"{STACK}-crasher")
    deadline = time.monotonic() + 30
    while restart_count(f"{STACK}-crasher") < 2 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert restart_count(f"{STACK}-crasher") == 2, "Docker did not restart the crasher twice"

    second = docker_restart_monitor(return_state=True)
    checks = checks_of(second)
    assert second.is_failed() and f"{STACK}-crasher" in second.message
    assert not checks[f"{STACK}-crasher"]["ok"] and "restarted 2 time(s)" in checks[f"{STACK}-crasher"]["detail"]
    assert checks[f"{STACK}-steady"]["ok"]
    assert checks["e-mail"]["ok"] and "logged" in checks["e-mail"]["detail"]  # this stack has no SMTP
    assert "restarted 2 time(s)" in (tmp_path / "state" / "events.jsonl").read_text()

    third = docker_restart_monitor(return_state=True)
    assert third.is_completed(), third.message  # no new restart since the last run


def test_restart_monitor_reports_an_unreachable_daemon(prefect_api, tmp_path, monkeypatch):
    from flows.docker_restart_monitor import docker_restart_monitor

    write_config(tmp_path, monkeypatch, docker_url=f"unix://{tmp_path}/no-such.sock")
    state = docker_restart_monitor(return_state=True)
    assert state.is_failed() and "did not answer" in checks_of(state)["docker"]["detail"]


def test_weekly_cleanup_prunes_only_this_stacks_stopped_containers_dangling_images_and_old_logs(
        prefect_api, image, tmp_path, monkeypatch):
    from flows.weekly_cleanup import weekly_cleanup

    write_config(tmp_path, monkeypatch, stack=STACK, log_retention_days=7)
    stopped = container(image, STACK, "stopped", "true", start=False)
    running = container(image, STACK, "running", "sleep", "300")
    others = container(image, OTHER, "stopped", "true", start=False)
    volume = docker("volume", "create", "--label", f"coderz.stack={STACK}", f"{STACK}-data")
    mounted = docker("create", "--label", f"coderz.stack={STACK}", "--name", f"{STACK}-with-volume",
                     "-v", f"{volume}:/data", image, "true")
    ours, theirs = busybox_image(None, label=STACK), busybox_image(None, label=OTHER)  # untagged: dangling
    logs = tmp_path / "state" / "logs"
    logs.mkdir(parents=True)
    old, recent = logs / "system-health-2020-01-01.log", logs / "system-health-today.log"
    old.write_text("old\n")
    recent.write_text("new\n")
    month_ago = time.time() - 30 * 86_400
    os.utime(old, (month_ago, month_ago))

    not_running = {c for status in ("created", "exited") for c in docker(
        "ps", "-aq", "--no-trunc", "--filter", f"label=coderz.stack={STACK}", "--filter", f"status={status}").split()}
    assert {stopped, mounted} <= not_running and running not in not_running

    state = weekly_cleanup(return_state=True)
    assert state.is_completed(), state.message
    remaining = set(docker("ps", "-aq", "--no-trunc", "--filter", f"label=coderz.stack={STACK}").split())
    assert running in remaining and not remaining & not_running
    assert others in docker("ps", "-aq", "--no-trunc", "--filter", f"label=coderz.stack={OTHER}").split()
    assert docker("volume", "ls", "-q", "--filter", f"name={volume}").split() == [volume]  # never volumes
    images = docker("images", "-aq", "--no-trunc").split()
    assert ours not in images and theirs in images
    assert not old.exists() and recent.exists()
    assert f"removed {len(not_running)} stopped container(s)" in checks_of(state)["containers"]["detail"]


def test_services_health_takes_dockers_verdict_where_nothing_reaches_a_service(prefect_api, image, tmp_path,
                                                                              monkeypatch):
    from flows.services_health import services_health

    container(image, HEALTH_STACK, "fine", "sleep", "300")
    container(image, HEALTH_STACK, "exited", "true")
    container(image, HEALTH_STACK, "sick", "sleep", "300",
              options=("--health-cmd", "false", "--health-interval", "1s", "--health-retries", "1"))
    deadline = time.monotonic() + 30
    while docker("inspect", "-f", "{{.State.Health.Status}}", f"{HEALTH_STACK}-sick") != "unhealthy":
        assert time.monotonic() < deadline, "Docker never judged the container unhealthy"
        time.sleep(0.2)
    probes = [{"service": name, "container": f"{HEALTH_STACK}-{name}", "host": f"{HEALTH_STACK}-{name}",
               "kind": "docker"} for name in ("fine", "exited", "sick", "missing")]
    write_config(tmp_path, monkeypatch, stack=HEALTH_STACK, probes=probes)
    state = services_health(return_state=True)
    checks = checks_of(state)
    assert state.is_failed()
    assert {name.removeprefix(f"{HEALTH_STACK}-"): c["ok"] for name, c in checks.items()} == {
        "fine": True, "exited": False, "sick": False, "missing": False}
    assert "Docker reports exited" in checks[f"{HEALTH_STACK}-exited"]["detail"]
    assert "(unhealthy)" in checks[f"{HEALTH_STACK}-sick"]["detail"]
    assert "no such container" in checks[f"{HEALTH_STACK}-missing"]["detail"]


def test_every_call_the_flows_make_is_one_the_socket_proxy_allows(image):
    """Each Docker API call of the flows' client, made for real, matches the proxy's allowlist
    for its method (the proxy answers 403 to anything else)."""
    lonely = f"coderz-flowtest-lonely-{RUN}"
    api = DockerApi(f"unix://{DOCKER_SOCKET}", lonely)
    assert api.containers() == []
    created = container(image, lonely, "stopped", "true", start=False)
    (listed,) = api.containers()
    assert api.inspect(listed["Id"])["Id"] == created
    assert api.prune_containers()["ContainersDeleted"] == [created]
    api.prune_images()
    assert {method for method, _ in api.calls} == {"GET", "POST"}
    for method, path in api.calls:
        assert re.fullmatch(DOCKER_ALLOW[method], path), (method, path)
