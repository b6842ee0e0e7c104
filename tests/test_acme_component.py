"""The gateway's ACME sidecar under mocks: what a gateway with a domain registers, and what a
stack without one does not."""

from __future__ import annotations

import functools

import pulumi
import pytest

from components.container import Placement
from components.gateway.acme import (
    GATEWAY_STORE,
    GATEWAY_WEBROOT,
    LEGO_IMAGE,
    LETS_ENCRYPT,
    SCRIPT_PATH,
    SIDECAR_STORE,
    SIDECAR_WEBROOT,
    AcmeConfig,
    AcmeRender,
    render_acme_script,
)
from components.gateway.component import Gateway, GatewayArgs
from components.host import HostShell
from tests.mocks import gateway_installed_files as installed
from components.gateway.render import CONF_PATH
from infra.catalog import declare_services
from infra.config import StackConfig
from tests.conftest import run
from tests.mocks import deploy_stack


def catalog():
    config = StackConfig.model_validate(
        {"environment": "qa", "target": {"kind": "local"}, "ports": {"base": 5100, "http": 80, "https": 443},
         "gateway": {"domain": "qa.coderz.example", "acme": {"email": "ops@coderz.example"}}}
    )
    return declare_services(config)


def acme_gateway(provider, name: str = "gateway", keep_data: bool = False):
    return Gateway(name, GatewayArgs(
        catalog=catalog(), placement=Placement(prefix="coderz-qa", network_name="coderz-qa-net", provider=provider),
        redis_password=pulumi.Output.secret("REDIS-SECRET"), domain="qa.coderz.example",
        acme=AcmeConfig(email="ops@coderz.example"), keep_data=keep_data,
        shell=HostShell(docker_host="unix:///var/run/docker.sock"),
    ))


def by_name(monitor, kind: str) -> dict:
    return {r.plain["name"]: r for r in monitor.of_type(kind)}


def uploads(container) -> dict[str, str]:
    return {u["file"]: u["content"] for u in container.plain["uploads"]}


@pytest.mark.parametrize("keep", [False, True])
def test_a_gateway_with_acme_registers_the_sidecar_its_volumes_and_mounts_them(monitor, provider, keep):
    gateway = run(lambda: acme_gateway(provider, keep_data=keep))
    (component,) = monitor.of_type("coderz:edge:Acme")
    assert component.name == "gateway-acme" and "coderz:edge:Gateway" in component.parent

    volumes = by_name(monitor, "docker:index/volume:Volume")
    assert set(volumes) == {"coderz-qa-gateway-acme-data", "coderz-qa-gateway-acme-webroot"}
    store, webroot = volumes["coderz-qa-gateway-acme-data"], volumes["coderz-qa-gateway-acme-webroot"]
    assert (store.retain_on_delete, store.protect) == (keep, keep)  # account key and certificates
    assert (webroot.retain_on_delete, webroot.protect) == (False, False)  # challenge tokens only

    containers = by_name(monitor, "docker:index/container:Container")
    sidecar, gw = containers["coderz-qa-gateway-acme"].plain, containers["coderz-qa-gateway"].plain
    assert sidecar["entrypoints"] == ["/bin/sh", SCRIPT_PATH]
    assert {(v["containerPath"], v["volumeName"], v.get("readOnly", False)) for v in sidecar["volumes"]} == {
        (SIDECAR_STORE, "coderz-qa-gateway-acme-data", False), (SIDECAR_WEBROOT, "coderz-qa-gateway-acme-webroot", False)}
    assert {(v["containerPath"], v["volumeName"], v["readOnly"]) for v in gw["volumes"]} == {
        (GATEWAY_STORE, "coderz-qa-gateway-acme-data", True), (GATEWAY_WEBROOT, "coderz-qa-gateway-acme-webroot", True)}
    assert "ports" not in sidecar or not sidecar["ports"]  # nothing published: the gateway serves HTTP-01
    assert sidecar["healthcheck"]["tests"][0] == "CMD-SHELL" and "last-success" in sidecar["healthcheck"]["tests"][1]
    (image,) = [i.plain["name"] for i in monitor.of_type("RemoteImage") if "lego" in i.plain["name"]]
    assert image == LEGO_IMAGE

    script = uploads(containers["coderz-qa-gateway-acme"])[SCRIPT_PATH]
    assert script == render_acme_script(AcmeRender(
        domain="qa.coderz.example", email="ops@coderz.example", directory_url=LETS_ENCRYPT,
        probe_url="http://gateway:8080/.well-known/acme-challenge"))
    assert "renew --days 30" in script and "--http.webroot /acme-webroot" in script

    (config_command,) = [c for c in monitor.of_type("command:local:Command") if c.name == "gateway-config"]
    conf = installed(config_command)[CONF_PATH][0]
    assert f"root {GATEWAY_WEBROOT};" in conf and "location ^~ /.well-known/acme-challenge/" in conf
    assert 'require("gateway_tls").certificate()' in conf and f"{GATEWAY_STORE}/live/gateway.pem" in conf
    assert sorted((p["internal"], p["external"]) for p in gw["ports"]) == [(8080, 80), (8443, 443)]

    @pulumi.runtime.test
    def url():
        return gateway.url.apply(lambda value: assert_equal(value, "https://qa.coderz.example"))

    url()


