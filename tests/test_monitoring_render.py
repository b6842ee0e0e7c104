"""The monitoring configs, checked by the real tools: promtool (config, rules, rule unit tests),
amtool, and a real Prometheus that loads the rules and scrapes a real node exporter (and the
Python API when it is in the tree)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import time
import urllib.parse
from pathlib import Path

import pytest
import yaml

from components.monitoring import render
from components.monitoring.settings import AlertThresholds, SmtpConfig
from components.spec import Catalog, HealthCheck, Limits, Metrics, ServiceSpec
from infra.catalog import declare_services
from infra.config import StackConfig
from infra.services_monitoring import monitoring_services
from tests.servers import IN_CI, free_port, http, process, require_tool, scratch_dir

REPO = Path(__file__).resolve().parent.parent
PYAPI = REPO / "apps" / "pyapi" / "app.py"
STACK = "coderz-test"


def stack_config(environment: str = "prod", **monitoring) -> StackConfig:
    return StackConfig.model_validate({
        "environment": environment, "target": {"kind": "local"}, "ports": {"base": 5000},
        "monitoring": monitoring,
    })


def full_catalog(config: StackConfig) -> Catalog:
    """The stack's catalog: declare_services includes the monitoring tier when it is on."""
    catalog = declare_services(config)
    assert all(s.name in catalog for s in monitoring_services(config))
    return catalog


@pytest.fixture(scope="module")
def catalog() -> Catalog:
    return full_catalog(stack_config())


def run(argv: list[str], cwd: Path | None = None) -> str:
    result = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, f"{' '.join(argv)} failed:\n{result.stdout}\n{result.stderr}"
    return result.stdout + result.stderr


# --- Prometheus config -------------------------------------------------------------------

def test_every_scraped_service_is_a_dns_discovered_job(catalog):
    config = yaml.safe_load(render.render_prometheus_config(catalog, scrape_interval_s=15, stack=STACK))
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert set(jobs) == {s.name for s in catalog.scraped}
    assert {"node-exporter", "cadvisor", "postgres-exporter", "redis-exporter", "gateway", "python-api"} <= set(jobs)
    for service in catalog.scraped:
        job = jobs[service.name]
        assert job["metrics_path"] == service.metrics.path
        assert job["dns_sd_configs"] == [{"names": [service.name], "type": "A", "port": service.metrics_port,
                                          "refresh_interval": "30s"}]
    assert jobs["gateway"]["dns_sd_configs"][0]["port"] == 9145
    assert config["global"]["scrape_interval"] == "15s"
    assert config["global"]["external_labels"] == {"stack": STACK}
    assert config["alerting"]["alertmanagers"][0]["dns_sd_configs"][0]["names"] == ["alertmanager"]
    assert not {"kubernetes-apiserver", "kube-state-metrics"} & set(jobs)
    assert render.scrape_job_names(catalog) == list(jobs)


def test_a_service_added_to_the_catalog_with_metrics_is_scraped_without_another_edit(catalog):
    def service(name: str, metrics: Metrics | None) -> ServiceSpec:
        return ServiceSpec(name=name, image="example/billing:1.0.0", port=7000, tier="app", description=name,
                           health=HealthCheck(test=("CMD", "true")), limits=Limits(memory_mb=64, cpus=0.1),
                           metrics=metrics)

    grown = Catalog(services=catalog.services + (service("billing-api", Metrics(path="/prom", port=9400)),
                                                 service("no-metrics", None)))
    jobs = {job["job_name"]: job for job in yaml.safe_load(
        render.render_prometheus_config(grown, scrape_interval_s=15, stack=STACK))["scrape_configs"]}
    assert jobs["billing-api"] == {
        "job_name": "billing-api", "metrics_path": "/prom",
        "dns_sd_configs": [{"names": ["billing-api"], "type": "A", "port": 9400, "refresh_interval": "30s"}],
    }
    assert "no-metrics" not in jobs
    assert "billing-api" in render.scrape_job_names(grown)


def test_monitoring_disabled_declares_nothing():
    assert monitoring_services(stack_config(enabled=False)) == []


