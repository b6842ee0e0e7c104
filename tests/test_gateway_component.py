"""The Gateway component under mocks: what it uploads, publishes and keeps secret."""

from __future__ import annotations


import pulumi
import pytest

from components.container import Placement
from components.gateway import component as gateway_component
from components.gateway.component import Gateway, GatewayArgs, GatewayTls
from components.gateway.reload import ROOT, SCRIPT_DIGEST, reload_command
from components.gateway.render import (
    CONF_PATH,
    LUA_DIR,
    REDIS_PASSWORD_ENV,
    TLS_CERT_PATH,
    TLS_KEY_PATH,
    lua_files,
)
from components.host import HostShell
from infra.catalog import declare_services
from infra.config import StackConfig
from tests.conftest import run
from tests.mocks import gateway_installed_files as installed, is_secret, plaintext_leaks


def catalog(**ports):
    # An https port is only valid with a certificate (StackConfig refuses one that serves nothing).
    gateway = {"tls": {"certificate": "-----BEGIN CERTIFICATE-----\nC\n-----END CERTIFICATE-----"}} if "https" in ports else {}
    config = StackConfig.model_validate(
        {"environment": "qa", "target": {"kind": "local"}, "ports": {"base": 5100, "http": 80, **ports}, "gateway": gateway}
    )
    return declare_services(config)


def gateway_args(provider, **changes) -> GatewayArgs:
    fields = dict(catalog=catalog(), placement=Placement(prefix="coderz-qa", network_name="coderz-qa-net", provider=provider),
                  shell=HostShell(docker_host="unix:///var/run/docker.sock"),
                  redis_password=pulumi.Output.secret("REDIS-SECRET"))
    fields.update(changes)
    return GatewayArgs(**fields)


def test_gateway_installs_its_config_and_lua_in_place_and_publishes_http_only(monitor, provider):
    gateway = run(lambda: Gateway("gateway", gateway_args(provider)))
    (container,) = monitor.of_type("docker:index/container:Container")
    (command,) = monitor.of_type("command:local:Command")
    assert command.name == "gateway-config" and container.urn in command.dependencies
    assert command.plain["create"] == reload_command("coderz-qa-gateway", pid_file="/var/run/openresty/nginx.pid")
    assert command.plain["environment"] == {"DOCKER_HOST": "unix:///var/run/docker.sock"}
    config_digest, script_digest, container_id = command.plain["triggers"]
    assert len(config_digest) == 64 and script_digest == SCRIPT_DIGEST and container_id == "gateway-id"
    files = {path: text for path, (text, _) in installed(command).items()}
    assert set(files) == {CONF_PATH, *(f"{LUA_DIR}/{name}" for name in lua_files())}
    # the container itself starts from the bootstrap config: /health only
    (bootstrap,) = container.plain["uploads"]
    assert bootstrap["file"] == CONF_PATH and "location /api/" not in bootstrap["content"]
    assert "listen 8080 default_server;" in bootstrap["content"]
    conf = files[CONF_PATH]
    for prefix in ("/api/python/", "/api/dotnet/", "/grafana/", "/prefect/"):
        assert f"location {prefix} " in conf
    assert "REDIS-SECRET" not in conf and f"env {REDIS_PASSWORD_ENV};" in conf
    assert container.plain["ports"] == [{"internal": 8080, "external": 80}]
    assert container.plain["envs"] == [f"{REDIS_PASSWORD_ENV}=REDIS-SECRET"] and is_secret(container.inputs["envs"])
    assert container.plain["healthcheck"]["tests"][-1] == "http://127.0.0.1:8080/health"
    assert plaintext_leaks(monitor.registrations, {"REDIS-SECRET"}) == []

    @pulumi.runtime.test
    def outputs():
        def check(values):
            url, routes = values
            assert url == "http://localhost"
            assert routes == ["/api/dotnet/", "/api/python/", "/grafana/", "/prefect/"]
        return pulumi.Output.all(gateway.url, gateway.routes).apply(check)

    outputs()


