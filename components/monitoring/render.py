"""The monitoring config files, rendered from the catalog and the stack config.

Pure functions, text in and text out, no Pulumi: the component uploads what they return and
the tests feed the same text to promtool, amtool and real Prometheus/Alertmanager binaries.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Mapping, Sequence

from pydantic import Field

from components.container import REPLICA_LABEL, SERVICE_LABEL, STACK_LABEL
from components.monitoring.settings import AlertThresholds, SmtpConfig
from components.spec import Catalog, Frozen, InputStr
from components.yamltext import dump_yaml

CONFIG_DIR = "/etc/prometheus"
PROMETHEUS_DATA = "/prometheus"
ALERTMANAGER_CONFIG = "/etc/alertmanager/alertmanager.yml"
ALERTMANAGER_DATA = "/alertmanager"
DASHBOARDS_SOURCE = Path(__file__).resolve().parent / "dashboards"
GRAFANA_DASHBOARDS_DIR = "/etc/grafana/dashboards"
# Fixed so the dashboards in dashboards/*.json can name their datasource.
DATASOURCE_UIDS = {"prometheus": "prometheus", "loki": "loki", "elasticsearch": "elasticsearch"}
NULL_RECEIVER = "null"
# Pseudo file systems that say nothing about free disk space.
IGNORED_FSTYPES = "tmpfs|ramfs|devtmpfs|overlay|squashfs|nsfs|fuse.lxcfs|autofs"


class KubernetesTargets(Frozen):
    """The k3s cluster Prometheus scrapes, when there is one. The API server wants a bearer
    token (a ServiceAccount allowed `get` on the `/metrics` non-resource URL), uploaded next to
    the config; without a CA certificate the API server's certificate is not verified."""

    api_server: str = Field(pattern=r"^[^\s/:]+:\d+$")
    kube_state_metrics: str | None = Field(default=None, pattern=r"^[^\s/:]+:\d+$")
    # PEM text, or the Output of one (the cluster's CA is made by the program).
    ca_certificate: InputStr | None = None


