"""The Monitoring component under Pulumi mocks: what it registers, with which options, and that
its secrets stay secret."""

from __future__ import annotations

import pulumi
import pytest
import yaml
from pulumi.runtime import rpc

from components.container import Placement
from components.monitoring import (
    BackupCheck,
    KubernetesTargets,
    Monitoring,
    MonitoringArgs,
)
from components.monitoring.settings import SmtpConfig
from infra.catalog import declare_services
from infra.config import StackConfig
from tests.conftest import run
from tests.mocks import (
    PlatformMocks,
    RecordingMonitor,
    is_secret,
    plaintext_leaks,
    service_of,
    unwrap,
)
from tests.test_monitoring_render import full_catalog, stack_config

PREFIX = "coderz-test"
DSN = "postgresql://postgres:pg-secret-dsn@postgres:5432/postgres?sslmode=disable"
REDIS_PASSWORD = "redis-secret-password"
SMTP_PASSWORD = "smtp-secret-password"
K8S_TOKEN = "k8s-secret-token"
SMTP = SmtpConfig(host="smtp.example.org", user="alerts@example.org", from_address="alerts@example.org",
                  to=("ops@example.org",))
EXPORTERS = ("node-exporter", "cadvisor", "postgres-exporter", "redis-exporter")
SERVICES = (*EXPORTERS, "alertmanager", "prometheus", "grafana")


class OutputsMonitor(RecordingMonitor):
    """Also keeps what each component hands to `register_outputs`, secrets still marked."""

    def __init__(self, mocks):
        super().__init__(mocks)
        self.outputs: dict[str, dict] = {}

    def RegisterResourceOutputs(self, request):
        self.outputs[request.urn] = rpc.deserialize_properties(request.outputs, keep_unknowns=True)
        return super().RegisterResourceOutputs(request)


@pytest.fixture
def monitor() -> OutputsMonitor:
    """Overrides the shared fixture: mocks whose monitor records component outputs too."""
    mocks = PlatformMocks()
    recording = OutputsMonitor(mocks)
    pulumi.runtime.set_all_config({}, [])
    pulumi.runtime.set_mocks(mocks, project="coderz", stack="test", preview=False, monitor=recording)
    return recording


def build(provider, config: StackConfig, **changes) -> Monitoring:
    fields = dict(
        catalog=full_catalog(config), config=config.monitoring,
        placement=Placement(prefix=PREFIX, network_name=f"{PREFIX}-net", provider=provider),
        keeps_data=config.keeps_data, postgres_dsn=pulumi.Output.secret(DSN),
        redis_password=pulumi.Output.secret(REDIS_PASSWORD),
    )
    fields.update(changes)
    return Monitoring("monitoring", MonitoringArgs(**fields))


def strings(value) -> list[str]:
    if isinstance(value, dict):
        return [s for v in value.values() for s in strings(v)]
    if isinstance(value, list):
        return [s for v in value for s in strings(v)]
    return [value] if isinstance(value, str) else []


def in_secret(value, text: str) -> bool:
    """Whether `text` is found inside a secret marker somewhere in `value`."""
    if is_secret(value):
        return any(text in s for s in strings(unwrap(value)))
    if isinstance(value, dict):
        return any(in_secret(v, text) for v in value.values())
    if isinstance(value, list):
        return any(in_secret(v, text) for v in value)
    return False


def containers(monitor) -> dict[str, dict]:
    return {service_of(c): c for c in monitor.of_type("docker:index/container:Container")}