def test_tls_gateway_serves_https_with_a_secret_key(monitor, provider):
    tls = GatewayTls(certificate="-----BEGIN CERTIFICATE-----\nC\n-----END CERTIFICATE-----",
                     private_key=pulumi.Output.secret("TLS-KEY-SECRET"))
    run(lambda: Gateway("gateway", gateway_args(provider, catalog=catalog(https=443), tls=tls, domain="qa.coderz.example")))
    (container,) = monitor.of_type("docker:index/container:Container")
    (command,) = monitor.of_type("command:local:Command")
    files = installed(command)
    conf = files[CONF_PATH][0]
    assert "ssl_protocols TLSv1.2 TLSv1.3;" in conf and "Strict-Transport-Security" in conf
    assert files[TLS_KEY_PATH] == ("TLS-KEY-SECRET", 0o600) and files[TLS_CERT_PATH][1] == 0o644
    # the key travels on stdin only, as a secret; the command line holds no file content
    assert is_secret(command.inputs["stdin"]) and "TLS-KEY" not in command.plain["create"]
    assert sorted((p["internal"], p["external"]) for p in container.plain["ports"]) == [(8080, 80), (8443, 443)]
    assert plaintext_leaks(monitor.registrations, {"TLS-KEY-SECRET", "REDIS-SECRET"}) == []


CONFIG_ONLY_CHANGES = {
    "routes": lambda provider: dict(catalog=catalog(), rate_limit_rps=7, rate_limit_burst=9),
    "domain": lambda provider: dict(domain="other.coderz.example"),
    "tls-material": lambda provider: dict(
        catalog=catalog(https=443), domain="qa.coderz.example",
        tls=GatewayTls(certificate="-----BEGIN CERTIFICATE-----\nRENEWED\n-----END CERTIFICATE-----",
                       private_key=pulumi.Output.secret("RENEWED-KEY"))),
    "lua": lambda provider: dict(),
}
BASELINE = {
    "tls-material": lambda provider: dict(
        catalog=catalog(https=443), domain="qa.coderz.example",
        tls=GatewayTls(certificate="-----BEGIN CERTIFICATE-----\nC\n-----END CERTIFICATE-----",
                       private_key=pulumi.Output.secret("TLS-KEY-SECRET"))),
}


@pytest.mark.parametrize("change", sorted(CONFIG_ONLY_CHANGES))
def test_a_config_only_change_reaches_the_command_and_leaves_the_container_as_it_is(monitor, provider, monkeypatch,
                                                                                      change):
    """Every `docker.Container` input forces a replacement but `restart`, `memory`,
    `memory_swap`, `cpu_shares`, `cpu_set`, `max_retry_count` (kreuzwerker
    resource_docker_container.go, ForceNew; resourceDockerContainerUpdate): so a config change
    must leave every input of the container exactly as it was, and change the command's."""
    baseline = BASELINE.get(change, lambda provider: {})(provider)
    run(lambda: Gateway("gateway", gateway_args(provider, **baseline)))
    before_container = monitor.of_type("docker:index/container:Container")[-1]
    before_command = monitor.of_type("command:local:Command")[-1]
    if change == "lua":
        edited = {name: text + "\n-- edited\n" for name, text in lua_files().items()}
        monkeypatch.setattr(gateway_component, "lua_files", lambda: edited)
    run(lambda: Gateway("gateway", gateway_args(provider, **CONFIG_ONLY_CHANGES[change](provider))))
    after_container = monitor.of_type("docker:index/container:Container")[-1]
    after_command = monitor.of_type("command:local:Command")[-1]
    assert after_container is not before_container
    assert after_container.plain == before_container.plain  # nothing to replace
    assert after_command.plain["triggers"][0] != before_command.plain["triggers"][0]  # the command re-runs
    assert after_command.plain["stdin"] != before_command.plain["stdin"]