def assert_equal(value, expected):
    assert value == expected


def test_acme_needs_the_domain(monitor, provider):
    args = GatewayArgs(catalog=catalog(), placement=Placement(prefix="coderz-qa", network_name="n", provider=provider),
                       redis_password="x", acme=AcmeConfig(email="ops@coderz.example"),
                       shell=HostShell(docker_host="unix:///var/run/docker.sock"))
    with pytest.raises(ValueError, match="domain"):
        Gateway("gateway", args)


@functools.cache
def deployed(stack: str):
    return deploy_stack(stack)


@pytest.mark.parametrize("stack,kept", [("qa", False), ("prod", True)])
def test_stacks_with_a_domain_get_their_certificate_by_acme(stack, kept):
    monitor, outputs = deployed(stack)
    assert [c.name for c in monitor.of_type("coderz:edge:Acme")] == ["gateway-acme"]
    volumes = by_name(monitor, "docker:index/volume:Volume")
    store = volumes[f"coderz-{stack}-gateway-acme-data"]
    assert (store.retain_on_delete, store.protect) == (kept, kept)
    assert f"coderz-{stack}-gateway-acme-webroot" in volumes
    containers = by_name(monitor, "docker:index/container:Container")
    sidecar = containers[f"coderz-{stack}-gateway-acme"].plain
    assert not sidecar.get("envs")  # the account key is made and kept inside its volume
    script = uploads(containers[f"coderz-{stack}-gateway-acme"])[SCRIPT_PATH]
    domain = {"qa": "qa.coderz.example", "prod": "coderz.example"}[stack]
    assert f"--domains {domain} " in script and "--server https://acme-v02.api.letsencrypt.org/directory " in script
    (config_command,) = [c for c in monitor.registrations if c.name == "gateway-config"]
    conf = installed(config_command)[CONF_PATH][0]
    assert "ssl_certificate_by_lua_block" in conf and "REPLACE-WITH" not in conf
    assert not any(u["file"].endswith((".crt", ".key")) for u in containers[f"coderz-{stack}-gateway"].plain["uploads"])
    assert outputs["gateway_url"] == ("https://coderz.example" if stack == "prod" else "https://qa.coderz.example")


def test_a_stack_without_a_domain_registers_no_acme():
    monitor, outputs = deployed("dev")
    assert not monitor.of_type("coderz:edge:Acme")
    assert not [v for v in monitor.of_type("docker:index/volume:Volume") if "acme" in v.plain["name"]]
    assert not [c for c in monitor.of_type("docker:index/container:Container") if "acme" in c.plain["name"]]
    (gw,) = [c for c in monitor.of_type("docker:index/container:Container") if c.plain["name"] == "coderz-dev-gateway"]
    assert not gw.plain.get("volumes")
    conf = uploads(gw)[CONF_PATH]
    assert "ssl_" not in conf and "acme-challenge" not in conf
    assert outputs["gateway_url"] == "http://localhost:8088"
