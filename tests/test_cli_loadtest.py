"""`coderz loadtest`: the docker exec it runs (through a recording `docker` on PATH) and what
its exit code says."""

from __future__ import annotations


import pytest

from infra import cli
from infra.cli import loadtest


@pytest.fixture
def fake_docker(tmp_path, monkeypatch):
    """A `docker` that records its argv to calls.json and exits with $FAKE_DOCKER_EXIT."""
    calls = tmp_path / "calls.json"
    script = tmp_path / "docker"
    script.write_text(f"#!/bin/sh\nprintf '%s\\n' \"$@\" > {calls}\nexit ${{FAKE_DOCKER_EXIT:-0}}\n")
    script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:" + __import__("os").environ["PATH"])
    return lambda: calls.read_text().splitlines()


def test_runs_the_script_in_the_stacks_runner_against_its_gateway(fake_docker):
    assert cli.main(["loadtest", "prod", "--script", "load", "--env", "VUS=50"]) == cli.EXIT_OK
    argv = fake_docker()
    assert argv[:4] == ["-H", "ssh://deploy@prod.coderz.example:22", "exec", "coderz-prod-k6"]
    assert argv[4:6] == ["k6", "run"] and argv[-1] == "/loadtests/load.js"
    assert "BASE_URL=http://gateway:8080" in argv and "STACK=prod" in argv and "VUS=50" in argv
    assert "experimental-prometheus-rw" in argv and "0.0.0.0:6565" in argv


def test_dev_uses_the_local_socket_and_smoke_by_default(fake_docker):
    assert cli.main(["loadtest", "dev"]) == cli.EXIT_OK
    argv = fake_docker()
    assert argv[:2] == ["-H", "unix:///var/run/docker.sock"] and argv[-1] == "/loadtests/smoke.js"


@pytest.mark.parametrize("code, expected", [(99, cli.EXIT_FOUND), (1, cli.EXIT_FAILED), (125, cli.EXIT_FAILED)])
def test_exit_codes_say_what_happened(fake_docker, monkeypatch, capsys, code, expected):
    monkeypatch.setenv("FAKE_DOCKER_EXIT", str(code))
    assert cli.main(["loadtest", "qa"]) == expected
    assert "coderz: smoke:" in capsys.readouterr().err


@pytest.mark.parametrize("argv, message", [
    (["loadtest", "dev", "--script", "../../etc/passwd"], "no script"),
    (["loadtest", "dev", "--script", "lib"], "no script"),
    (["loadtest", "dev", "--env", "VUS"], "expected KEY=VALUE"),
    (["loadtest", "dev", "--env", "lower=1"], "bad variable name"),
    (["loadtest", "dev", "--env", "=1"], "bad variable name"),
    # aimed elsewhere: the runner would load-test any URL, or read another stack's routes
    (["loadtest", "dev", "--env", "BASE_URL=https://victim.example"], "BASE_URL is set by coderz loadtest"),
    (["loadtest", "qa", "--env", "STACK=prod"], "STACK is set by coderz loadtest"),
    # a typo would run silently with the default (20 users instead of 200)
    (["loadtest", "dev", "--script", "load", "--env", "VU=200"], "no script reads 'VU' (typo?)"),
    (["loadtest", "dev", "--env", "K6_NO_USAGE_REPORT=false"], "no script reads"),
    (["loadtest", "dev", "--env", "VUS=1", "--env", "VUS=500"], "--env VUS is given twice"),
])
def test_refuses_bad_requests_before_running_anything(fake_docker, capsys, argv, message):
    assert cli.main(argv) == cli.EXIT_REFUSED
    assert message in capsys.readouterr().err
    with pytest.raises(FileNotFoundError):
        fake_docker()


def test_every_variable_the_scripts_read_but_the_runners_own_is_accepted(fake_docker):
    from components.k6.settings import SET_BY_RUNNER, script_variables
    free = [name for name in script_variables() if name not in SET_BY_RUNNER]
    assert {"VUS", "DURATION", "RAMP", "ITERATIONS", "P95_MS", "MAX_ERROR_RATE", "ROUTES"} <= set(free)
    argv = ["loadtest", "dev"] + [arg for name in free for arg in ("--env", f"{name}=a=b c;$(x)")]
    assert cli.main(argv) == cli.EXIT_OK
    assert all(f"{name}=a=b c;$(x)" in fake_docker() for name in free)  # one argv word each, no shell


