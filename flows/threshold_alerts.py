"""threshold-alerts: the stack's thresholds as Prometheus queries. A breach is mailed once
when it starts and once when it clears, never on every run (state on the runner's volume)."""

from __future__ import annotations

from prefect import flow

from flows import mail, prometheus, state
from flows.config import FlowsConfig, load_config
from flows.report import Check, finish

STATE = "threshold-alerts"


def rules(config: FlowsConfig) -> dict[str, tuple[str, str]]:
    """Rule name -> (PromQL returning the breaching series, what it means)."""
    t = config.thresholds
    host = prometheus.HOST_EXPRESSIONS
    found = {
        "host-cpu": (f"{host['cpu']} > {t.get('cpu_percent', 85)}", f"CPU above {t.get('cpu_percent', 85)}%"),
        "host-memory": (f"{host['memory']} > {t.get('memory_percent', 90)}", f"memory above {t.get('memory_percent', 90)}%"),
        "host-disk": (f"{host['disk']} > {t.get('disk_percent', 85)}", f"disk above {t.get('disk_percent', 85)}%"),
        "gateway-5xx": (
            'sum(rate(nginx_http_requests_total{status=~"5.."}[15m])) / sum(rate(nginx_http_requests_total[15m])) * 100'
            f" > {t.get('gateway_5xx_percent', 10)}", f"gateway 5xx above {t.get('gateway_5xx_percent', 10)}%"),
        "postgres-connections": (
            "100 * sum by (instance) (pg_stat_database_numbackends) / max by (instance) (pg_settings_max_connections)"
            f" > {t.get('postgres_connections_percent', 80)}",
            f"PostgreSQL connections above {t.get('postgres_connections_percent', 80)}%"),
    }
    return found


@flow(name="threshold-alerts")
def threshold_alerts():
    config = load_config()
    if config.prometheus_url is None:
        return finish(STATE, config, [Check("prometheus", True, "not deployed on this stack (monitoring off)")])
    checks, breaches, unanswered = [], {}, False
    for name, (expression, meaning) in rules(config).items():
        try:
            series = prometheus.query(config.prometheus_url, expression)
        except prometheus.Unreachable as exc:
            checks.append(Check(name, False, str(exc)))
            unanswered = True
            continue
        for labels, value in series:
            where = labels.get("instance", "")
            breaches[f"{name} {where}".strip()] = f"{meaning}: {value:.1f}"
        checks.append(Check(name, not series, f"{meaning} on {len(series)} series" if series else "within threshold"))
    if unanswered:
        # Without every answer, keep the last state rather than mail open breaches as cleared.
        return finish(STATE, config, checks)
    started, cleared, since = state.transitions(config, STATE, breaches)
    for key, detail in started.items():
        state.record(config, "alert", f"{key}: {detail}")
        checks.append(mail.send(config, f"ALERT {key}", f"Breach started at {since[key]}.\n{detail}\n"))
    for key, detail in cleared.items():
        checks.append(mail.send(config, f"RESOLVED {key}", f"The breach is over.\nIt was: {detail}\n"))
    return finish(STATE, config, checks)
