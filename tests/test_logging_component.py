"""`Logging` under Pulumi mocks (local to this file): toggles, mounts, ports, volumes, images.

Each test builds one `Logging` component with its own mocks and a monitor that records every
registration with its options (protect, retainOnDelete, provider, parent).
"""

from __future__ import annotations

import itertools
import re

import pulumi
import pulumi_docker as docker
import pytest
import yaml
from pulumi.runtime import rpc
from pulumi.runtime.mocks import MockMonitor
from pydantic import ValidationError

from components.container import Placement
from components.logging import ELK_SERVICES, LOKI_SERVICES, Logging, LoggingArgs
from components.spec import PINNED_TAG, Catalog
from infra.config import StackConfig
from infra.services_logging import elasticsearch_url, logging_services, loki_url

PREFIX = "coderz-qa"
KIBANA_LOOPBACK = 5100 + 56


class LoggingMocks(pulumi.runtime.Mocks):
    """Echo inputs back as state; RemoteImage gets the image_id the containers read."""

    def new_resource(self, args: pulumi.runtime.MockResourceArgs):
        state = dict(args.inputs)
        if args.typ == "docker:index/remoteImage:RemoteImage":
            state["imageId"] = f"sha256:{abs(hash(args.inputs.get('name'))):064x}"[:71]
        return [f"{args.name}-id", state]

    def call(self, args: pulumi.runtime.MockCallArgs):
        return {}


class Recorder(MockMonitor):
    """Records type, name, options and inputs of every registration, and component outputs."""

    def __init__(self, mocks):
        super().__init__(mocks)
        self.registered: list[dict] = []
        self.outputs: dict[str, dict] = {}

    def RegisterResource(self, request):
        self.registered.append({
            "type": request.type,
            "name": request.name,
            "protect": request.protect,
            "retain_on_delete": request.retainOnDelete,
            "provider": request.provider,
            "parent": request.parent,
            "custom": request.custom,
            "inputs": rpc.deserialize_properties(request.object),
        })
        return super().RegisterResource(request)

    def RegisterResourceOutputs(self, request):
        self.outputs[request.urn] = rpc.deserialize_properties(request.outputs)
        return super().RegisterResourceOutputs(request)

    def of_type(self, token: str) -> list[dict]:
        return [r for r in self.registered if r["type"] == token]

    def containers(self) -> dict[str, dict]:
        """Containers by their `coderz.service` label."""
        found = {}
        for r in self.of_type("docker:index/container:Container"):
            labels = {label["label"]: label["value"] for label in r["inputs"]["labels"]}
            found[labels["coderz.service"]] = r
        return found


@pytest.fixture
def recorder() -> Recorder:
    """Fresh mocks and a recording monitor for one test."""
    monitor = Recorder(LoggingMocks())
    pulumi.runtime.set_mocks(LoggingMocks(), project="coderz", stack="qa", preview=False, monitor=monitor)
    return monitor


def stack_config(loki: bool = True, elk: bool = True, publish_kibana: bool = True, protect_data: bool | None = None,
                 environment: str = "qa") -> StackConfig:
    return StackConfig.model_validate({
        "environment": environment,
        "target": {"kind": "local"},
        "ports": {"base": 5100},
        "protectData": protect_data,
        "logging": {"loki": {"enabled": loki, "retentionDays": 10},
                    "elk": {"enabled": elk, "retentionDays": 5, "heapMb": 768, "publishKibana": publish_kibana}},
    })


def build(config: StackConfig) -> Logging:
    provider = docker.Provider("test-docker", host="unix:///var/run/docker.sock")
    return Logging(
        "logging",
        LoggingArgs(
            catalog=Catalog(services=tuple(logging_services(config))),
            config=config.logging,
            placement=Placement(prefix=PREFIX, network_name="coderz-qa-net", provider=provider),
            keeps_data=config.keeps_data,
        ),
    )


def settled(component: Logging) -> pulumi.Output:
    """Resolves once every container and volume of the component has been registered."""
    ids = [c.id for s in component.services.values() for c in s.containers]
    ids += [v.id for v in component.volumes.values()]
    return pulumi.Output.all(component.container_names, *ids)


TOGGLES = list(itertools.product([True, False], repeat=2))