def test_every_service_runs_pinned_healthy_limited_and_unpublished(monitor, provider):
    config = stack_config()
    run(lambda: build(provider, config))
    catalog = full_catalog(config)
    (component,) = monitor.of_type("coderz:monitoring:Monitoring")
    running = containers(monitor)
    assert set(running) == set(SERVICES)
    images = {r.name.removeprefix("monitoring-").removesuffix("-image"): r.plain["name"]
              for r in monitor.of_type("RemoteImage")}
    for service, container in running.items():
        spec, inputs = catalog.get(service), container.plain
        assert images[service] == spec.image and ":" in spec.image and not spec.image.endswith(":latest")
        assert inputs["healthcheck"]["tests"] == list(spec.health.test)
        assert inputs["memory"] == spec.limits.memory_mb and float(inputs["cpus"]) == spec.limits.cpus
        assert not inputs.get("ports"), f"{service} is published"
        stable = [inputs["hostname"]] if spec.rolling else []
        assert inputs["networksAdvanced"] == [{"name": f"{PREFIX}-net", "aliases": [service, *stable]}]
    # One provider for every Docker resource; every child hangs under the component.
    docker_resources = [r for r in monitor.registrations if r.type.startswith("docker:")]
    assert docker_resources and all(r.provider.startswith(monitor.named("test-docker").urn) for r in docker_resources)
    direct = [r for r in monitor.registrations if r.parent == component.urn]
    assert {r.name for r in direct} >= {f"monitoring-{s}" for s in SERVICES} | {"monitoring-prometheus-data",
                                                                                  "monitoring-grafana-admin"}
    assert all(r.name.startswith("monitoring-") for r in direct)


def test_host_mounts_are_read_only_and_prometheus_keeps_its_settings(monitor, provider):
    run(lambda: build(provider, stack_config(scrapeIntervalS=15, retentionDays=30)))
    running = containers(monitor)
    for service in ("node-exporter", "cadvisor"):
        mounts = running[service].plain["volumes"]
        assert mounts and all(m["readOnly"] and m["hostPath"] for m in mounts), service
    assert {m["hostPath"] for m in running["node-exporter"].plain["volumes"]} == {"/proc", "/sys", "/"}
    assert running["node-exporter"].plain["pidMode"] == "host"
    assert all("pidMode" not in c.plain for name, c in running.items() if name != "node-exporter")
    assert "/var/lib/docker" in {m["hostPath"] for m in running["cadvisor"].plain["volumes"]}
    prometheus = running["prometheus"].plain
    assert "--storage.tsdb.retention.time=30d" in prometheus["command"]
    assert prometheus["volumes"] == [{"containerPath": "/prometheus", "volumeName": f"{PREFIX}-prometheus-data",
                                      "readOnly": False}]
    uploads = {u["file"]: u["content"] for u in prometheus["uploads"]}
    config = yaml.safe_load(uploads["/etc/prometheus/prometheus.yml"])
    assert config["global"]["scrape_interval"] == "15s"
    assert {job["job_name"] for job in config["scrape_configs"]} >= {"gateway", "python-api", *EXPORTERS}
    assert not {"kubernetes-apiserver", "kube-state-metrics"} & {job["job_name"] for job in config["scrape_configs"]}
    assert "BackupTooOld" not in uploads["/etc/prometheus/rules.yml"]


@pytest.mark.parametrize("environment,keeps", [("dev", False), ("prod", True)])
def test_prometheus_volume_is_retained_and_protected_when_the_stack_keeps_data(monitor, provider, environment, keeps):
    run(lambda: build(provider, stack_config(environment)))
    volume = monitor.named("monitoring-prometheus-data")
    assert volume.plain["name"] == f"{PREFIX}-prometheus-data"
    assert (volume.protect, volume.retain_on_delete) == (keeps, keeps)


def test_grafana_alone_is_published_on_loopback_when_asked(monitor, provider):
    run(lambda: build(provider, stack_config(publishGrafana=True)))
    published = {name: c.plain["ports"] for name, c in containers(monitor).items() if c.plain.get("ports")}
    assert list(published) == ["grafana"]
    assert [(p["ip"], p["external"], p["internal"]) for p in published["grafana"]] == [("127.0.0.1", 5030, 3000)]


def test_grafana_is_served_under_the_gateway_path_with_provisioned_datasources(monitor, provider):
    run(lambda: build(provider, stack_config(), loki_enabled=True, public_url="https://coderz.example/"))
    grafana = containers(monitor)["grafana"].plain
    envs = dict(e.split("=", 1) for e in grafana["envs"])
    assert envs["GF_SERVER_ROOT_URL"] == "https://coderz.example/grafana/"
    assert envs["GF_SERVER_SERVE_FROM_SUB_PATH"] == "true"
    uploads = {u["file"]: u["content"] for u in grafana["uploads"]}
    sources = yaml.safe_load(uploads["/etc/grafana/provisioning/datasources/coderz.yml"])["datasources"]
    assert [(s["uid"], s["url"]) for s in sources] == [("prometheus", "http://prometheus:9090"), ("loki", "http://loki:3100")]
    assert {f.rsplit("/", 1)[-1] for f in uploads if f.startswith("/etc/grafana/dashboards/")} == {
        "host.json", "containers.json", "apis.json", "postgres.json", "redis.json"}


