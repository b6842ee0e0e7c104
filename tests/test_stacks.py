"""Each whole stack file (dev, qa, prod) run under mocks, resource by resource."""

from __future__ import annotations

import functools

import pulumi
import pytest

from infra.config import STACKS
from tests.mocks import deploy_stack, generated_secrets, is_secret, plaintext_leaks, service_of


@functools.cache
def deployed(stack: str):
    return deploy_stack(stack)


def containers(stack: str):
    monitor, _ = deployed(stack)
    return monitor.of_type("docker:index/container:Container")


@pytest.mark.parametrize("stack", STACKS)
def test_every_container_is_healthchecked_limited_restarted_and_pinned(stack):
    monitor, _ = deployed(stack)
    images = {r.plain["imageId"] if "imageId" in r.plain else None for r in monitor.of_type("RemoteImage")}
    assert containers(stack)
    for container in containers(stack):
        spec = container.plain
        assert spec["healthcheck"]["tests"][0] in ("CMD", "CMD-SHELL"), container.name
        assert spec["restart"] == "unless-stopped", container.name
        assert spec["memory"] > 0 and float(spec["cpus"]) > 0, container.name
        assert spec["image"].startswith("sha256:"), f"{container.name} must use RemoteImage.image_id"
        assert spec["name"].startswith(f"coderz-{stack}-"), container.name
        assert spec["logOpts"]["max-size"], container.name
    for image in monitor.of_type("RemoteImage"):
        name = image.plain["name"]
        assert not name.endswith(":latest") and (":" in name.rsplit("/", 1)[-1] or "@sha256:" in name), name
    del images


@pytest.mark.parametrize("stack", STACKS)
def test_only_the_gateway_is_public_everything_else_is_loopback_or_private(stack):
    for container in containers(stack):
        for port in container.plain.get("ports") or []:
            if container.plain["name"] == f"coderz-{stack}-gateway":
                assert port.get("ip", "0.0.0.0") == "0.0.0.0"
            else:
                assert port["ip"] == "127.0.0.1", f"{container.name} publishes {port} beyond loopback"


@pytest.mark.parametrize("stack", STACKS)
def test_secrets_never_appear_in_plain_text(stack):
    monitor, _ = deployed(stack)
    assert plaintext_leaks(monitor.registrations, generated_secrets(monitor)) == []


@pytest.mark.parametrize("stack", STACKS)
def test_one_explicit_docker_provider_for_every_docker_resource(stack):
    monitor, _ = deployed(stack)
    (provider,) = monitor.of_type("pulumi:providers:docker")
    for resource in monitor.registrations:
        if resource.type.startswith("docker:"):
            assert resource.provider.startswith(provider.urn + "::"), resource.name


@pytest.mark.parametrize("stack", STACKS)
def test_every_resource_lives_inside_a_component(stack):
    monitor, _ = deployed(stack)
    for resource in monitor.registrations:
        if not resource.type.startswith("coderz:"):
            assert "::coderz:" in resource.parent, f"{resource.type} {resource.name} has no component parent"


@pytest.mark.parametrize("stack,kept", [("dev", False), ("qa", False), ("prod", True)])
def test_data_volumes_survive_destroy_in_prod_only(stack, kept):
    monitor, _ = deployed(stack)
    # *-data volumes hold what the platform stores; shippers' *-state (read positions) may go.
    volumes = [v for v in monitor.of_type("docker:index/volume:Volume") if v.plain["name"].endswith("-data")]
    assert {f"coderz-{stack}-postgres-data", f"coderz-{stack}-redis-data", f"coderz-{stack}-prometheus-data"} <= {
        v.plain["name"] for v in volumes}
    for volume in volumes:
        assert volume.retain_on_delete is kept and volume.protect is kept, volume.name


def test_no_container_volume_or_network_name_is_shared_between_stacks():
    seen: dict[str, str] = {}
    for stack in STACKS:
        monitor, _ = deployed(stack)
        for resource in monitor.registrations:
            if resource.type in ("docker:index/container:Container", "docker:index/volume:Volume", "docker:index/network:Network"):
                name = resource.plain["name"]
                assert name not in seen, f"{name} is in both {seen.get(name)} and {stack}"
                seen[name] = stack


def test_loopback_port_blocks_of_the_stacks_do_not_overlap():
    published = {}
    for stack in STACKS:
        ports = set()
        for container in containers(stack):
            for port in container.plain.get("ports") or []:
                if port.get("ip") == "127.0.0.1":
                    ports.add(port["external"])
        published[stack] = ports
    assert published["dev"] and published["qa"] and published["prod"]
    assert not published["dev"] & published["qa"]
    assert not published["qa"] & published["prod"]
    assert not published["dev"] & published["prod"]


def test_ssh_stacks_bootstrap_docker_and_the_firewall_with_only_published_ports():
    monitor, outputs = deployed("prod")
    commands = {r.name: r.plain for r in monitor.of_type("command:remote:Command")}
    assert set(commands) == {"host-install-docker", "host-firewall", "postgres-apply-roles", "gateway-config", "k3s-install"}
    firewall = commands["host-firewall"]["create"]
    assert "ufw default deny incoming" in firewall
    rules = [part.split(";")[0].strip() for part in firewall.split("ufw allow ")[1:]]
    allowed = {int(rule.split("/")[0]) for rule in rules if not rule.startswith("proto")}
    assert allowed == {22, 80, 443}
    # k3s on the host: its API and NodePorts only from Docker's bridges, never from the world
    assert {rule for rule in rules if rule.startswith("proto")} == {
        f"proto tcp from 172.16.0.0/12 to any port {port}" for port in (6443, 30080, 30081)}
    assert commands["host-firewall"]["triggers"], "re-run only when the rules change"
    (provider,) = monitor.of_type("pulumi:providers:docker")
    assert provider.plain["host"] == "ssh://deploy@prod.coderz.example:22"
    assert "ControlMaster=auto" in provider.plain["sshOpts"]
    assert outputs["docker_host"] == "ssh://deploy@prod.coderz.example:22"


