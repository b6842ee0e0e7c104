"""The Prefect component under Pulumi mocks, inside whole stacks: what it registers, how the
server, the socket proxy and the runner are wired, that secrets stay secret, and that a stack
with Prefect off registers nothing of it."""

from __future__ import annotations

import functools
import json
import re

import pytest

from components.prefect.render import CONFIG_PATH, DOCKER_ALLOW, KUBECONFIG_PATH, STATE_DIR
from components.prefect.settings import PREFECT_IMAGE, SOCKET_PROXY_IMAGE
from flows.config import FlowsConfig
from infra.services_orchestration import flows_image
from tests.mocks import deploy_stack, gateway_installed_files, generated_secrets, is_secret, plaintext_leaks, service_of

AUTH_PASSWORD = "generated-prefect-api-auth"
DB_PASSWORD = "generated-postgres-prefect_server-password"


@functools.cache
def deployed(stack: str = "prod"):
    return deploy_stack(stack)


def container(stack: str, service: str):
    monitor, _ = deployed(stack)
    (match,) = [c for c in monitor.of_type("docker:index/container:Container")
                if service_of(c) == service]
    return match


def env_of(registration) -> dict[str, str]:
    return dict(e.split("=", 1) for e in registration.plain["envs"])


def secret_envs(registration) -> set[str]:
    """Names of the env entries that reach the engine wrapped as secrets."""
    envs = registration.inputs["envs"]
    items = envs["value"] if is_secret(envs) else envs
    return {(e["value"] if is_secret(e) else e).split("=", 1)[0] for e in items if is_secret(e) or is_secret(envs)}


def test_the_component_owns_three_containers_a_volume_and_the_auth_password():
    monitor, outputs = deployed()
    (component,) = monitor.of_type("coderz:orchestration:Prefect")
    children = [r for r in monitor.registrations if r.parent == component.urn]
    assert sorted((r.type.rsplit(":", 1)[-1], r.name) for r in children) == [
        ("ContainerService", "prefect-docker-proxy"), ("ContainerService", "prefect-flows-runner"),
        ("ContainerService", "prefect-server"), ("RandomPassword", "prefect-api-auth"), ("Volume", "prefect-flows-state")]
    volume = monitor.named("prefect-flows-state")
    assert volume.plain["name"] == "coderz-prod-flows-state" and volume.protect  # prod keeps data
    assert outputs["prefect_ui_path"] == "/prefect/"
    assert outputs["prefect_deployments"]["weekly-cleanup"] == "0 2 * * 0"


def test_the_server_serves_ui_and_api_under_prefect_with_basic_auth_on_its_own_database():
    server = container("prod", "prefect-server")
    env = env_of(server)
    assert server.plain["command"] == ["prefect", "server", "start"]
    assert env["PREFECT_SERVER_API_BASE_PATH"] == "/prefect/api" and env["PREFECT_UI_SERVE_BASE"] == "/prefect/"
    assert env["PREFECT_UI_API_URL"] == "/prefect/api" and env["PREFECT_SERVER_API_HOST"] == "0.0.0.0"
    assert env["PREFECT_SERVER_API_AUTH_STRING"] == f"admin:{AUTH_PASSWORD}"
    assert env["PREFECT_API_DATABASE_CONNECTION_URL"] == \
        f"postgresql+asyncpg://prefect_server:{DB_PASSWORD}@postgres:5432/prefect_server"
    assert {"PREFECT_SERVER_API_AUTH_STRING", "PREFECT_API_DATABASE_CONNECTION_URL"} <= secret_envs(server)
    assert "ports" not in server.plain or not server.plain["ports"]  # prod does not publish the UI
    monitor, _ = deployed()
    image = [r for r in monitor.of_type("RemoteImage") if r.name == "prefect-server-image"][0]
    assert image.plain["name"] == PREFECT_IMAGE


def test_the_server_gets_its_role_and_database_and_waits_for_them():
    monitor, _ = deployed()
    sql = str(container("prod", "postgres").plain["uploads"][0]["content"])
    assert "prefect_server" in sql
    apply_roles = monitor.named("postgres-apply-roles")
    assert apply_roles.urn in container("prod", "prefect-server").dependencies


