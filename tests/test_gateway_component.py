"""The Gateway component under mocks: what it uploads, publishes and keeps secret."""

from __future__ import annotations

import pulumi

from components.container import Placement
from components.gateway.component import Gateway, GatewayArgs, GatewayTls
from components.gateway.render import (
    CONF_PATH,
    LUA_DIR,
    REDIS_PASSWORD_ENV,
    TLS_KEY_PATH,
    lua_files,
)
from infra.catalog import declare_services
from infra.config import StackConfig
from tests.conftest import run
from tests.mocks import is_secret, plaintext_leaks


def catalog(**ports):
    config = StackConfig.model_validate(
        {"environment": "qa", "target": {"kind": "local"}, "ports": {"base": 5100, "http": 80, **ports}}
    )
    return declare_services(config)


def gateway_args(provider, **changes) -> GatewayArgs:
    fields = dict(catalog=catalog(), placement=Placement(prefix="coderz-qa", network_name="coderz-qa-net", provider=provider),
                  redis_password=pulumi.Output.secret("REDIS-SECRET"))
    fields.update(changes)
    return GatewayArgs(**fields)


def uploads_of(container) -> dict[str, object]:
    uploads = container.inputs["uploads"]
    uploads = uploads["value"] if is_secret(uploads) else uploads
    return {u["file"]: u["content"] for u in uploads}


def test_gateway_uploads_its_config_and_lua_and_publishes_http_only(monitor, provider):
    gateway = run(lambda: Gateway("gateway", gateway_args(provider)))
    (container,) = monitor.of_type("docker:index/container:Container")
    files = uploads_of(container)
    assert set(files) == {CONF_PATH, *(f"{LUA_DIR}/{name}" for name in lua_files())}
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
    files = uploads_of(container)
    conf = files[CONF_PATH]
    assert "ssl_protocols TLSv1.2 TLSv1.3;" in conf and "Strict-Transport-Security" in conf
    assert files[TLS_KEY_PATH] == "TLS-KEY-SECRET"
    assert sorted((p["internal"], p["external"]) for p in container.plain["ports"]) == [(8080, 80), (8443, 443)]
    assert plaintext_leaks(monitor.registrations, {"TLS-KEY-SECRET", "REDIS-SECRET"}) == []


def test_a_config_change_changes_the_gateway_container(monitor, provider):
    run(lambda: Gateway("gateway-a", gateway_args(provider)))
    run(lambda: Gateway("gateway-b", gateway_args(provider, rate_limit_rps=7)))
    digests = {
        c.name: {label["label"]: label["value"] for label in c.plain["labels"]}["coderz.config-digest"]
        for c in monitor.of_type("docker:index/container:Container")
    }
    assert digests["gateway-a"] != digests["gateway-b"]
