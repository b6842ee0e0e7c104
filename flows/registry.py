"""Deployment name -> flow. The names and default schedules are the program's
(components/prefect/settings.py); a test keeps the two lists equal."""

from __future__ import annotations

from flows.daily_summary import daily_summary
from flows.docker_restart_monitor import docker_restart_monitor
from flows.k8s_health import k8s_health
from flows.services_health import services_health
from flows.system_health import system_health
from flows.threshold_alerts import threshold_alerts
from flows.weekly_cleanup import weekly_cleanup

FLOWS = {
    "system-health": system_health,
    "services-health": services_health,
    "threshold-alerts": threshold_alerts,
    "k8s-health": k8s_health,
    "docker-restart-monitor": docker_restart_monitor,
    "daily-summary": daily_summary,
    "weekly-cleanup": weekly_cleanup,
}