def test_only_grafana_is_published_and_only_when_asked():
    for publish in (False, True):
        catalog = full_catalog(stack_config(publishGrafana=publish))
        published = {s.name for s in catalog.services if s.tier == "monitoring" and (s.host_port or s.public_ports)}
        assert published == ({"grafana"} if publish else set())
    assert full_catalog(stack_config(publishGrafana=True)).get("grafana").host_port == 5030
    grafana = full_catalog(stack_config()).get("grafana")
    assert grafana.route.path_prefix == "/grafana/" and not grafana.route.strip_prefix and grafana.route.cache_ttl_s == 0


def write_prometheus_files(folder: Path, catalog: Catalog, *, kubernetes=None, backup=None, **render_args) -> Path:
    """prometheus.yml and rules.yml (and the k3s credentials) rendered into `folder`."""
    (folder / "rules.yml").write_text(render.render_alert_rules(AlertThresholds(), backup=backup))
    if kubernetes is not None:
        token_file, ca_file = render.kubernetes_files(str(folder))
        Path(token_file).write_text("test-token")
        Path(ca_file).write_text("not a real certificate")
    config = folder / "prometheus.yml"
    config.write_text(render.render_prometheus_config(
        catalog, stack=STACK, config_dir=str(folder), kubernetes=kubernetes, **render_args))
    return config


@pytest.mark.parametrize("kubernetes", [None, render.KubernetesTargets(api_server="10.0.0.1:6443"),
                                        render.KubernetesTargets(api_server="10.0.0.1:6443",
                                                                 kube_state_metrics="10.0.0.1:30080",
                                                                 ca_certificate="PEM")])
def test_promtool_accepts_the_prometheus_config(tmp_path, catalog, kubernetes):
    promtool = require_tool("promtool")
    config = write_prometheus_files(tmp_path, catalog, kubernetes=kubernetes, backup=render.BackupCheck(),
                                    scrape_interval_s=15)
    output = run([promtool, "check", "config", str(config)])
    assert "SUCCESS" in output
    jobs = [job["job_name"] for job in yaml.safe_load(config.read_text())["scrape_configs"]]
    expected_k8s = [] if kubernetes is None else ["kubernetes-apiserver"] + (
        ["kube-state-metrics"] if kubernetes.kube_state_metrics else [])
    assert jobs == [s.name for s in catalog.scraped] + expected_k8s


# --- Alert rules -------------------------------------------------------------------------

def group(series: dict[str, str], alertname: str, eval_time: str, expected: list[dict], interval: str = "1m") -> dict:
    return {
        "interval": interval,
        "input_series": [{"series": s, "values": v} for s, v in series.items()],
        "alert_rule_test": [{"eval_time": eval_time, "alertname": alertname, "exp_alerts": expected}],
    }


def fires(labels: dict[str, str], summary: str, description: str) -> list[dict]:
    return [{"exp_labels": labels, "exp_annotations": {"summary": summary, "description": description}}]


NODE = {"instance": "node-exporter:9100", "job": "node-exporter"}
FS = 'instance="node-exporter:9100",job="node-exporter",device="/dev/sda1",fstype="ext4",mountpoint="/"'
TMPFS = 'instance="node-exporter:9100",job="node-exporter",device="tmpfs",fstype="tmpfs",mountpoint="/run"'
CONTAINER = 'name="coderz-prod-python-api",image="coderz/pyapi:abc"'
PG = 'instance="postgres-exporter:9187",job="postgres-exporter"'
BACKUP = "coderz_backup_last_success_timestamp_seconds"


