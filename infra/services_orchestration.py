"""The orchestration services of a stack, declared once: the Prefect server (UI and API under
the gateway at /prefect/), the Docker socket proxy and the flows runner built from `flows/`.

The server is a PostgreSQL client (its own role and database, like the APIs). Nothing is
published but the server, on the host's loopback, and only when `prefect.publishUi` asks.
"""

from __future__ import annotations

from components.prefect.settings import PREFECT_IMAGE, SOCKET_PROXY_IMAGE
from components.spec import HealthCheck, Limits, Route, ServiceSpec
from infra.catalog import REPO_ROOT, http_check, loopback_port, source_digest
from infra.config import PROJECT, StackConfig

FLOWS_SOURCE = REPO_ROOT / "flows"
PREFECT_ROUTE = Route(path_prefix="/prefect/", strip_prefix=False, cache_ttl_s=0)
PREFECT_PORT = 4200
RUNNER_PORT = 8080  # the runner's own webserver: /health
SOCKET_PROXY_PORT = 2375


def flows_image() -> str:
    return f"{PROJECT}/flows:{source_digest(FLOWS_SOURCE)}"


def python_http_check(port: int, path: str) -> HealthCheck:
    # Prefect's image has Python, neither wget nor curl.
    probe = f"import urllib.request as u; u.urlopen('http://127.0.0.1:{port}{path}', timeout=3)"
    return HealthCheck(test=("CMD", "python", "-c", probe), start_period_s=30)


def orchestration_services(config: StackConfig) -> list[ServiceSpec]:
    """The orchestration tier in start order; [] when `prefect.enabled` is false."""
    prefect = config.prefect
    if not prefect.enabled:
        return []
    return [
        ServiceSpec(
            name="prefect-server",
            image=PREFECT_IMAGE,
            port=PREFECT_PORT,
            tier="orchestration",
            description="Prefect server: UI and API under the gateway at /prefect/ (basic auth)",
            # Served from its sub-path; the health endpoint answers without the auth string.
            health=python_http_check(PREFECT_PORT, f"{PREFECT_ROUTE.path_prefix}api/health"),
            limits=Limits(memory_mb=512, cpus=1.0),
            route=PREFECT_ROUTE,
            host_port=loopback_port(config, "prefect-server") if prefect.publish_ui else None,
            depends_on=("postgres",),
            postgres_client=True,
        ),
        ServiceSpec(
            name="docker-proxy",
            image=SOCKET_PROXY_IMAGE,
            port=SOCKET_PROXY_PORT,
            tier="orchestration",
            description="Docker socket proxy: only the API sections the flows use",
            # /_ping goes through to the daemon: healthy means the socket answers too.
            health=http_check(SOCKET_PROXY_PORT, "/_ping"),
            limits=Limits(memory_mb=32, cpus=0.1),
        ),
        ServiceSpec(
            name="flows-runner",
            image=flows_image(),
            port=RUNNER_PORT,
            tier="orchestration",
            description="Prefect flows runner: the seven platform flows, on their schedules (UTC)",
            health=python_http_check(RUNNER_PORT, "/health"),
            limits=Limits(memory_mb=512, cpus=0.5),
            depends_on=("prefect-server", "docker-proxy"),
            # its state volume (alert and restart baselines) takes one runner at a time, and two
            # runners would serve every scheduled run twice
            stateful=True,
        ),
    ]
