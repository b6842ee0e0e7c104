"""The monitoring services of a stack, declared once: Prometheus, Alertmanager, Grafana and the
exporters Prometheus scrapes (node, cAdvisor, PostgreSQL, Redis).

Each exporter carries `metrics`, so it becomes a Prometheus job through the same derivation as
the APIs (`Catalog.scraped`). Nothing here is published but Grafana, on the host's loopback,
and only when `monitoring.publishGrafana` asks for it; otherwise it is reached through the
gateway at `/grafana/`.
"""

from __future__ import annotations

from components.spec import HealthCheck, Limits, Metrics, Route, ServiceSpec
from infra.catalog import http_check, loopback_port
from infra.config import StackConfig

GRAFANA_ROUTE = Route(path_prefix="/grafana/", strip_prefix=False, cache_ttl_s=0)


def monitoring_services(config: StackConfig) -> list[ServiceSpec]:
    """The monitoring tier in start order; [] when `monitoring.enabled` is false."""
    monitoring = config.monitoring
    if not monitoring.enabled:
        return []

    def exporter(name: str, image: str, port: int, health: HealthCheck, description: str,
                 depends_on: tuple[str, ...] = ()) -> ServiceSpec:
        return ServiceSpec(
            name=name, image=image, port=port, tier="monitoring", description=description,
            health=health, limits=Limits(memory_mb=64, cpus=0.25), metrics=Metrics(), depends_on=depends_on,
        )

    return [
        exporter("node-exporter", "prom/node-exporter:v1.8.2", 9100, http_check(9100, "/"),
                 "Host CPU, memory, disk and network, read from the host's /proc, /sys and /"),
        ServiceSpec(
            name="cadvisor",
            image="gcr.io/cadvisor/cadvisor:v0.49.1",
            port=8080,
            tier="monitoring",
            description="Per-container CPU, memory, network and restarts",
            health=http_check(8080, "/healthz"),
            limits=Limits(memory_mb=256, cpus=0.5),
            min_memory_mb=64,
            metrics=Metrics(),
        ),
        exporter("postgres-exporter", "quay.io/prometheuscommunity/postgres-exporter:v0.15.0", 9187,
                 http_check(9187, "/"), "PostgreSQL statistics for Prometheus", ("postgres",)),
        # The -alpine variant: the default image is FROM scratch and has no wget for the check.
        exporter("redis-exporter", "oliver006/redis_exporter:v1.62.0-alpine", 9121,
                 http_check(9121, "/health"), "Redis statistics for Prometheus", ("redis",)),
        ServiceSpec(
            name="alertmanager",
            image="prom/alertmanager:v0.27.0",
            port=9093,
            tier="monitoring",
            description="Alertmanager: the one alert path, e-mail over SMTP",
            health=http_check(9093, "/-/healthy"),
            limits=Limits(memory_mb=128, cpus=0.25),
            min_memory_mb=32,
            metrics=Metrics(),
            # Prometheus sends every alert to each address of the name: two unclustered
            # Alertmanagers would both mail it, and silences live in the one's data dir.
            stateful=True,
        ),
        ServiceSpec(
            name="prometheus",
            image="prom/prometheus:v2.54.1",
            port=9090,
            tier="monitoring",
            description=f"Prometheus: scrapes every {monitoring.scrape_interval_s}s, keeps {monitoring.retention_days} days",
            health=http_check(9090, "/-/healthy"),
            limits=Limits(memory_mb=1024, cpus=1.0),
            min_memory_mb=128,  # the TSDB head block of every series it scrapes
            metrics=Metrics(),
            depends_on=("alertmanager",),
            stateful=True,  # its TSDB volume takes one server at a time (a lock file)
        ),
        ServiceSpec(
            name="grafana",
            image="grafana/grafana:11.2.0",
            port=3000,
            tier="monitoring",
            description="Grafana dashboards, under the gateway at /grafana/",
            # Served from its sub-path, Grafana answers there, not at /api/health.
            health=http_check(3000, f"{GRAFANA_ROUTE.path_prefix}api/health"),
            limits=Limits(memory_mb=256, cpus=0.5),
            min_memory_mb=96,
            route=GRAFANA_ROUTE,
            host_port=loopback_port(config, "grafana") if monitoring.publish_grafana else None,
            depends_on=("prometheus",),
        ),
    ]