@pytest.mark.parametrize(("loki", "elk"), TOGGLES, ids=[f"loki={a}-elk={b}" for a, b in TOGGLES])
def test_toggles_leave_nothing_behind(recorder, loki, elk):
    expected = set(LOKI_SERVICES * loki) | set(ELK_SERVICES * elk)

    @pulumi.runtime.test
    def program():
        component = build(stack_config(loki=loki, elk=elk))

        def check(_):
            assert set(recorder.containers()) == expected
            assert len(recorder.of_type("docker:index/container:Container")) == len(expected)
            assert len(recorder.of_type("docker:index/remoteImage:RemoteImage")) == len(expected)
            volumes = {r["inputs"]["name"] for r in recorder.of_type("docker:index/volume:Volume")}
            assert volumes == ({f"{PREFIX}-loki-data", f"{PREFIX}-promtail-state"} if loki else set()) | (
                {f"{PREFIX}-elasticsearch-data", f"{PREFIX}-filebeat-state"} if elk else set())
            assert component.loki_enabled is loki and component.elasticsearch_enabled is elk
            assert component.loki_url == ("http://loki:3100" if loki else None)
            assert component.elasticsearch_url == ("http://elasticsearch:9200" if elk else None)
            assert component.kibana_url == (f"http://127.0.0.1:{KIBANA_LOOPBACK}" if elk else None)
            # The pure functions the Grafana side can call give the same answers.
            logging = stack_config(loki=loki, elk=elk).logging
            assert (loki_url(logging), elasticsearch_url(logging)) == (component.loki_url, component.elasticsearch_url)

        return settled(component).apply(check)

    program()
    # register_outputs reaches the engine once its values resolve: look after the run.
    (outputs,) = [o for urn, o in recorder.outputs.items() if urn.endswith("coderz:logging:Logging::logging")]
    assert outputs["loki_enabled"] is loki and outputs["elasticsearch_enabled"] is elk
    assert outputs.get("loki_url") == ("http://loki:3100" if loki else None)
    assert outputs.get("elasticsearch_url") == ("http://elasticsearch:9200" if elk else None)
    assert outputs.get("kibana_url") == (f"http://127.0.0.1:{KIBANA_LOOPBACK}" if elk else None)
    # logstash rolls: its name carries a replica index and a digest (tests/test_rollout.py)
    assert sorted(re.sub(r"-1-[0-9a-f]{12}$", "", n) for n in outputs["container_names"]) == sorted(
        f"{PREFIX}-{s}" for s in expected)


def test_host_mounts_are_read_only_and_data_lives_on_volumes(recorder):
    @pulumi.runtime.test
    def program():
        component = build(stack_config())

        def check(_):
            containers = recorder.containers()
            host_mounts = {}
            for service, container in containers.items():
                for volume in container["inputs"].get("volumes", []):
                    if volume.get("hostPath"):
                        assert volume.get("readOnly") is True, (service, volume)
                        host_mounts.setdefault(service, set()).add(volume["hostPath"])
            assert host_mounts == {
                "promtail": {"/var/run/docker.sock"},
                "filebeat": {"/var/run/docker.sock", "/var/lib/docker/containers"},
            }
            named = {s: {v["containerPath"]: v["volumeName"] for v in c["inputs"].get("volumes", []) if v.get("volumeName")}
                     for s, c in containers.items()}
            assert named["loki"] == {"/loki": f"{PREFIX}-loki-data"}
            assert named["elasticsearch"] == {"/usr/share/elasticsearch/data": f"{PREFIX}-elasticsearch-data"}
            assert containers["filebeat"]["inputs"]["user"] == "root"

        return settled(component).apply(check)

    program()


@pytest.mark.parametrize("publish", [True, False])
def test_only_kibana_is_published_and_only_on_loopback(recorder, publish):
    @pulumi.runtime.test
    def program():
        component = build(stack_config(publish_kibana=publish))

        def check(_):
            published = {s: c["inputs"].get("ports", []) for s, c in recorder.containers().items()
                         if c["inputs"].get("ports")}
            if publish:
                assert list(published) == ["kibana"]
                (port,) = published["kibana"]
                assert (port["ip"], port["external"], port["internal"]) == ("127.0.0.1", KIBANA_LOOPBACK, 5601)
                assert component.kibana_url == f"http://127.0.0.1:{KIBANA_LOOPBACK}"
            else:
                assert published == {} and component.kibana_url is None

        return settled(component).apply(check)

    program()


@pytest.mark.parametrize("keeps", [True, False])
def test_data_volumes_are_retained_and_protected_when_the_stack_keeps_data(recorder, keeps):
    @pulumi.runtime.test
    def program():
        component = build(stack_config(protect_data=keeps))

        def check(_):
            options = {r["inputs"]["name"]: (r["protect"], r["retain_on_delete"])
                       for r in recorder.of_type("docker:index/volume:Volume")}
            assert options[f"{PREFIX}-loki-data"] == (keeps, keeps)
            assert options[f"{PREFIX}-elasticsearch-data"] == (keeps, keeps)
            # Agent positions/registries are state, not data: always disposable.
            assert options[f"{PREFIX}-promtail-state"] == (False, False)
            assert options[f"{PREFIX}-filebeat-state"] == (False, False)
            containers = recorder.of_type("docker:index/container:Container")
            assert not any(r["protect"] for r in containers)

        return settled(component).apply(check)

    program()


def test_prod_keeps_data_by_default(recorder):
    @pulumi.runtime.test
    def program():
        component = build(stack_config(environment="prod"))

        def check(_):
            volumes = {r["inputs"]["name"]: r for r in recorder.of_type("docker:index/volume:Volume")}
            assert volumes["coderz-qa-loki-data"]["protect"] and volumes["coderz-qa-loki-data"]["retain_on_delete"]

        return settled(component).apply(check)

    program()