def test_the_runner_is_built_from_flows_and_reads_one_rendered_file_without_secrets():
    runner = container("prod", "flows-runner")
    monitor, _ = deployed()
    image = [r for r in monitor.of_type("RemoteImage") if r.name == "prefect-flows-runner-image"][0]
    assert image.plain["name"] == flows_image()
    assert image.plain["build"]["context"].endswith("/flows")
    # flows.json, and prod's k3s kubeconfig (secret, so the engine sees the whole list as one)
    uploads = {u["file"]: u["content"] for u in runner.plain["uploads"]}
    assert set(uploads) == {CONFIG_PATH, KUBECONFIG_PATH} and is_secret(runner.inputs["uploads"])
    assert "mock-token" not in uploads[CONFIG_PATH] and "password" not in uploads[CONFIG_PATH].lower()
    flows = FlowsConfig.model_validate(json.loads(uploads[CONFIG_PATH]))
    assert flows.backup_metric == "coderz_backup_last_success_timestamp_seconds"  # prod backs up: the summary says when
    assert flows.docker_url == "http://docker-proxy:2375" and flows.state_dir == STATE_DIR
    # through the stack's relay, which alone holds the upstream password
    assert flows.smtp is not None and (flows.smtp.host, flows.smtp.user) == ("smtp-relay", None)
    # every replica of the stack by its stable name, and only those: the catalog's services (the
    # ACME sidecar belongs to the gateway), k3s on the host reached at the host's address
    names = {c.plain["hostname"] for c in monitor.of_type("docker:index/container:Container")
             if service_of(c) != "gateway-acme"}
    assert {p.container for p in flows.probes} == names | {"coderz-prod-k3s"}
    (k3s,) = [p for p in flows.probes if p.service == "k3s"]
    assert (k3s.kind, k3s.host, k3s.port) == ("tcp", "172.17.0.1", 6443)
    for secret in generated_secrets(monitor):
        assert secret not in uploads[CONFIG_PATH]

    env = env_of(runner)
    assert env["PREFECT_API_URL"] == "http://prefect-server:4200/prefect/api"
    assert env["PREFECT_API_AUTH_STRING"] == f"admin:{AUTH_PASSWORD}"
    # the relay holds the upstream password: the runner gets none
    assert "SMTP_PASSWORD" not in env and env["CODERZ_FLOWS_CONFIG"] == CONFIG_PATH
    assert env["PREFECT_RUNNER_SERVER_ENABLE"] == "true" and env["PREFECT_RUNNER_SERVER_PORT"] == "8080"
    assert {"PREFECT_API_AUTH_STRING"} <= secret_envs(runner)
    assert [v for v in runner.plain["volumes"]] == [
        {"containerPath": STATE_DIR, "volumeName": "coderz-prod-flows-state", "readOnly": False}]


def test_only_the_socket_proxy_sees_the_docker_socket_and_only_the_flows_sections_are_on():
    proxy = container("prod", "docker-proxy")
    monitor, _ = deployed()
    image = [r for r in monitor.of_type("RemoteImage") if r.name == "prefect-docker-proxy-image"][0]
    assert image.plain["name"] == SOCKET_PROXY_IMAGE
    assert proxy.plain["volumes"] == [
        {"containerPath": "/var/run/docker.sock", "hostPath": "/var/run/docker.sock", "readOnly": True}]
    env = env_of(proxy)
    assert {k for k, v in env.items() if v == "1"} == {"CONTAINERS", "IMAGES", "POST", "PING"}
    # the sections the image turns on by default are turned off
    assert env["EVENTS"] == env["VERSION"] == env["VOLUMES"] == env["EXEC"] == env["NETWORKS"] == "0"
    for service in ("flows-runner", "prefect-server"):  # never the raw socket, nor any host path
        assert not [v for v in container("prod", service).plain.get("volumes") or [] if "hostPath" in v]
    allowed = {m: re.compile(p) for m, p in DOCKER_ALLOW.items()}
    for method, path in [("POST", "/v1.41/exec/abc/start"), ("POST", "/volumes/prune"), ("GET", "/volumes"),
                         ("GET", "/info"), ("GET", "/events"), ("POST", "/networks/prune"), ("POST", "/build"),
                         ("DELETE", "/volumes/data"), ("POST", "/swarm/init")]:
        assert method not in allowed or not allowed[method].fullmatch(path), (method, path)


