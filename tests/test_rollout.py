"""How a deploy replaces containers, under mocks, over every stack file.

Mocks never see resource options (`delete_before_replace`, `aliases`), so `recorded_options`
wraps `docker.Container` and keeps the options our code hands it.
"""

from __future__ import annotations

import re

import pulumi
import pulumi_docker as docker
import pytest
from pydantic import ValidationError

from components.container import STOP_GRACE_S, ContainerService, ContainerServiceArgs, Placement, VolumeMount
from components.gateway.acme import acme_spec
from components.gateway.render import GatewayRender
from infra.catalog import declare_services
from infra.config import STACKS, stack_file_config
from tests.conftest import make_spec, run
from tests.mocks import deploy_stack, is_secret, service_of

STATEFUL = {"postgres", "redis", "prometheus", "alertmanager", "loki", "promtail", "elasticsearch", "filebeat",
            "gateway-acme", "k3s", "flows-runner", "backup"}


def container_specs(stack: str) -> dict:
    """The declarations of the containers a stack runs: its catalog's, less k3s where it is
    installed on the host, plus the gateway's ACME sidecar where the stack has one."""
    config = stack_file_config(stack)
    catalog = declare_services(config)
    specs = {s.name: s for s in catalog.services if not (s.name == "k3s" and config.target.kind == "ssh")}
    if config.gateway.domain:
        sidecar = acme_spec(catalog.get("gateway"))
        specs[sidecar.name] = sidecar
    return specs


@pytest.fixture
def recorded_options(monkeypatch) -> dict[str, pulumi.ResourceOptions]:
    """Resource name -> the options every `docker.Container` is created with."""
    options: dict[str, pulumi.ResourceOptions] = {}

    class Recording(docker.Container):
        def __init__(self, resource_name, *args, opts=None, **kwargs):
            options[resource_name] = opts
            super().__init__(resource_name, *args, opts=opts, **kwargs)

    monkeypatch.setattr(docker, "Container", Recording)
    return options


def by_service(monitor):
    found: dict[str, list] = {}
    for container in monitor.of_type("docker:index/container:Container"):
        found.setdefault(service_of(container), []).append(container)
    return found


@pytest.mark.parametrize("stack", STACKS)
def test_stateless_containers_roll_and_stateful_ones_are_stopped_first(stack, recorded_options):
    monitor, _ = deploy_stack(stack)
    specs = container_specs(stack)
    prefix = f"coderz-{stack}"
    containers = by_service(monitor)
    assert set(containers) == set(specs)
    assert {name for name, s in specs.items() if s.stateful} == STATEFUL & set(containers)
    assert not specs["gateway"].rolling and specs["python-api"].rolling
    for service, replicas in containers.items():
        spec = specs[service]
        assert len(replicas) == spec.replicas
        for container in replicas:
            options = recorded_options[container.name]
            name = container.plain["name"]
            assert container.plain["destroyGraceSeconds"] == STOP_GRACE_S, name  # SIGTERM, not SIGKILL
            if spec.rolling:
                assert options.delete_before_replace is False, name
                index = int(container.name.rsplit("-", 1)[1])
                assert re.fullmatch(rf"{prefix}-{service}-{index}-[0-9a-f]{{12}}", name), name
                assert container.plain["hostname"] == f"{prefix}-{service}-{index}"
                assert not any(v.get("volumeName") for v in container.plain.get("volumes") or []), name
            else:
                assert options.delete_before_replace is True, name
                assert name == f"{prefix}-{service}", name
    # names are unique over the stack, and none is kept from a container that holds state
    names = [c.plain["name"] for group in containers.values() for c in group]
    assert len(names) == len(set(names))
    if stack == "prod":  # loopback-published Kibana cannot roll: the new one could not bind the port
        assert not specs["kibana"].rolling and specs["logstash"].rolling


def test_scaling_1_3_2_keeps_the_names_of_the_untouched_replicas(recorded_options):
    def python_replicas(count: int) -> dict[str, str]:
        monitor, _ = deploy_stack("dev", **{"coderz:apis": {"python": {"replicas": count}}})
        return {c.name: c.plain["name"] for c in by_service(monitor)["python-api"]}

    one, three, two = python_replicas(1), python_replicas(3), python_replicas(2)
    assert set(one) == {"python-api-1"} and set(three) == {f"python-api-{i}" for i in (1, 2, 3)}
    assert set(two) == {"python-api-1", "python-api-2"}
    assert one["python-api-1"] == three["python-api-1"] == two["python-api-1"]
    assert three["python-api-2"] == two["python-api-2"]
    assert len(set(three.values())) == 3
    # replica 1 was `python-api` while one replica had no index: an alias keeps it in place
    (alias,) = recorded_options["python-api-1"].aliases
    assert alias.name == "python-api"