def test_images_pinned_health_checks_and_limits_everywhere(recorder):
    @pulumi.runtime.test
    def program():
        component = build(stack_config())

        def check(_):
            images = [r["inputs"]["name"] for r in recorder.of_type("docker:index/remoteImage:RemoteImage")]
            assert len(images) == 6
            for image in images:
                assert PINNED_TAG.match(image) and not image.endswith(":latest"), image
            assert len({i.rsplit(":", 1)[1] for i in images if i.startswith("docker.elastic.co/")}) == 1
            for service, container in recorder.containers().items():
                inputs = container["inputs"]
                assert inputs["healthcheck"]["tests"][0] in ("CMD", "CMD-SHELL"), service
                assert inputs["memory"] > 0 and float(inputs["cpus"]) > 0, service
                assert inputs["restart"] == "unless-stopped"
            es = recorder.containers()["elasticsearch"]["inputs"]
            assert "ES_JAVA_OPTS=-Xms768m -Xmx768m" in es["envs"]
            assert es["memory"] == 2 * 768
            assert "discovery.type=single-node" in es["envs"] and "xpack.security.enabled=false" in es["envs"]
            loki = recorder.containers()["loki"]["inputs"]["healthcheck"]["tests"]
            assert loki[-1] == "http://127.0.0.1:3100/ready"

        return settled(component).apply(check)

    program()


def test_every_child_has_the_provider_and_the_component_as_ancestor(recorder):
    @pulumi.runtime.test
    def program():
        component = build(stack_config())

        def check(_):
            docker_resources = [r for r in recorder.registered if r["type"].startswith("docker:index/")]
            assert docker_resources
            for r in docker_resources:
                assert "test-docker" in r["provider"], (r["type"], r["name"])
                assert r["name"].startswith("logging-"), r["name"]
                assert "coderz:logging:Logging" in r["parent"], (r["type"], r["name"])
            (logging,) = recorder.of_type("coderz:logging:Logging")
            assert logging["name"] == "logging"
            services = recorder.of_type("coderz:runtime:ContainerService")
            assert {s["name"] for s in services} == {f"logging-{n}" for n in (*LOKI_SERVICES, *ELK_SERVICES)}
            assert all(s["parent"].endswith("coderz:logging:Logging::logging") for s in services)

        return settled(component).apply(check)

    program()


def test_config_files_are_uploaded_from_the_config(recorder):
    @pulumi.runtime.test
    def program():
        component = build(stack_config())

        def check(_):
            containers = recorder.containers()
            uploads = {s: {u["file"]: u for u in c["inputs"].get("uploads", [])} for s, c in containers.items()}
            loki = yaml.safe_load(uploads["loki"]["/etc/loki/local-config.yaml"]["content"])
            assert loki["limits_config"]["retention_period"] == "240h"
            promtail = yaml.safe_load(uploads["promtail"]["/etc/promtail/config.yml"]["content"])
            assert promtail["clients"] == [{"url": "http://loki:3100/loki/api/v1/push"}]
            assert set(uploads["logstash"]) == {
                "/usr/share/logstash/pipeline/logstash.conf", "/usr/share/logstash/setup/es-setup.sh",
                "/usr/share/logstash/setup/ilm-policy.json", "/usr/share/logstash/setup/index-template.json",
            }
            assert '"min_age": "5d"' in uploads["logstash"]["/usr/share/logstash/setup/ilm-policy.json"]["content"]
            assert uploads["logstash"]["/usr/share/logstash/setup/es-setup.sh"]["executable"] is True
            command = containers["logstash"]["inputs"]["command"]
            assert command[:2] == ["bash", "-c"] and command[2].endswith("&& exec logstash")
            assert "ES_URL=http://elasticsearch:9200" in containers["logstash"]["inputs"]["envs"]
            filebeat = yaml.safe_load(uploads["filebeat"]["/usr/share/filebeat/filebeat.yml"]["content"])
            (provider,) = filebeat["filebeat.autodiscover"]["providers"]
            assert provider["templates"][0]["condition"]["equals"]["docker.container.name"] == f"{PREFIX}-gateway"
            kibana_env = containers["kibana"]["inputs"]["envs"]
            assert 'ELASTICSEARCH_HOSTS=["http://elasticsearch:9200"]' in kibana_env

        return settled(component).apply(check)

    program()


def test_args_refuse_a_catalog_that_disagrees_with_the_toggles(recorder):
    provider = docker.Provider("test-docker", host="unix:///var/run/docker.sock")
    on, off = stack_config(loki=True, elk=False), stack_config(loki=False, elk=True)
    shared = dict(placement=Placement(prefix=PREFIX, network_name="net", provider=provider))
    with pytest.raises(ValidationError, match="lacks loki"):
        LoggingArgs(catalog=Catalog(services=tuple(logging_services(off))), config=on.logging, **shared)
    with pytest.raises(ValidationError, match="declares elasticsearch"):
        LoggingArgs(catalog=Catalog(services=tuple(logging_services(off))), config=stack_config(loki=False, elk=False).logging,
                    **shared)
