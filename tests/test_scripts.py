"""Every shell script we ship or generate passes shellcheck: the repo's scripts, the host
bootstrap, the Logstash setup script, the gateway's reload script, container commands and the
CMD-SHELL health checks."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from components.gateway.acme import AcmeRender, acme_spec, render_acme_script
from components.gateway.reload import SCRIPT as GATEWAY_RELOAD
from components.host import INSTALL_DOCKER, firewall_script
from components.logging.render import render_es_setup_script
from components.redis import redis_command
from infra.catalog import declare_services
from infra.config import STACKS, stack_file_config
from tests.servers import require_tool

REPO = Path(__file__).resolve().parent.parent


def shellcheck(text: str, shell: str) -> subprocess.CompletedProcess:
    return subprocess.run([require_tool("shellcheck"), "-s", shell, "-"], input=text, capture_output=True, text=True)


@pytest.mark.parametrize("script", ["scripts/test", "scripts/up-dev", "scripts/fresh-machine-ci", ".ci/run", "components/backup/image/backup-loop.sh"])
def test_repository_scripts(script):
    result = subprocess.run([require_tool("shellcheck"), str(REPO / script)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout


def generated_scripts() -> dict[str, tuple[str, str]]:
    """name -> (shell, text) for every shell text the program generates."""
    scripts = {
        "install-docker": ("sh", INSTALL_DOCKER),
        "firewall": ("sh", firewall_script(2222, (80, 443, 8088))),
        "es-setup": ("sh", render_es_setup_script()),
        "redis-command": ("sh", redis_command(256)[2]),
        "acme-loop": ("sh", render_acme_script(AcmeRender(
            domain="coderz.example", email="ops@coderz.example", directory_url="https://ca.example/dir",
            probe_url="http://gateway:8080/.well-known/acme-challenge"))),
        "gateway-reload": ("sh", GATEWAY_RELOAD),
    }
    for stack in STACKS:
        catalog = declare_services(stack_file_config(stack))
        for service in (*catalog.services, acme_spec(catalog.get("gateway"))):
            test = service.health.test
            if test[0] == "CMD-SHELL":
                scripts[f"{service.name} health"] = ("sh", test[1])
            elif test[1:3] == ("bash", "-c"):
                scripts[f"{service.name} health"] = ("bash", test[3])
            elif test[1:3] == ("sh", "-c"):
                scripts[f"{service.name} health"] = ("sh", test[3])
    return scripts


SCRIPTS = generated_scripts()


def test_the_generated_set_covers_the_shell_health_checks():
    assert {"postgres health", "redis health", "dotnet-api health", "promtail health", "gateway-acme health",
            "acme-loop"} <= set(SCRIPTS)
    assert {"postgres health", "redis health", "dotnet-api health", "promtail health", "gateway-reload"} <= set(SCRIPTS)


@pytest.mark.parametrize("name", sorted(SCRIPTS))
def test_generated_shell_text(name):
    shell, text = SCRIPTS[name]
    result = shellcheck(text, shell)
    assert result.returncode == 0, f"{name}:\n{text}\n{result.stdout}"
