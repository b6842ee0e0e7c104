"""daily-summary: one e-mail of the last 24 h: alerts fired (Prometheus and the flows' own),
container restarts, health failures, and the last good backup."""

from __future__ import annotations

from collections import Counter
from datetime import datetime, timedelta, timezone

import httpx
from prefect import flow

from flows import mail, prometheus, state
from flows.config import FlowsConfig, load_config
from flows.report import Check, finish

WINDOW = timedelta(hours=24)
SECTIONS = {"alert": "Threshold breaches", "restart": "Container restarts", "health-failure": "Health failures"}


def prometheus_lines(config: FlowsConfig, checks: list[Check]) -> list[str]:
    if config.prometheus_url is None:
        return ["Prometheus alerts: monitoring is off on this stack"]
    lines = []
    try:
        fired = prometheus.query(config.prometheus_url,
                                 'count by (alertname) (max_over_time(ALERTS{alertstate="firing"}[24h]))')
        lines.append("Prometheus alerts fired: " + (", ".join(sorted(l.get("alertname", "?") for l, _ in fired)) or "none"))
        if config.backup_metric:
            last = prometheus.query(config.prometheus_url, f"max({config.backup_metric})")
            lines.append("Last good backup: " + (
                datetime.fromtimestamp(last[0][1], timezone.utc).isoformat() if last else "none recorded"))
        else:
            lines.append("Backups: no backup job on this stack")
    except prometheus.Unreachable as exc:
        checks.append(Check("prometheus", False, str(exc)))
        lines.append(f"Prometheus: {exc}")
    return lines


def alertmanager_lines(config: FlowsConfig, checks: list[Check]) -> list[str]:
    """The alerts Alertmanager holds active right now (fired, not silenced)."""
    if config.alertmanager_url is None:
        return []
    url = f"{config.alertmanager_url.rstrip('/')}/api/v2/alerts"
    try:
        response = httpx.get(url, params={"active": "true", "silenced": "false"}, timeout=10)
        response.raise_for_status()
        names = sorted({alert["labels"].get("alertname", "?") for alert in response.json()})
    except (httpx.HTTPError, ValueError, KeyError, TypeError) as exc:
        checks.append(Check("alertmanager", False, f"Alertmanager at {config.alertmanager_url} did not answer: {exc}"))
        return [f"Alertmanager: did not answer ({exc})"]
    return ["Alerts active now: " + (", ".join(names) or "none")]


@flow(name="daily-summary")
def daily_summary():
    config = load_config()
    checks: list[Check] = []
    events = state.events_since(config, WINDOW)
    lines = prometheus_lines(config, checks) + alertmanager_lines(config, checks)
    for kind, title in SECTIONS.items():
        details = Counter(e["detail"] for e in events if e["kind"] == kind)
        lines.append(f"\n{title}: {sum(details.values()) or 'none'}")
        lines += [f"  {detail}" + (f" (x{count})" if count > 1 else "") for detail, count in sorted(details.items())]
    checks.append(mail.send(config, "daily summary (last 24 h)", "\n".join(lines) + "\n"))
    return finish("daily-summary", config, checks)