class BackupCheck(Frozen):
    """The backup job's freshness: a gauge holding the Unix time of the last good backup."""

    metric: str = Field(default="coderz_backup_last_success_timestamp_seconds", pattern=r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")
    max_age_hours: int = Field(default=26, ge=1, le=24 * 31)


def _yaml(document: Mapping[str, Any]) -> str:
    return dump_yaml(document)


def prometheus_flags(*, retention_days: int, config_dir: str = CONFIG_DIR, data_dir: str = PROMETHEUS_DATA,
                     remote_write_receiver: bool = False) -> list[str]:
    """Prometheus' command line (retention is a flag, not a config key). The remote-write
    receiver (/api/v1/write) is on only for a stack whose k6 runner pushes results."""
    flags = [f"--config.file={config_dir}/prometheus.yml", f"--storage.tsdb.path={data_dir}",
             f"--storage.tsdb.retention.time={retention_days}d"]
    return flags + (["--web.enable-remote-write-receiver"] if remote_write_receiver else [])


def alertmanager_flags(*, config_file: str = ALERTMANAGER_CONFIG, data_dir: str = ALERTMANAGER_DATA) -> list[str]:
    """Alertmanager's command line: a single instance, so no cluster gossip port."""
    return [f"--config.file={config_file}", f"--storage.path={data_dir}", "--cluster.listen-address="]


def kubernetes_files(config_dir: str = CONFIG_DIR) -> tuple[str, str]:
    """Where the k3s bearer token and CA certificate live next to the Prometheus config."""
    return f"{config_dir}/kubernetes-token", f"{config_dir}/kubernetes-ca.crt"


def _discovery(name: str, port: int, targets: Mapping[str, Sequence[str]]) -> dict[str, Any]:
    # Docker's DNS answers a service alias with every replica's address, so one A lookup finds
    # them all; `targets` replaces the lookup with fixed addresses (tests on 127.0.0.1).
    if name in targets:
        return {"static_configs": [{"targets": list(targets[name])}]}
    return {"dns_sd_configs": [{"names": [name], "type": "A", "port": port, "refresh_interval": "30s"}]}


def cadvisor_label_flags() -> list[str]:
    """cAdvisor keeps only our labels of each container (every label of every container on the
    host would be a label of every series)."""
    return ["--store_container_labels=false", f"--whitelisted_container_labels={STACK_LABEL},{SERVICE_LABEL},{REPLICA_LABEL}"]


def _prometheus_label(docker_label: str) -> str:
    return "container_label_" + re.sub(r"[^a-zA-Z0-9_]", "_", docker_label)


# Per-container series carry the replica's stable name as `replica` (and its stack and service):
# the container name of a rolling replica changes on every deploy, so dashboards that grouped
# by `name` started a new line each time.
CONTAINER_RELABELS = [
    {"source_labels": [_prometheus_label(docker_label)], "regex": "(.+)", "target_label": target}
    for docker_label, target in ((REPLICA_LABEL, "replica"), (SERVICE_LABEL, "service"), (STACK_LABEL, "container_stack"))
]
METRIC_RELABELS = {"cadvisor": CONTAINER_RELABELS}


def _scrape_configs(catalog: Catalog, targets: Mapping[str, Sequence[str]],
                    kubernetes: KubernetesTargets | None, config_dir: str) -> list[dict[str, Any]]:
    jobs = [
        {"job_name": s.name, "metrics_path": s.metrics.path, **_discovery(s.name, s.metrics_port, targets),
         **({"metric_relabel_configs": METRIC_RELABELS[s.name]} if s.name in METRIC_RELABELS else {})}
        for s in catalog.scraped
    ]
    if kubernetes is not None:
        token_file, ca_file = kubernetes_files(config_dir)
        tls = {"ca_file": ca_file} if kubernetes.ca_certificate else {"insecure_skip_verify": True}
        jobs.append({
            "job_name": "kubernetes-apiserver",
            "scheme": "https",
            "authorization": {"type": "Bearer", "credentials_file": token_file},
            "tls_config": tls,
            "static_configs": [{"targets": [kubernetes.api_server]}],
        })
        if kubernetes.kube_state_metrics:
            jobs.append({"job_name": "kube-state-metrics", "static_configs": [{"targets": [kubernetes.kube_state_metrics]}]})
    return jobs


def scrape_job_names(catalog: Catalog, kubernetes: KubernetesTargets | None = None) -> list[str]:
    return [job["job_name"] for job in _scrape_configs(catalog, {}, kubernetes, CONFIG_DIR)]


def render_prometheus_config(
    catalog: Catalog,
    *,
    scrape_interval_s: int,
    stack: str,
    config_dir: str = CONFIG_DIR,
    targets: Mapping[str, Sequence[str]] | None = None,
    kubernetes: KubernetesTargets | None = None,
) -> str:
    """prometheus.yml: one job per `catalog.scraped` service (DNS discovery of its replicas),
    the k3s jobs when given, the rules file and the catalog's Alertmanager.

    `targets` maps a service name to fixed `host:port` addresses instead of DNS discovery.
    """
    targets = targets or {}
    config: dict[str, Any] = {
        "global": {
            "scrape_interval": f"{scrape_interval_s}s",
            "scrape_timeout": f"{min(scrape_interval_s, 10)}s",
            "evaluation_interval": f"{scrape_interval_s}s",
            "external_labels": {"stack": stack},
        },
        "rule_files": [f"{config_dir}/rules.yml"],
    }
    if "alertmanager" in catalog:
        alertmanager = catalog.get("alertmanager")
        config["alerting"] = {"alertmanagers": [_discovery(alertmanager.name, alertmanager.port, targets)]}
    config["scrape_configs"] = _scrape_configs(catalog, targets, kubernetes, config_dir)
    return _yaml(config)


def _alert(name: str, expr: str, duration: str, severity: str, summary: str, description: str) -> dict[str, Any]:
    return {
        "alert": name,
        "expr": expr,
        "for": duration,
        "labels": {"severity": severity},
        "annotations": {"summary": summary, "description": description},
    }


def render_alert_rules(thresholds: AlertThresholds, *, backup: BackupCheck | None = None) -> str:
    """rules.yml: the alerts Prometheus evaluates and hands to Alertmanager.

    Metric names: the gateway's `nginx_http_requests_total{route,status}`, node-exporter,
    cAdvisor (`container_start_time_seconds` moves on every restart of a container),
    postgres-exporter. The backup rules exist only when a backup job does.
    """
    t = thresholds
    disk = f'fstype!~"{IGNORED_FSTYPES}"'
    rules = [
        _alert(
            "GatewayHighErrorRate",
            'sum(rate(nginx_http_requests_total{status=~"5.."}[5m]))\n'
            f"  / sum(rate(nginx_http_requests_total[5m])) * 100 > {t.gateway_5xx_percent}",
            "5m", "critical",
            f"Gateway 5xx rate above {t.gateway_5xx_percent}%",
            '{{ $value | printf "%.1f" }}% of gateway requests answered 5xx over the last 5 minutes.',
        ),
        _alert(
            "TargetDown", "up == 0", "2m", "critical",
            "{{ $labels.job }} is down",
            "Prometheus has not scraped {{ $labels.job }} at {{ $labels.instance }} for 2 minutes.",
        ),
        _alert(
            "HostHighCpu",
            f'100 * (1 - avg by (instance) (rate(node_cpu_seconds_total{{mode="idle"}}[5m]))) > {t.cpu_percent}',
            "10m", "warning",
            f"Host CPU above {t.cpu_percent}%",
            'CPU of {{ $labels.instance }} is {{ $value | printf "%.0f" }}% busy.',
        ),
        _alert(
            "HostHighMemory",
            f"100 * (1 - node_memory_MemAvailable_bytes / node_memory_MemTotal_bytes) > {t.memory_percent}",
            "5m", "warning",
            f"Host memory above {t.memory_percent}%",
            'Memory of {{ $labels.instance }} is {{ $value | printf "%.0f" }}% used.',
        ),
        _alert(
            "HostDiskFull",
            f"100 * (1 - node_filesystem_avail_bytes{{{disk}}} / node_filesystem_size_bytes{{{disk}}}) > {t.disk_percent}",
            "5m", "warning",
            f"Disk above {t.disk_percent}%",
            '{{ $labels.mountpoint }} on {{ $labels.instance }} is {{ $value | printf "%.0f" }}% full.',
        ),
        _alert(
            "ContainerRestarting",
            f'changes(container_start_time_seconds{{name!=""}}[15m]) >= {t.container_restarts_15m}',
            "0m", "warning",
            "Container {{ $labels.name }} is restarting",
            '{{ $labels.name }} restarted {{ $value | printf "%.0f" }} times in 15 minutes.',
        ),
        _alert(
            "PostgresConnectionsNearMax",
            "100 * sum by (instance) (pg_stat_database_numbackends)\n"
            f"  / max by (instance) (pg_settings_max_connections) > {t.postgres_connections_percent}",
            "5m", "warning",
            f"PostgreSQL connections above {t.postgres_connections_percent}% of max_connections",
            'PostgreSQL uses {{ $value | printf "%.0f" }}% of max_connections.',
        ),
    ]
    if backup is not None:
        hours = backup.max_age_hours
        rules += [
            _alert(
                "BackupTooOld", f"time() - max({backup.metric}) > {hours * 3600}", "0m", "critical",
                f"Last good backup is older than {hours}h",
                'The last good backup finished {{ $value | humanizeDuration }} ago.',
            ),
            _alert(
                "BackupMissing", f"absent({backup.metric})", f"{hours}h", "critical",
                "No backup has reported success",
                f"{backup.metric} has been absent for {hours}h.",
            ),
        ]
    return _yaml({"groups": [{"name": "coderz", "rules": rules}]})


def render_alertmanager_config(smtp: SmtpConfig | None, password: str | None = None, *,
                               group_wait_s: int = 30) -> str:
    """alertmanager.yml: every alert goes by e-mail through `smtp`; without SMTP config the
    route ends in a receiver named "null" that has no integrations (alerts are kept and shown
    in Alertmanager's UI, and mailed nowhere).

    The password is written into the file, so the caller uploads the result as a secret.
    Only keys that both Alertmanager 0.25 (Debian, tests) and 0.27 (the image) accept.
    """
    if smtp is not None and smtp.user and password is None:
        raise ValueError("smtp.user needs its password")
    config: dict[str, Any] = {"global": {"resolve_timeout": "5m"}}
    receiver = NULL_RECEIVER
    receivers: list[dict[str, Any]] = [{"name": NULL_RECEIVER}]
    if smtp is not None:
        config["global"].update({
            "smtp_smarthost": f"{smtp.host}:{smtp.port}",
            "smtp_from": smtp.from_address,
            "smtp_require_tls": smtp.starttls,
        })
        if smtp.user:
            config["global"]["smtp_auth_username"] = smtp.user
            config["global"]["smtp_auth_password"] = password
        receiver = "email"
        receivers.append({"name": "email", "email_configs": [{"to": ", ".join(smtp.to), "send_resolved": True}]})
    config["route"] = {
        "receiver": receiver,
        "group_by": ["alertname", "stack"],
        "group_wait": f"{group_wait_s}s",
        "group_interval": "5m",
        "repeat_interval": "4h",
        "routes": [{"receiver": receiver, "matchers": ['severity="critical"'], "repeat_interval": "1h"}],
    }
    config["inhibit_rules"] = [{
        "source_matchers": ['severity="critical"'],
        "target_matchers": ['severity="warning"'],
        "equal": ["alertname", "instance"],
    }]
    config["receivers"] = receivers
    return _yaml(config)


def grafana_smtp_env(smtp: SmtpConfig | None) -> list[str]:
    """Grafana's mailer (alert notifications, invites) through `smtp`; off without it. The
    password, when there is one, is the caller's to add as a secret variable."""
    if smtp is None:
        return ["GF_SMTP_ENABLED=false"]
    env = ["GF_SMTP_ENABLED=true", f"GF_SMTP_HOST={smtp.host}:{smtp.port}", f"GF_SMTP_FROM_ADDRESS={smtp.from_address}",
           f"GF_SMTP_STARTTLS_POLICY={'MandatoryStartTLS' if smtp.starttls else 'NoStartTLS'}"]
    if smtp.user:
        env.append(f"GF_SMTP_USER={smtp.user}")
    return env


def render_grafana_datasources(prometheus_url: str, *, loki_url: str | None = None,
                               elasticsearch_url: str | None = None,
                               elasticsearch_index: str = "gateway-*") -> str:
    """Grafana's datasource provisioning: Prometheus always, Loki and Elasticsearch when their
    URL is given (their pipeline is on). UIDs are fixed (`DATASOURCE_UIDS`)."""
    sources = [{
        "name": "Prometheus", "uid": DATASOURCE_UIDS["prometheus"], "type": "prometheus", "access": "proxy",
        "url": prometheus_url, "isDefault": True, "editable": False,
    }]
    if loki_url:
        sources.append({"name": "Loki", "uid": DATASOURCE_UIDS["loki"], "type": "loki", "access": "proxy",
                        "url": loki_url, "editable": False})
    if elasticsearch_url:
        sources.append({
            "name": "Elasticsearch", "uid": DATASOURCE_UIDS["elasticsearch"], "type": "elasticsearch",
            "access": "proxy", "url": elasticsearch_url, "editable": False,
            "jsonData": {"index": elasticsearch_index, "timeField": "@timestamp"},
        })
    return _yaml({"apiVersion": 1, "datasources": sources})


def render_grafana_dashboard_provider(path: str = GRAFANA_DASHBOARDS_DIR) -> str:
    """Grafana's dashboard provisioning: every JSON file under `path`, read-only in the UI."""
    return _yaml({"apiVersion": 1, "providers": [{
        "name": "coderz", "folder": "coderz", "type": "file", "disableDeletion": True,
        "allowUiUpdates": False, "options": {"path": path, "foldersFromFilesStructure": False},
    }]})


# Dashboards of optional parts, shipped only to stacks that have them.
KUBERNETES_DASHBOARD = "kubernetes.json"
K6_DASHBOARD = "k6.json"


def dashboards(*, kubernetes: bool = True, k6: bool = True) -> dict[str, str]:
    """The dashboards shipped in dashboards/*.json, file name -> JSON text (checked to parse);
    without `kubernetes` the cluster's dashboard is left out, without `k6` the load tests'."""
    found = {}
    left_out = {KUBERNETES_DASHBOARD: not kubernetes, K6_DASHBOARD: not k6}
    for path in sorted(DASHBOARDS_SOURCE.glob("*.json")):
        if left_out.get(path.name):
            continue
        text = path.read_text()
        json.loads(text)
        found[path.name] = text
    return found