def test_without_the_docker_cli_it_fails_with_3(monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("PATH", str(tmp_path))
    assert cli.main(["loadtest", "dev"]) == cli.EXIT_FAILED
    assert "docker (the CLI) is not installed" in capsys.readouterr().err


def test_a_stack_without_k6_is_refused(fake_docker, monkeypatch, capsys):
    real = loadtest.stack_file_config
    monkeypatch.setattr(loadtest, "stack_file_config",
                        lambda stack, root: real(stack, root).model_copy(
                            update={"k6": real(stack, root).k6.model_copy(update={"enabled": False})}))
    assert cli.main(["loadtest", "dev"]) == cli.EXIT_REFUSED
    assert "coderz:k6.enabled is off" in capsys.readouterr().err


@pytest.mark.parametrize("stack, message", [
    ("staging", "unknown stack 'staging'"), ("../prod", "invalid stack name"), ("qa\nprod", "invalid stack name"),
])
def test_a_stack_that_is_not_one_is_refused(fake_docker, capsys, stack, message):
    assert cli.main(["loadtest", "--", stack]) == cli.EXIT_REFUSED
    assert message in capsys.readouterr().err
    with pytest.raises(FileNotFoundError):
        fake_docker()


def clone_of(tmp_path, source: str, new: str, edit=None):
    from infra.cloning import plan_clone, write_new_file
    from tests.standins import copy_project

    (tmp_path / "project").mkdir()
    root = copy_project(tmp_path / "project")
    plan = plan_clone(root, source, new)
    write_new_file(plan.path, edit(plan.text) if edit else plan.text)
    return root


def test_a_clone_runs_with_its_kinds_routes_kept_to_its_own(fake_docker, tmp_path):
    """routes.json has the three stack files' routes; a clone (any name) is its kind's entry,
    kept to the routes the clone itself has, in its own runner."""
    import json

    from infra.config import stack_file_config
    from infra.loadtests import ROUTES_FILE, stack_routes

    root = clone_of(tmp_path, "qa", "pr-12")
    assert cli.main(["loadtest", "pr-12", "--dir", str(root)]) == cli.EXIT_OK
    argv = fake_docker()
    assert argv[2:4] == ["exec", "coderz-pr-12-k6"] and "STACK=qa" in argv
    own = [r["name"] for r in stack_routes(stack_file_config("pr-12", root))]
    assert f"ROUTES={','.join(own)}" in argv
    assert all(r in json.loads(ROUTES_FILE.read_text())["stacks"]["qa"] for r in stack_routes(stack_file_config("pr-12", root)))
    # an operator's own ROUTES wins
    assert cli.main(["loadtest", "pr-12", "--dir", str(root), "--env", "ROUTES=gateway"]) == cli.EXIT_OK
    assert "ROUTES=gateway" in fake_docker() and f"ROUTES={','.join(own)}" not in fake_docker()


def test_a_clone_with_a_route_its_kind_lacks_is_refused(fake_docker, tmp_path, capsys):
    """A clone edited to route what its kind does not (here: a dev clone with k3s, whose web
    workload dev does not run) cannot be requested by scripts that know dev's routes: refused,
    nothing run."""
    from infra.config import stack_file_config

    assert not stack_file_config("dev").k3s.enabled
    root = clone_of(tmp_path, "dev", "dev-k3s", edit=lambda text: text + "  coderz:k3s:\n    enabled: true\n")
    assert stack_file_config("dev-k3s", root).k3s.enabled
    assert cli.main(["loadtest", "dev-k3s", "--dir", str(root)]) == cli.EXIT_REFUSED
    assert "k3s at /web/" in capsys.readouterr().err
    with pytest.raises(FileNotFoundError):
        fake_docker()