def unit_tests() -> list[dict]:
    """For each alert: one group of bad series where it fires (with its exact labels and
    annotations), and good series where it does not, both at the same evaluation time."""
    ok = []
    requests = 'nginx_http_requests_total{route="/api/python/",status="%s"}'
    return [
        # 2 of 12 requests/s answer 5xx (16.7%) / 0.5 of 10.5 (4.8%).
        group({requests % "200": "0+600x30", requests % "500": "0+120x30"}, "GatewayHighErrorRate", "15m",
              fires({"severity": "critical"}, "Gateway 5xx rate above 10%",
                    "16.7% of gateway requests answered 5xx over the last 5 minutes.")),
        group({requests % "200": "0+600x30", requests % "500": "0+30x30"}, "GatewayHighErrorRate", "15m", ok),
        group({'up{job="gateway",instance="10.0.1.5:9145"}': "1 1 0 0 0 0 0 0"}, "TargetDown", "6m",
              fires({"severity": "critical", "job": "gateway", "instance": "10.0.1.5:9145"}, "gateway is down",
                    "Prometheus has not scraped gateway at 10.0.1.5:9145 for 2 minutes.")),
        group({'up{job="gateway",instance="10.0.1.5:9145"}': "1x8"}, "TargetDown", "6m", ok),
        # Idle 0.1 s per second: 90% busy / idle 0.9 s: 10% busy.
        group({'node_cpu_seconds_total{cpu="0",mode="idle",instance="node-exporter:9100"}': "0+6x30"},
              "HostHighCpu", "20m",
              fires({"severity": "warning", "instance": "node-exporter:9100"}, "Host CPU above 85%",
                    "CPU of node-exporter:9100 is 90% busy.")),
        group({'node_cpu_seconds_total{cpu="0",mode="idle",instance="node-exporter:9100"}': "0+54x30"},
              "HostHighCpu", "20m", ok),
        group({'node_memory_MemAvailable_bytes{instance="node-exporter:9100",job="node-exporter"}': "500000000x10",
               'node_memory_MemTotal_bytes{instance="node-exporter:9100",job="node-exporter"}': "10000000000x10"},
              "HostHighMemory", "8m",
              fires({"severity": "warning", **NODE}, "Host memory above 90%",
                    "Memory of node-exporter:9100 is 95% used.")),
        group({'node_memory_MemAvailable_bytes{instance="node-exporter:9100",job="node-exporter"}': "5000000000x10",
               'node_memory_MemTotal_bytes{instance="node-exporter:9100",job="node-exporter"}': "10000000000x10"},
              "HostHighMemory", "8m", ok),
        group({f"node_filesystem_avail_bytes{{{FS}}}": "1000000000x10", f"node_filesystem_size_bytes{{{FS}}}": "10000000000x10",
               f"node_filesystem_avail_bytes{{{TMPFS}}}": "0x10", f"node_filesystem_size_bytes{{{TMPFS}}}": "100000x10"},
              "HostDiskFull", "8m",
              fires({"severity": "warning", **NODE, "device": "/dev/sda1", "fstype": "ext4", "mountpoint": "/"},
                    "Disk above 85%", "/ on node-exporter:9100 is 90% full.")),
        # A full tmpfs says nothing about the disk.
        group({f"node_filesystem_avail_bytes{{{FS}}}": "5000000000x10", f"node_filesystem_size_bytes{{{FS}}}": "10000000000x10",
               f"node_filesystem_avail_bytes{{{TMPFS}}}": "0x10", f"node_filesystem_size_bytes{{{TMPFS}}}": "100000x10"},
              "HostDiskFull", "8m", ok),
        group({f"container_start_time_seconds{{{CONTAINER}}}": "100 100 400 400 700 700 1000 1000"}, "ContainerRestarting", "7m",
              fires({"severity": "warning", "name": "coderz-prod-python-api", "image": "coderz/pyapi:abc"},
                    "Container coderz-prod-python-api is restarting",
                    "coderz-prod-python-api restarted 3 times in 15 minutes.")),
        # One restart in 15 minutes is not "restarting".
        group({f"container_start_time_seconds{{{CONTAINER}}}": "100 100 100 400 400 400 400 400"}, "ContainerRestarting", "7m", ok),
        group({f'pg_stat_database_numbackends{{{PG},datname="python_api"}}': "50x10",
               f'pg_stat_database_numbackends{{{PG},datname="dotnet_api"}}': "40x10",
               f"pg_settings_max_connections{{{PG}}}": "100x10"}, "PostgresConnectionsNearMax", "8m",
              fires({"severity": "warning", "instance": "postgres-exporter:9187"},
                    "PostgreSQL connections above 80% of max_connections", "PostgreSQL uses 90% of max_connections.")),
        group({f'pg_stat_database_numbackends{{{PG},datname="python_api"}}': "10x10",
               f'pg_stat_database_numbackends{{{PG},datname="dotnet_api"}}': "20x10",
               f"pg_settings_max_connections{{{PG}}}": "100x10"}, "PostgresConnectionsNearMax", "8m", ok),
        # Test time starts at the Unix epoch: at 30h, a backup stamped 0 is 30h old.
        group({f'{BACKUP}{{job="backup"}}': "0x40"}, "BackupTooOld", "30h",
              fires({"severity": "critical"}, "Last good backup is older than 26h",
                    "The last good backup finished 1d 6h 0m 0s ago."), interval="1h"),
        group({f'{BACKUP}{{job="backup"}}': "0+3600x40"}, "BackupTooOld", "30h", ok, interval="1h"),
        group({'up{job="prometheus"}': "1x40"}, "BackupMissing", "27h",
              fires({"severity": "critical"}, "No backup has reported success",
                    f"{BACKUP} has been absent for 26h."), interval="1h"),
        group({f'{BACKUP}{{job="backup"}}': "0+3600x40"}, "BackupMissing", "27h", ok, interval="1h"),
    ]


