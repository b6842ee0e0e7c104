"""system-health: the host's CPU, memory and disk, read from Prometheus (node exporter)."""

from __future__ import annotations

from prefect import flow

from flows import prometheus
from flows.config import load_config
from flows.report import Check, finish

# the monitoring settings' threshold for each figure
THRESHOLD_KEYS = {"cpu": "cpu_percent", "memory": "memory_percent", "disk": "disk_percent"}


@flow(name="system-health")
def system_health():
    config = load_config()
    if config.prometheus_url is None:
        return finish("system-health", config, [Check("prometheus", True, "not deployed on this stack (monitoring off)")])
    checks = []
    for figure, expression in prometheus.HOST_EXPRESSIONS.items():
        limit = config.thresholds.get(THRESHOLD_KEYS[figure], 100)
        try:
            series = prometheus.query(config.prometheus_url, expression)
        except prometheus.Unreachable as exc:
            checks.append(Check(f"host {figure}", False, str(exc)))
            continue
        if not series:
            checks.append(Check(f"host {figure}", False, "no node exporter series in Prometheus"))
        for labels, value in series:
            checks.append(Check(f"host {figure} {labels.get('instance', '')}".rstrip(), value <= limit,
                                f"{value:.1f}% used (threshold {limit}%)"))
    return finish("system-health", config, checks)
