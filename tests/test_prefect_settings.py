"""`coderz:prefect` and the orchestration declarations: validated before anything exists,
errors naming the stack file and key; the catalog, the PostgreSQL client rule, the flows
config render; and the import walls between the program and the flows."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest

from components.prefect import render
from components.prefect.settings import DEFAULT_SCHEDULES, PREFECT_IMAGE, PrefectConfig
from components.spec import Catalog
from flows.config import FlowsConfig
from infra.catalog import declare_services
from infra.config import ConfigError, StackConfig, load, stack_file_config
from infra.platform import postgres_clients
from infra.services_orchestration import FLOWS_SOURCE, flows_image
from tests.conftest import make_spec
from tests.mocks import engine_config, secrets_for

REPO = Path(__file__).resolve().parent.parent
ORCHESTRATION = ("prefect-server", "docker-proxy", "flows-runner")


def error_of(prefect: dict, stack: str = "qa") -> str:
    raw, _ = engine_config(stack, secrets=secrets_for(stack), overrides={"coderz:prefect": prefect})
    with pytest.raises(ConfigError) as caught:
        load(raw, stack)
    return str(caught.value)


@pytest.mark.parametrize("cron", ["*/5 * * * *", "0 6 * * *", "0 2 * * 0", "0 2 * * 7", "15,45 1-5/2 1 1,6 1-5",
                                  "0 0 31 12 *", "*/59 23 * * *"])
def test_valid_crons_are_accepted_and_prefect_runs_them(cron):
    from prefect.client.schemas.schedules import CronSchedule

    config = PrefectConfig.model_validate({"flows": {"daily-summary": {"cron": cron}}})
    assert config.flows.effective()["daily-summary"] == cron
    assert CronSchedule(cron=cron, timezone="UTC").cron == cron


@pytest.mark.parametrize("cron,why", [
    ("* * * *", "needs 5 fields"), ("* * * * * *", "needs 5 fields"), ("60 * * * *", "minute must be within 0-59"),
    ("* 24 * * *", "hour must be within 0-23"), ("* * 0 * *", "day of month must be within 1-31"),
    ("* * * 13 *", "month must be within 1-12"), ("* * * * 8", "day of week must be within 0-7"),
    ("*/0 * * * *", "step must be within"), ("5-1 * * * *", "runs backwards"), ("0 6 * * MON", "is not *, N"),
    ("@daily", "needs 5 fields"), ("0 6 * * *; rm -rf /", "needs 5 fields"), ("-1 * * * *", "is not *, N"),
])
def test_a_bad_cron_is_refused_naming_file_and_key(cron, why):
    message = error_of({"flows": {"daily-summary": {"cron": cron}}})
    assert message.startswith("Pulumi.qa.yaml: coderz:prefect.flows.daily-summary.cron: "), message
    assert why in message


def test_an_unknown_deployment_or_key_is_a_typo():
    assert error_of({"flows": {"nightly-backup": {"enabled": False}}}) == \
        "Pulumi.qa.yaml: coderz:prefect.flows.nightly-backup: unknown key (typo?)"
    assert error_of({"flows": {"k8s-health": {"enable": False}}}) == \
        "Pulumi.qa.yaml: coderz:prefect.flows.k8s-health.enable: unknown key (typo?)"
    assert error_of({"publishUI": True}) == "Pulumi.qa.yaml: coderz:prefect.publishUI: unknown key (typo?)"
    assert error_of({"logRetentionDays": 0}).startswith("Pulumi.qa.yaml: coderz:prefect.logRetentionDays: ")


def test_default_schedules_are_the_reference_ones_and_each_can_be_turned_off():
    assert PrefectConfig().flows.effective() == DEFAULT_SCHEDULES
    off = PrefectConfig.model_validate({"flows": {name: {"enabled": False} for name in DEFAULT_SCHEDULES}})
    assert off.flows.effective() == {}


def test_orchestration_is_declared_with_prefect_as_a_postgres_client():
    catalog = declare_services(stack_file_config("qa"))
    server, proxy, runner = (catalog.get(s) for s in ORCHESTRATION)
    assert {s.tier for s in (server, proxy, runner)} == {"orchestration"}
    assert server.image == PREFECT_IMAGE and server.port == 4200
    assert server.route.path_prefix == "/prefect/" and not server.route.strip_prefix and server.route.cache_ttl_s == 0
    assert server.health.test[-1].endswith("'http://127.0.0.1:4200/prefect/api/health', timeout=3)")
    assert server.host_port is None and proxy.host_port is None and runner.host_port is None
    assert runner.image == flows_image() and runner.image.startswith("coderz/flows:")
    assert postgres_clients(catalog) == ("dotnet-api", "python-api", "prefect-server")


def test_the_ui_is_on_loopback_only_where_the_stack_asks():
    raw, _ = engine_config("qa", secrets=secrets_for("qa"), overrides={"coderz:prefect": {"publishUi": True}})
    catalog = declare_services(load(raw, "qa").config)
    assert catalog.get("prefect-server").host_port == 5142
    assert catalog.published_ports()[5142] == "prefect-server"


def test_prefect_off_declares_nothing_and_claims_no_database():
    catalog = declare_services(StackConfig.model_validate({"prefect": {"enabled": False}}))
    assert not {s.name for s in catalog.services} & set(ORCHESTRATION)
    assert "prefect-server" not in postgres_clients(catalog)


def test_a_postgres_client_must_depend_on_postgres():
    with pytest.raises(ValueError, match="is a PostgreSQL client but does not depend on postgres"):
        Catalog(services=(make_spec("postgres"), make_spec("worker", tier="orchestration", postgres_client=True)))
    exporter = make_spec("exporter", tier="monitoring", depends_on=("postgres",), route=None)
    assert postgres_clients(Catalog(services=(make_spec("postgres", route=None), exporter))) == ()


def test_the_runner_image_is_built_from_the_servers_prefect():
    lines = (FLOWS_SOURCE / "Dockerfile").read_text().splitlines()
    assert [line.split()[1] for line in lines if line.startswith("FROM ")] == [PREFECT_IMAGE]


def test_the_flows_config_is_what_the_runner_reads_and_names_every_container():
    config = stack_file_config("prod")
    catalog = declare_services(config)
    text = render.render_flows_config(catalog, prefix="coderz-prod", prefect=config.prefect,
                                      thresholds=config.monitoring.thresholds, smtp=config.smtp,
                                      docker_url="http://docker-proxy:2375")
    flows = FlowsConfig.model_validate(json.loads(text))
    assert flows.schedules == DEFAULT_SCHEDULES
    assert flows.prometheus_url == "http://prometheus:9090" and flows.alertmanager_url == "http://alertmanager:9093"
    assert flows.thresholds == config.monitoring.thresholds.model_dump()
    assert flows.smtp.host == "smtp.coderz.example" and "password" not in text.lower()
    assert len(flows.probes) == sum(s.replicas for s in catalog.services)
    probes = {p.container: p for p in flows.probes}
    assert probes["coderz-prod-python-api-3"].target == "http://coderz-prod-python-api-3:8000/health"
    assert probes["coderz-prod-dotnet-api-1"].target == "http://coderz-prod-dotnet-api-1:8080/healthz"
    assert probes["coderz-prod-postgres"].target == "tcp://coderz-prod-postgres:5432"
    assert probes["coderz-prod-prefect-server-1"].target == "http://coderz-prod-prefect-server-1:4200/prefect/api/health"
    # Filebeat serves its health on its own loopback and nothing reaches it: Docker's verdict
    assert probes["coderz-prod-filebeat"].kind == "docker" and probes["coderz-prod-flows-runner"].kind == "docker"
    # (and the mail relay: its senders are not declared as its dependents)
    assert {p.service for p in flows.probes if p.kind == "docker"} == {"filebeat", "flows-runner", "smtp-relay"}
    assert flows.kubernetes is None  # none given here: k8s-health reports "not deployed"


def test_without_monitoring_the_flows_config_has_no_prometheus():
    config = StackConfig.model_validate({"monitoring": {"enabled": False}})
    text = render.render_flows_config(declare_services(config), prefix="coderz-dev", prefect=config.prefect,
                                      thresholds=None, smtp=None, docker_url="http://docker-proxy:2375")
    flows = FlowsConfig.model_validate_json(text)
    assert flows.prometheus_url is None and flows.alertmanager_url is None and flows.smtp is None


def imports_of(folder: Path) -> set[str]:
    names = set()
    for path in folder.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names.add(node.module.split(".")[0])
    return names


def test_flows_never_import_the_program_and_the_program_never_imports_prefect():
    assert not imports_of(REPO / "flows") & {"pulumi", "pulumi_docker", "infra", "components"}
    assert "prefect" in imports_of(REPO / "flows")
    for folder in ("infra", "components"):
        assert "prefect" not in imports_of(REPO / folder), folder