def alert_names(rules_text: str) -> set[str]:
    return {rule["alert"] for g in yaml.safe_load(rules_text)["groups"] for rule in g["rules"]}


def test_every_alert_fires_on_bad_series_and_not_on_good(tmp_path):
    promtool = require_tool("promtool")
    rules = render.render_alert_rules(AlertThresholds(), backup=render.BackupCheck())
    (tmp_path / "rules.yml").write_text(rules)
    assert "SUCCESS: 9 rules found" in run([promtool, "check", "rules", "rules.yml"], cwd=tmp_path)

    tests = unit_tests()
    # Each alert of the rules file has a firing case and a quiet case.
    cases = [(t["alert_rule_test"][0]["alertname"], bool(t["alert_rule_test"][0]["exp_alerts"])) for t in tests]
    assert {name for name, _ in cases} == alert_names(rules)
    for name in alert_names(rules):
        assert (name, True) in cases and (name, False) in cases, name
    (tmp_path / "rules_test.yml").write_text(yaml.safe_dump(
        {"rule_files": ["rules.yml"], "evaluation_interval": "1m", "tests": tests}, sort_keys=False))
    assert "SUCCESS" in run([promtool, "test", "rules", "rules_test.yml"], cwd=tmp_path)


def test_thresholds_come_from_the_stack_config(tmp_path):
    promtool = require_tool("promtool")
    strict = AlertThresholds(disk_percent=40, cpu_percent=5, gateway_5xx_percent=3)
    rules = render.render_alert_rules(strict)
    assert "BackupTooOld" not in rules and "BackupMissing" not in rules  # no backup job, no rule
    (tmp_path / "rules.yml").write_text(rules)
    # The series that are quiet under the default thresholds fire under these.
    expected = {
        "GatewayHighErrorRate": fires({"severity": "critical"}, "Gateway 5xx rate above 3%",
                                      "4.8% of gateway requests answered 5xx over the last 5 minutes."),
        "HostHighCpu": fires({"severity": "warning", "instance": "node-exporter:9100"}, "Host CPU above 5%",
                             "CPU of node-exporter:9100 is 10% busy."),
        "HostDiskFull": fires({"severity": "warning", **NODE, "device": "/dev/sda1", "fstype": "ext4", "mountpoint": "/"},
                              "Disk above 40%", "/ on node-exporter:9100 is 50% full."),
    }
    cases = [t for t in unit_tests() if not t["alert_rule_test"][0]["exp_alerts"]
             and t["alert_rule_test"][0]["alertname"] in expected]
    assert len(cases) == len(expected)
    for case in cases:
        test = case["alert_rule_test"][0]
        test["exp_alerts"] = expected[test["alertname"]]
    (tmp_path / "rules_test.yml").write_text(yaml.safe_dump(
        {"rule_files": ["rules.yml"], "evaluation_interval": "1m", "tests": cases}, sort_keys=False))
    assert "SUCCESS" in run([promtool, "test", "rules", "rules_test.yml"], cwd=tmp_path)


# --- Alertmanager ------------------------------------------------------------------------

SMTP = SmtpConfig(host="smtp.example.org", port=587, user="alerts@example.org", from_address="alerts@example.org",
                  to=("ops@example.org", "oncall@example.org"))


@pytest.mark.parametrize("smtp,password", [(SMTP, "p@ss: 'word\" #1"), (SMTP.model_copy(update={"user": None}), None),
                                           (None, None)])