def test_the_gateway_routes_prefect_without_stripping_its_prefix():
    monitor, _ = deployed("prod")
    (config_command,) = [c for c in monitor.registrations if c.name == "gateway-config"]
    (conf,) = [text for path, (text, _) in gateway_installed_files(config_command).items() if path.endswith("nginx.conf")]
    assert "location /prefect/ " in conf
    block = conf.split("location /prefect/ ", 1)[1].split("location ", 1)[0]
    assert "proxy_pass http://gw_backend/prefect/;" in block


@pytest.mark.parametrize("stack", ["dev", "qa", "prod"])
def test_no_secret_of_the_tier_in_plain_text(stack):
    monitor, _ = deployed(stack)
    assert plaintext_leaks(monitor.registrations, generated_secrets(monitor)) == []


def test_a_stack_with_prefect_off_registers_nothing_of_it():
    monitor, outputs = deploy_stack("dev", **{"coderz:prefect": {"enabled": False}})
    assert not monitor.of_type("coderz:orchestration:Prefect")
    assert not [r for r in monitor.registrations if "prefect" in r.name or "flows" in r.name or "docker-proxy" in r.name]
    assert not [k for k in outputs if k.startswith("prefect")]
    sql = str([c for c in monitor.of_type("docker:index/container:Container")
               if service_of(c) == "postgres"][0].plain["uploads"][0]["content"])
    assert "prefect_server" not in sql
    (config_command,) = [c for c in monitor.registrations if c.name == "gateway-config"]
    assert "/prefect/" not in json.dumps(gateway_installed_files(config_command))


def test_dev_publishes_the_ui_on_loopback_when_asked():
    monitor, _ = deploy_stack("dev", **{"coderz:prefect": {"publishUi": True}})
    (server,) = [c for c in monitor.of_type("docker:index/container:Container")
                 if service_of(c) == "prefect-server"]
    assert server.plain["ports"] == [{"internal": 4200, "external": 5242, "ip": "127.0.0.1"}]


def test_a_k3s_kubeconfig_reaches_the_runner_as_a_secret_file_the_flows_config_names(monitor, provider):
    from components.api import Database
    from components.container import Placement
    from components.prefect import Prefect, PrefectArgs
    from infra.catalog import declare_services
    from infra.config import StackConfig
    from infra.services_orchestration import FLOWS_SOURCE
    from tests.conftest import run

    kubeconfig = "apiVersion: v1\nusers: [{name: default, user: {client-key-data: SECRET-KEY-DATA}}]\n"
    config = StackConfig()
    run(lambda: Prefect("prefect", PrefectArgs(
        catalog=declare_services(config), config=config.prefect,
        placement=Placement(prefix="coderz-test", network_name="coderz-test-net", provider=provider),
        database=Database(host="postgres", port=5432, name="prefect_server", password="DB-SECRET"),
        flows_source=FLOWS_SOURCE, kubeconfig=kubeconfig)))
    (runner,) = [c for c in monitor.of_type("docker:index/container:Container")
                 if service_of(c) == "flows-runner"]
    uploads = {u["file"]: u for u in runner.plain["uploads"]}
    assert uploads[KUBECONFIG_PATH]["content"] == kubeconfig
    assert is_secret(runner.inputs["uploads"])  # the engine sees the kubeconfig only as a secret
    assert FlowsConfig.model_validate_json(uploads["/etc/coderz/flows.json"]["content"]).kubernetes.kubeconfig_file \
        == KUBECONFIG_PATH
    assert plaintext_leaks(monitor.registrations, {"SECRET-KEY-DATA", "DB-SECRET"}) == []
