"""Mock unit tests of the core components, one component per test."""

from __future__ import annotations

from pathlib import Path

import pulumi

from components.api import Api, ApiArgs, Database, RedisEndpoint
from components.container import (
    ConfigFile,
    ContainerService,
    ContainerServiceArgs,
    Placement,
    VolumeMount,
)
from components.host import DockerHost, DockerHostArgs, TargetConfig, firewall_script
from components.redis import Redis, RedisArgs, redis_command
from tests.conftest import make_spec, run
from tests.mocks import is_secret, plaintext_leaks


def service_args(provider, **changes) -> ContainerServiceArgs:
    placement = Placement(prefix="coderz-test", network_name="coderz-test-net", provider=provider)
    fields = dict(spec=make_spec(), placement=placement)
    fields.update(changes)
    return ContainerServiceArgs(**fields)


def test_container_service_makes_one_container_per_replica_with_the_rules(monitor, provider):
    run(lambda: ContainerService("web", service_args(provider, spec=make_spec(replicas=3))))
    containers = monitor.of_type("docker:index/container:Container")
    # a rolling service: replica index, then a digest of the container (tests/test_rollout.py)
    assert sorted(c.plain["name"].rsplit("-", 1)[0] for c in containers) == [
        "coderz-test-web-1", "coderz-test-web-2", "coderz-test-web-3"]
    (image,) = monitor.of_type("RemoteImage")
    assert image.plain["name"] == "nginx:1.27.2-alpine" and image.plain["keepLocally"] is True
    for container in containers:
        spec = container.plain
        assert spec["image"] == monitor.named("web-image").plain["name"] or spec["image"].startswith("sha256:")
        # the service name for the gateway's resolver; the stable replica name for per-replica probes
        stable = spec["hostname"]
        assert spec["networksAdvanced"] == [{"name": "coderz-test-net", "aliases": ["web", stable]}]
        labels = {label["label"]: label["value"] for label in spec["labels"]}
        assert labels["coderz.replica"] == stable and spec["name"].startswith(stable + "-")
        assert spec["healthcheck"]["tests"] == ["CMD", "true"]
        assert spec["memory"] == 64 and spec["cpus"] == "0.25"
        assert spec["restart"] == "unless-stopped" and spec["wait"] is True
        assert not spec.get("ports"), "a service without host_port publishes nothing"
        assert container.parent.endswith("coderz:runtime:ContainerService::web")
        assert container.provider.startswith(monitor.named("test-docker").urn)
        assert "memorySwap" in container.ignore_changes


def test_single_replica_keeps_the_plain_name_and_loopback_port(monitor, provider):
    run(lambda: ContainerService("db", service_args(provider, spec=make_spec("db", host_port=5132, route=None))))
    (container,) = monitor.of_type("docker:index/container:Container")
    assert container.plain["name"] == "coderz-test-db"
    assert container.plain["ports"] == [{"internal": 8080, "external": 5132, "ip": "127.0.0.1", "protocol": "tcp"}] or \
        container.plain["ports"] == [{"internal": 8080, "external": 5132, "ip": "127.0.0.1"}]


def test_uploaded_config_change_changes_the_container(monitor, provider):
    def digest_for(content: str) -> str:
        files = [ConfigFile(path="/etc/app.conf", content=content)]
        run(lambda: ContainerService(f"svc-{len(content)}", service_args(provider, files=files)))
        container = monitor.of_type("docker:index/container:Container")[-1]
        assert container.plain["uploads"] == [{"file": "/etc/app.conf", "content": content, "executable": False}]
        return {label["label"]: label["value"] for label in container.plain["labels"]}["coderz.config-digest"]

    assert digest_for("a = 1") != digest_for("a = 22")


def test_built_image_uses_the_context_and_secret_files_stay_secret(monitor, provider):
    files = [ConfigFile(path="/run/secret.conf", content=pulumi.Output.secret("password=hunter2"))]
    run(lambda: ContainerService("app", service_args(provider, files=files, build_context=Path("/src/app"),
                                                      spec=make_spec(stateful=True),
                                                      volumes=[VolumeMount(container_path="/data", volume_name="v")])))
    (image,) = monitor.of_type("RemoteImage")
    assert image.plain["build"]["context"] == "/src/app"
    (container,) = monitor.of_type("docker:index/container:Container")
    assert is_secret(container.inputs["uploads"]) or is_secret(container.inputs["uploads"][0]["content"])
    assert plaintext_leaks(monitor.registrations, {"hunter2"}) == []
    assert container.plain["volumes"] == [{"containerPath": "/data", "volumeName": "v", "readOnly": False}]


def test_local_host_has_a_provider_and_a_private_network_and_no_bootstrap(monitor):
    run(lambda: DockerHost("host", DockerHostArgs(target=TargetConfig(kind="local"), prefix="coderz-dev", public_ports=(8088,))))
    (provider,) = monitor.of_type("pulumi:providers:docker")
    assert provider.plain["host"] == "unix:///var/run/docker.sock"
    (network,) = monitor.of_type("docker:index/network:Network")
    assert network.plain["name"] == "coderz-dev-net" and network.plain["driver"] == "bridge"
    assert network.provider.startswith(provider.urn)
    assert not monitor.of_type("command:remote:Command") and not monitor.of_type("command:local:Command")