@pytest.mark.parametrize("stack,kind", [("dev", "local"), ("qa", "remote"), ("prod", "remote")])
def test_roles_and_databases_are_brought_up_to_date_on_an_existing_volume(stack, kind):
    monitor, _ = deployed(stack)
    (apply,) = [r for r in monitor.of_type(f"command:{kind}:Command") if r.name == "postgres-apply-roles"]
    assert apply.plain["create"] == (
        f"docker exec coderz-{stack}-postgres psql -v ON_ERROR_STOP=1 --no-psqlrc -U postgres -d postgres "
        "-f /docker-entrypoint-initdb.d/10-apps.sql"
    )
    # re-run when the script changes; the trigger is a digest of secret text, kept secret
    assert is_secret(apply.inputs["triggers"]) and len(apply.plain["triggers"][0]) == 64
    (container,) = [c for c in containers(stack) if c.plain["name"] == f"coderz-{stack}-postgres"]
    assert container.urn in apply.dependencies, "runs once the container is healthy"
    if kind == "local":
        assert apply.plain["environment"] == {"DOCKER_HOST": "unix:///var/run/docker.sock"}
    else:
        assert apply.plain["connection"]["host"] == f"{stack}.coderz.example"


def test_dev_uses_the_local_engine_without_bootstrap():
    monitor, _ = deployed("dev")
    assert not monitor.of_type("command:remote:Command")
    (provider,) = monitor.of_type("pulumi:providers:docker")
    assert provider.plain["host"] == "unix:///var/run/docker.sock"


@pytest.mark.parametrize("stack,replicas", [("dev", 1), ("qa", 2), ("prod", 3)])
def test_api_replicas_follow_the_stack(stack, replicas):
    names = [c.plain["name"] for c in containers(stack)]
    assert sum(n.startswith(f"coderz-{stack}-python-api") for n in names) == replicas
    assert sum(n.startswith(f"coderz-{stack}-dotnet-api") for n in names) == replicas


def test_each_api_gets_its_own_database_role_and_url():
    monitor, _ = deployed("qa")
    init = [c for c in containers("qa") if c.plain["name"] == "coderz-qa-postgres"][0]
    uploads = init.inputs["uploads"]["value"] if "value" in init.inputs["uploads"] else init.inputs["uploads"]
    (upload,) = [u for u in uploads if u["file"].endswith("10-apps.sql")]
    sql = upload["content"]
    assert "python_api" in str(sql) and "dotnet_api" in str(sql)
    python_api = [c for c in containers("qa") if c.plain["name"].startswith("coderz-qa-python-api-1-")][0]
    env = "\n".join(python_api.plain["envs"])
    assert "DATABASE_URL=postgresql://python_api:" in env and "@postgres:5432/python_api" in env
    assert "REDIS_URL=redis://:" in env


def test_every_export_that_carries_a_secret_is_itself_secret():
    from infra.config import load_current
    from infra.platform import build
    from tests.mocks import engine_config, install_mocks, secrets_for

    raw, secret_keys = engine_config("prod", secrets=secrets_for("prod"))
    monitor = install_mocks("prod", raw, secret_keys)
    checked = {}

    @pulumi.runtime.test
    def exports():
        outputs = build(load_current())

        def check(pairs):
            secrets = generated_secrets(monitor)
            for name, (value, secret) in zip(outputs, pairs):
                checked[name] = secret
                if any(s in repr(value) for s in secrets):
                    assert secret, f"export {name} carries a secret in plain text"
        return pulumi.Output.all(*[
            pulumi.Output.all(pulumi.Output.from_input(v), pulumi.Output.from_input(v).is_secret()) for v in outputs.values()
        ]).apply(check)

    exports()
    assert checked["postgres_admin_dsn"] and checked["redis_url"] and checked["grafana_admin_password"] and checked["postgres_monitor_password"]
    assert not checked["gateway_url"]


@pytest.mark.parametrize("loki,elk", [(False, False), (True, False), (False, True), (True, True)])
def test_turning_a_log_pipeline_off_leaves_no_container_target_or_datasource(loki, elk):
    monitor, _ = deploy_stack("prod", **{"coderz:logging": {"loki": {"enabled": loki}, "elk": {"enabled": elk}}})
    names = {service_of(c) for c in monitor.of_type("docker:index/container:Container")}
    loki_services, elk_services = {"loki", "promtail"}, {"elasticsearch", "logstash", "kibana", "filebeat"}
    assert names & loki_services == (loki_services if loki else set())
    assert names & elk_services == (elk_services if elk else set())

    def uploaded(container: str, path_end: str) -> str:
        (c,) = [c for c in monitor.of_type("docker:index/container:Container") if service_of(c) == container]
        (text,) = [u["content"] for u in c.plain["uploads"] if u["file"].endswith(path_end)]
        return text

    prometheus = uploaded("prometheus", "prometheus.yml")
    assert ("job_name: loki" in prometheus) is loki and ("job_name: promtail" in prometheus) is loki
    datasources = uploaded("grafana", "datasources/coderz.yml")
    assert ("uid: loki" in datasources) is loki and ("uid: elasticsearch" in datasources) is elk
    volumes = {v.plain["name"] for v in monitor.of_type("docker:index/volume:Volume")}
    assert ("coderz-prod-loki-data" in volumes) is loki and ("coderz-prod-elasticsearch-data" in volumes) is elk