def test_amtool_accepts_the_alertmanager_config(tmp_path, smtp, password):
    amtool = require_tool("amtool")
    text = render.render_alertmanager_config(smtp, password)
    (tmp_path / "alertmanager.yml").write_text(text)
    output = run([amtool, "check-config", str(tmp_path / "alertmanager.yml")])
    assert "SUCCESS" in output
    config = yaml.safe_load(text)
    if smtp is None:
        # No SMTP: alerts end in the receiver without integrations.
        assert config["route"]["receiver"] == "null"
        assert config["receivers"] == [{"name": "null"}]
    else:
        assert config["route"]["receiver"] == "email"
        assert config["global"]["smtp_smarthost"] == "smtp.example.org:587"
        assert config["receivers"][1]["email_configs"][0]["to"] == "ops@example.org, oncall@example.org"
        assert config["global"].get("smtp_auth_password") == password


def test_alertmanager_refuses_a_user_without_password():
    with pytest.raises(ValueError):
        render.render_alertmanager_config(SMTP, None)


# --- Grafana -----------------------------------------------------------------------------

def datasource_refs(node) -> list[dict]:
    if isinstance(node, dict):
        found = [node["datasource"]] if isinstance(node.get("datasource"), dict) else []
        return found + [ref for value in node.values() for ref in datasource_refs(value)]
    if isinstance(node, list):
        return [ref for value in node for ref in datasource_refs(value)]
    return []


def test_dashboards_reference_only_provisioned_datasources():
    boards = render.dashboards()
    assert set(boards) == {"host.json", "containers.json", "apis.json", "postgres.json", "redis.json", "kubernetes.json",
                           "k6.json"}
    assert set(render.dashboards(kubernetes=False)) == set(boards) - {"kubernetes.json"}
    assert set(render.dashboards(k6=False)) == set(boards) - {"k6.json"}
    provisioned = yaml.safe_load(render.render_grafana_datasources("http://prometheus:9090"))["datasources"]
    by_uid = {source["uid"]: source for source in provisioned}
    uids = set()
    for name, text in boards.items():
        board = json.loads(text)
        uids.add(board["uid"])
        refs = datasource_refs(board)
        assert refs, name
        for ref in refs:
            assert ref["uid"] in by_uid, f"{name} uses datasource {ref['uid']}, not provisioned"
            assert ref["type"] == by_uid[ref["uid"]]["type"]
    assert len(uids) == len(boards)
    titles = {p["title"] for p in json.loads(boards["apis.json"])["panels"]}
    assert {"Request rate by route", "Latency p50 / p95 / p99", "Error rate (5xx) by route"} <= titles


def test_dashboard_queries_are_valid_promql(tmp_path):
    # promtool parses every query, handed to it as a recording rule.
    promtool = require_tool("promtool")
    rules = []
    for name, text in render.dashboards().items():
        for panel in json.loads(text)["panels"]:
            for target in panel["targets"]:
                expr = target["expr"].replace("$__rate_interval", "1m")
                rules.append({"record": f"dashboard:{name.removesuffix('.json')}:{panel['id']}{target['refId']}", "expr": expr})
    (tmp_path / "queries.yml").write_text(yaml.safe_dump({"groups": [{"name": "dashboards", "rules": rules}]}))
    assert f"SUCCESS: {len(rules)} rules found" in run([promtool, "check", "rules", "queries.yml"], cwd=tmp_path)


def test_datasources_follow_the_logging_pipelines():
    def uids(**kwargs) -> list[str]:
        return [s["uid"] for s in yaml.safe_load(render.render_grafana_datasources("http://prometheus:9090", **kwargs))["datasources"]]

    assert uids() == ["prometheus"]
    assert uids(loki_url="http://loki:3100") == ["prometheus", "loki"]
    assert uids(loki_url="http://loki:3100", elasticsearch_url="http://elasticsearch:9200") == ["prometheus", "loki", "elasticsearch"]
    provider = yaml.safe_load(render.render_grafana_dashboard_provider())["providers"][0]
    assert provider["options"]["path"] == render.GRAFANA_DASHBOARDS_DIR


# --- A real Prometheus -------------------------------------------------------------------

def query(port: int, promql: str) -> list[dict]:
    status, _, body = http("GET", f"http://127.0.0.1:{port}/api/v1/query?query={urllib.parse.quote(promql)}")
    assert status == 200, body
    return json.loads(body)["data"]["result"]