def placement(provider) -> Placement:
    return Placement(prefix="coderz-test", network_name="coderz-test-net", provider=provider)


def test_a_replica_name_follows_every_input_and_nothing_else(monitor, provider):
    def name_of(component: str, **changes) -> str:
        fields = dict(spec=make_spec(), placement=placement(provider), envs=["A=1"])
        fields.update(changes)
        run(lambda: ContainerService(component, ContainerServiceArgs(**fields)))
        return monitor.of_type("docker:index/container:Container")[-1].plain["name"]

    base = name_of("a")
    assert name_of("b") == base  # same inputs, same name: no replacement
    changed = {
        "env": name_of("c", envs=["A=2"]),
        "image": name_of("d", spec=make_spec(image="nginx:1.27.3-alpine")),
        "memory (updatable in place)": name_of("e", spec=make_spec(limits={"memory_mb": 128, "cpus": 0.25})),
        "health check": name_of("f", spec=make_spec(health={"test": ("CMD", "false")})),
        "secret rotated": name_of("g", envs=[pulumi.Output.secret("PASSWORD=new")]),
    }
    for what, name in changed.items():
        assert name != base, what
    assert len(set(changed.values())) == len(changed)
    # the digest of a secret is not a secret, and the secret is not in the name
    rotated = [c for c in monitor.of_type("docker:index/container:Container") if c.name == "g-1"][0]
    assert not is_secret(rotated.inputs["name"]) and "new" not in rotated.plain["name"]


def test_what_cannot_roll_is_refused():
    with pytest.raises(ValidationError, match="runs one replica"):
        make_spec("db", stateful=True, replicas=2)
    with pytest.raises(ValidationError, match="runs one replica"):
        make_spec("ui", host_port=5230, replicas=2)


def test_a_stateless_service_may_not_share_a_named_volume(provider):
    with pytest.raises(ValidationError, match="declare it stateful"):
        ContainerServiceArgs(spec=make_spec(), placement=placement(provider),
                             volumes=[VolumeMount(container_path="/data", volume_name="shared")])
    ContainerServiceArgs(spec=make_spec(), placement=placement(provider),  # read-only host mounts are fine
                         volumes=[VolumeMount(container_path="/host/proc", host_path="/proc", read_only=True)])


@pytest.mark.parametrize("stack", STACKS)
def test_the_gateway_sees_a_new_replica_before_the_old_one_goes(stack):
    """The engine removes a replaced replica only once its successor is healthy, which takes
    at least one health interval; the gateway's DNS answers live `dns_ttl_s`. An interval
    longer than that TTL means the gateway already balances onto the new replica."""
    ttl = GatewayRender(routes=()).dns_ttl_s
    for service in declare_services(stack_file_config(stack)).routed:
        if service.rolling:
            assert service.health.interval_s > ttl, service.name


@pytest.mark.parametrize("stack", STACKS)
def test_a_config_only_gateway_change_leaves_the_gateway_container_as_it_is(stack):
    """Over the whole stack file: new rate limits, domain and (where TLS is on) certificate
    change what the `gateway-config` command installs, and no input of the gateway container
    (every input but restart/memory/cpu shares forces a replacement: tests/test_gateway_component.py)."""
    gateway = stack_file_config(stack).gateway.model_dump(by_alias=True, exclude_none=True, mode="json")
    changed = {**gateway, "rateLimitRps": gateway["rateLimitRps"] + 1}
    if "domain" in gateway:  # a new name for a stack that has one (adding the first brings the ACME mounts)
        changed["domain"] = f"new.{stack}.coderz.example"
    if "tls" in changed:
        changed["tls"] = {"certificate": "-----BEGIN CERTIFICATE-----\nRENEWED\n-----END CERTIFICATE-----"}

    def gateway_parts(**overrides):
        monitor, _ = deploy_stack(stack, **overrides)
        (container,) = by_service(monitor)["gateway"]
        (command,) = [c for c in monitor.registrations if c.name == "gateway-config"]
        return container.plain, command.plain

    before_container, before_command = gateway_parts()
    after_container, after_command = gateway_parts(**{"coderz:gateway": changed})
    assert after_container == before_container
    assert after_command["stdin"] != before_command["stdin"]
    assert after_command["triggers"][0] != before_command["triggers"][0]