# The component marks its credentials secret itself, even when handed plain strings.
@pytest.mark.parametrize("given", [pulumi.Output.secret, str], ids=["secret-inputs", "plain-inputs"])
def test_secrets_stay_secret(monitor, provider, given):
    run(lambda: build(provider, stack_config(), smtp=SMTP, smtp_password=given(SMTP_PASSWORD),
                      postgres_dsn=given(DSN), redis_password=given(REDIS_PASSWORD),
                      kubernetes=KubernetesTargets(api_server="10.0.0.1:6443", kube_state_metrics="10.0.0.1:30080"),
                      kubernetes_token=given(K8S_TOKEN), backup=BackupCheck()))
    running = containers(monitor)
    admin_password = "generated-monitoring-grafana-admin"  # what the mocks hand out

    # The engine marks the whole list secret when one element is: find the value inside a marker.
    assert in_secret(running["grafana"].inputs["envs"], f"GF_SECURITY_ADMIN_PASSWORD={admin_password}")
    assert in_secret(running["postgres-exporter"].inputs["envs"], f"DATA_SOURCE_NAME={DSN}")
    assert in_secret(running["redis-exporter"].inputs["envs"], f"REDIS_PASSWORD={REDIS_PASSWORD}")
    (upload,) = running["alertmanager"].plain["uploads"]
    assert in_secret(running["alertmanager"].inputs["uploads"], upload["content"])
    config = yaml.safe_load(upload["content"])
    assert config["global"]["smtp_auth_password"] == SMTP_PASSWORD
    assert config["route"]["receiver"] == "email"

    prometheus_uploads = {u["file"]: u["content"] for u in running["prometheus"].plain["uploads"]}
    assert prometheus_uploads["/etc/prometheus/kubernetes-token"] == K8S_TOKEN
    assert in_secret(running["prometheus"].inputs["uploads"], K8S_TOKEN)
    jobs = [j["job_name"] for j in yaml.safe_load(prometheus_uploads["/etc/prometheus/prometheus.yml"])["scrape_configs"]]
    assert jobs[-2:] == ["kubernetes-apiserver", "kube-state-metrics"]
    assert "BackupTooOld" in prometheus_uploads["/etc/prometheus/rules.yml"]

    assert plaintext_leaks(monitor.registrations, {DSN, REDIS_PASSWORD, SMTP_PASSWORD, K8S_TOKEN, admin_password}) == []
    (component,) = monitor.of_type("coderz:monitoring:Monitoring")
    outputs = monitor.outputs[component.urn]
    assert is_secret(outputs["grafana_admin_password"]) and unwrap(outputs["grafana_admin_password"]) == admin_password
    assert outputs["prometheus_url"] == "http://prometheus:9090"
    assert outputs["alertmanager_url"] == "http://alertmanager:9093"
    assert outputs["grafana_url"] == "/grafana/"
    assert outputs["scrape_jobs"] == jobs


def test_without_smtp_alertmanager_runs_with_the_null_receiver(monitor, provider):
    run(lambda: build(provider, stack_config("dev")))
    (upload,) = containers(monitor)["alertmanager"].plain["uploads"]
    config = yaml.safe_load(upload["content"])
    assert config["route"]["receiver"] == "null" and config["receivers"] == [{"name": "null"}]


def test_args_refuse_an_incomplete_setup(provider):
    config = stack_config()
    catalog = full_catalog(config)
    placement = Placement(prefix=PREFIX, network_name="net", provider=provider)
    base = dict(config=config.monitoring, placement=placement, postgres_dsn=DSN)
    with pytest.raises(ValueError, match="monitoring_services"):
        # A catalog of a stack with monitoring off lacks the services this component runs.
        MonitoringArgs(**base, catalog=declare_services(stack_config(enabled=False)))
    with pytest.raises(ValueError, match="smtp_password"):
        MonitoringArgs(**base, catalog=catalog, smtp=SMTP)
    with pytest.raises(ValueError, match="kubernetes_token"):
        MonitoringArgs(**base, catalog=catalog, kubernetes=KubernetesTargets(api_server="10.0.0.1:6443"))