def wait_for_series(port: int, promql: str, timeout: float = 20.0) -> list[dict]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        # The port opens before the TSDB is loaded; until then Prometheus answers 503.
        if http("GET", f"http://127.0.0.1:{port}/-/ready")[0] == 200:
            result = query(port, promql)
            if result:
                return result
        time.sleep(0.25)
    raise AssertionError(f"{promql} returned nothing after {timeout}s")


def prometheus_argv(folder: Path, port: int) -> list[str]:
    return [require_tool("prometheus"),
            *render.prometheus_flags(retention_days=30, config_dir=str(folder), data_dir=str(folder / "data")),
            f"--web.listen-address=127.0.0.1:{port}"]


def test_real_prometheus_loads_the_rules_and_scrapes_node_exporter(catalog):
    node_exporter = require_tool("prometheus-node-exporter")
    folder = scratch_dir("prometheus-")
    prom_port, node_port = free_port(), free_port()
    # The same render as production, with fixed loopback addresses instead of Docker DNS.
    write_prometheus_files(folder, catalog, backup=render.BackupCheck(), scrape_interval_s=1, targets={
        "node-exporter": [f"127.0.0.1:{node_port}"], "prometheus": [f"127.0.0.1:{prom_port}"]})
    node = [node_exporter, f"--web.listen-address=127.0.0.1:{node_port}"]
    try:
        with process(node, port=node_port, log=folder / "node.log"), \
                process(prometheus_argv(folder, prom_port), port=prom_port, log=folder / "prometheus.log"):
            up = wait_for_series(prom_port, 'up{job="node-exporter"} == 1')
            assert up[0]["metric"]["instance"] == f"127.0.0.1:{node_port}"
            wait_for_series(prom_port, 'up{job="prometheus"} == 1')
            assert float(query(prom_port, "node_memory_MemTotal_bytes")[0]["value"][1]) > 0

            status, _, body = http("GET", f"http://127.0.0.1:{prom_port}/api/v1/rules")
            assert status == 200
            loaded = {rule["name"] for g in json.loads(body)["data"]["groups"] for rule in g["rules"]}
            assert loaded == alert_names((folder / "rules.yml").read_text())
            # The host rules match what a real node exporter exports: each rule's expression,
            # its threshold dropped, returns series.
            rules = yaml.safe_load((folder / "rules.yml").read_text())["groups"][0]["rules"]
            node_rules = [r for r in rules if "node_" in r["expr"]]
            assert {r["alert"] for r in node_rules} == {"HostHighCpu", "HostHighMemory", "HostDiskFull"}
            for rule in node_rules:
                level = re.sub(r" > \d+$", " >= 0", rule["expr"])
                assert level != rule["expr"]
                assert wait_for_series(prom_port, level, timeout=15), rule["alert"]
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def test_real_prometheus_scrapes_the_python_api(catalog):
    if not PYAPI.exists():
        message = f"{PYAPI.relative_to(REPO)} is not in the tree yet"
        if IN_CI:
            pytest.fail(message + " -- under CI=true the Python API must be scraped")
        pytest.skip(message)
    folder = scratch_dir("prometheus-")
    prom_port, api_port = free_port(), free_port()
    spec = catalog.get("python-api")
    write_prometheus_files(folder, catalog, scrape_interval_s=1, targets={"python-api": [f"127.0.0.1:{api_port}"]})
    closed = free_port()
    env = {"PORT": str(api_port), "DATABASE_URL": f"postgresql://nobody:nothing@127.0.0.1:{closed}/none",
           "REDIS_URL": f"redis://127.0.0.1:{closed}/0"}
    try:
        with process([sys.executable, str(PYAPI)], port=api_port, cwd=PYAPI.parent, env=env, log=folder / "api.log"), \
             process(prometheus_argv(folder, prom_port), port=prom_port, log=folder / "prometheus.log"):
            status, _, _ = http("GET", f"http://127.0.0.1:{api_port}{spec.metrics.path}")
            assert status == 200
            up = wait_for_series(prom_port, 'up{job="python-api"} == 1')
            assert up[0]["metric"]["instance"] == f"127.0.0.1:{api_port}"
            series = query(prom_port, '{job="python-api",__name__!~"up|scrape_.*"}')
            assert series, "the Python API exported no metrics of its own"
    finally:
        shutil.rmtree(folder, ignore_errors=True)


