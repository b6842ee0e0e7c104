"""Monitoring and alerting: Prometheus (targets derived from the catalog), Alertmanager (the one
alert path, e-mail over SMTP), Grafana with provisioned datasources and dashboards, exporters."""

from components.monitoring.component import Monitoring, MonitoringArgs
from components.monitoring.render import (
    BackupCheck,
    KubernetesTargets,
    dashboards,
    render_alert_rules,
    render_alertmanager_config,
    render_grafana_datasources,
    render_prometheus_config,
)

__all__ = [
    "BackupCheck",
    "KubernetesTargets",
    "Monitoring",
    "MonitoringArgs",
    "dashboards",
    "render_alert_rules",
    "render_alertmanager_config",
    "render_grafana_datasources",
    "render_prometheus_config",
]