def test_ssh_host_bootstraps_over_one_shared_connection_with_a_secret_key(monitor):
    key = pulumi.Output.secret("PRIVATE-KEY-MATERIAL")
    target = TargetConfig(kind="ssh", host="qa.coderz.example", user="deploy", port=2222)
    run(lambda: DockerHost("host", DockerHostArgs(target=target, prefix="coderz-qa", public_ports=(80, 5132), ssh_private_key=key)))
    (provider,) = monitor.of_type("pulumi:providers:docker")
    assert provider.plain["host"] == "ssh://deploy@qa.coderz.example:2222"
    opts = provider.plain["sshOpts"]
    assert "ControlMaster=auto" in opts and "ControlPersist=10m" in opts and "~/.ssh/coderz-qa.key" in opts
    commands = {c.name: c for c in monitor.of_type("command:remote:Command")}
    assert set(commands) == {"host-install-docker", "host-firewall"}
    assert "command -v docker" in commands["host-install-docker"].plain["create"]
    assert commands["host-firewall"].plain["create"] == firewall_script(2222, (80, 5132))
    assert is_secret(commands["host-firewall"].inputs["connection"]) or is_secret(
        commands["host-firewall"].inputs["connection"]["privateKey"]
    )
    assert plaintext_leaks(monitor.registrations, {"PRIVATE-KEY-MATERIAL"}) == []
    assert set(provider.dependencies) >= {commands["host-firewall"].urn, commands["host-install-docker"].urn}


def test_firewall_opens_ssh_web_and_published_ports_only():
    script = firewall_script(22, (8088, 5232))
    assert script.index("ufw default deny incoming") < script.index("ufw --force enable")
    assert [p for p in script.split("; ") if p.startswith("sudo -n ufw allow")] == [
        "sudo -n ufw allow 22/tcp", "sudo -n ufw allow 80/tcp", "sudo -n ufw allow 443/tcp",
        "sudo -n ufw allow 5232/tcp", "sudo -n ufw allow 8088/tcp",
    ]


def test_redis_has_aof_password_from_env_and_a_retained_volume_when_asked(monitor, provider):
    spec = make_spec("redis", image="redis:7.2.5-alpine", port=6379, route=None, metrics=None, stateful=True)
    placement = Placement(prefix="coderz-prod", network_name="n", provider=provider)
    redis = run(lambda: Redis("redis", RedisArgs(spec=spec, placement=placement, keep_data=True)))
    (volume,) = monitor.of_type("docker:index/volume:Volume")
    assert volume.plain["name"] == "coderz-prod-redis-data" and volume.protect and volume.retain_on_delete
    (container,) = monitor.of_type("docker:index/container:Container")
    assert container.plain["command"] == redis_command(64)
    assert "--appendonly yes" in container.plain["command"][2] and '"$REDIS_PASSWORD"' in container.plain["command"][2]
    assert is_secret(container.inputs["envs"])
    assert plaintext_leaks(monitor.registrations, {"generated-redis-password"}) == []

    @pulumi.runtime.test
    def outputs_are_secret():
        def check(flags):
            assert flags == [True, True], "url and password must be secret outputs"
        return pulumi.Output.all(redis.url.is_secret(), redis.password.is_secret()).apply(check)

    outputs_are_secret()


def test_python_and_dotnet_apis_read_their_settings_their_own_way(monitor, provider):
    def api(flavour: str, name: str):
        return Api(
            name,
            ApiArgs(
                spec=make_spec(name, replicas=2), flavour=flavour, environment="qa",
                placement=Placement(prefix="coderz-qa", network_name="n", provider=provider),
                database=Database(host="postgres", port=5432, name=name.replace("-", "_"), password=pulumi.Output.secret("DBPW")),
                redis=RedisEndpoint(host="redis", port=6379, password=pulumi.Output.secret("REDISPW")),
            ),
        )

    run(lambda: (api("python", "python-api"), api("dotnet", "dotnet-api")))
    by_name = {c.plain["name"].rsplit("-", 1)[0]: c for c in monitor.of_type("docker:index/container:Container")}
    python_env = by_name["coderz-qa-python-api-1"].plain["envs"]
    assert "DATABASE_URL=postgresql://python_api:DBPW@postgres:5432/python_api" in python_env
    assert "REDIS_URL=redis://:REDISPW@redis:6379/0" in python_env
    dotnet_env = by_name["coderz-qa-dotnet-api-2"].plain["envs"]
    assert "ASPNETCORE_ENVIRONMENT=Staging" in dotnet_env
    assert any(e.startswith("ConnectionStrings__Default=Host=postgres;Port=5432;Database=dotnet_api;") for e in dotnet_env)
    assert plaintext_leaks(monitor.registrations, {"DBPW", "REDISPW"}) == []
    assert all(c.parent.split("::")[-2].endswith("coderz:runtime:ContainerService") for c in by_name.values())