# --- Per-container series across a rolling deploy ----------------------------------------

def cadvisor_exposition(containers: list[tuple[str, dict[str, str]]], value: float) -> bytes:
    """Series as cAdvisor exports them with our flags: `name`, `id`, `image`, and each
    whitelisted Docker label as `container_label_<label, non-alphanumerics as _>` (cAdvisor's
    metrics/prometheus.go; `--whitelisted_container_labels` needs `--store_container_labels=false`)."""
    lines = ["# TYPE container_memory_working_set_bytes gauge"]
    for name, labels in containers:
        pairs = {"id": f"/docker/{abs(hash(name)):x}", "image": "busybox:1.36", "name": name}
        pairs |= {"container_label_" + re.sub(r"[^a-zA-Z0-9_]", "_", k): v for k, v in labels.items()}
        rendered = ",".join(f'{k}="{v}"' for k, v in sorted(pairs.items()))
        lines.append(f"container_memory_working_set_bytes{{{rendered}}} {value}")
    return ("\n".join(lines) + "\n").encode()


def test_cadvisor_keeps_only_our_labels_and_flags_are_cadvisors_own():
    flags = render.cadvisor_label_flags()
    assert flags[0] == "--store_container_labels=false"
    whitelisted = flags[1].removeprefix("--whitelisted_container_labels=").split(",")
    assert set(whitelisted) == {"coderz.stack", "coderz.service", "coderz.replica"}


def test_dashboards_follow_a_replica_across_a_rolling_deploy(catalog):
    """A rolling replica's container name changes on each deploy; the dashboard's line is the
    replica (its `coderz.replica` label), so a deploy continues the line instead of starting one.
    A container of no stack (no coderz label) is not on the dashboard."""
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
    import threading

    replica = "coderz-qa-python-api-1"
    labels = {"coderz.stack": "coderz-qa", "coderz.service": "python-api", "coderz.replica": replica}
    generations = [[(f"{replica}-aaaaaaaaaaaa", labels), ("someone-elses-container", {})],
                   [(f"{replica}-bbbbbbbbbbbb", labels), ("someone-elses-container", {})]]
    state = {"generation": 0}

    class Exporter(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = cadvisor_exposition(generations[state["generation"]], 1000.0 + state["generation"])
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; version=0.0.4")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    exporter = ThreadingHTTPServer(("127.0.0.1", 0), Exporter)
    threading.Thread(target=exporter.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    folder = scratch_dir("prometheus-")
    prom_port = free_port()
    write_prometheus_files(folder, catalog, scrape_interval_s=1,
                           targets={"cadvisor": [f"127.0.0.1:{exporter.server_address[1]}"]})
    dashboard = json.loads((Path(render.__file__).parent / "dashboards" / "containers.json").read_text())
    memory = next(t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])
                  if "container_memory_working_set_bytes" in t["expr"])
    try:
        with process(prometheus_argv(folder, prom_port), port=prom_port, log=folder / "prometheus.log"):
            wait_for_series(prom_port, 'container_memory_working_set_bytes{replica!=""} == 1000')
            state["generation"] = 1  # the deploy: the same replica under a new container name
            wait_for_series(prom_port, 'container_memory_working_set_bytes{replica!=""} == 1001')
            lines = query(prom_port, memory)
            assert [line["metric"] for line in lines] == [{"replica": replica}]
            # both container names are stored, under the one replica, service and stack
            stored = query(prom_port, 'count by (name, replica, service, container_stack) '
                                      '(last_over_time(container_memory_working_set_bytes{replica!=""}[1m]))')
            assert sorted(s["metric"]["name"] for s in stored) == [f"{replica}-aaaaaaaaaaaa", f"{replica}-bbbbbbbbbbbb"]
            assert {(s["metric"]["replica"], s["metric"]["service"], s["metric"]["container_stack"]) for s in stored} == {
                (replica, "python-api", "coderz-qa")}
            # grouped by container name, as before, the deploy splits the line in two
            assert len(query(prom_port, 'sum by (name) (last_over_time(container_memory_working_set_bytes'
                                        '{name=~"coderz-.*"}[1m]))')) == 2
    finally:
        exporter.shutdown()
        shutil.rmtree(folder, ignore_errors=True)
