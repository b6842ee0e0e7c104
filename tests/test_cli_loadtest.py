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
])
def test_refuses_bad_requests_before_running_anything(fake_docker, capsys, argv, message):
    assert cli.main(argv) == cli.EXIT_REFUSED
    assert message in capsys.readouterr().err
    with pytest.raises(FileNotFoundError):
        fake_docker()


def test_a_stack_without_k6_is_refused(fake_docker, monkeypatch, capsys):
    real = loadtest.stack_file_config
    monkeypatch.setattr(loadtest, "stack_file_config",
                        lambda stack: real(stack).model_copy(update={"k6": real(stack).k6.model_copy(update={"enabled": False})}))
    assert cli.main(["loadtest", "dev"]) == cli.EXIT_REFUSED
    assert "coderz:k6.enabled is off" in capsys.readouterr().err


def test_an_unknown_stack_is_a_usage_error():
    with pytest.raises(SystemExit) as exit_:
        cli.main(["loadtest", "staging"])
    assert exit_.value.code == 2
