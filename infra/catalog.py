"""Every service of a stack, declared once from its config.

Adding a service means adding one `ServiceSpec` here (and a component that runs it): its
gateway route, Prometheus target, port-table row and diagram box follow from the declaration.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from components.postgres_init import MIN_MEMORY_MB as POSTGRES_MIN_MEMORY_MB
from components.backup.render import IMAGE_CONTEXT as BACKUP_IMAGE_CONTEXT
from components.backup.render import METRICS_PORT as BACKUP_METRICS_PORT
from components.spec import Catalog, HealthCheck, Limits, Metrics, PublicPort, Route, ServiceSpec
from infra.config import PROJECT, StackConfig

REPO_ROOT = Path(__file__).resolve().parent.parent
PYAPI_SOURCE = REPO_ROOT / "apps" / "pyapi"

# Loopback ports are `ports.base + offset`; offsets are fixed so a port names its service
# on every stack (prod 5032, qa 5132 and dev 5232 are all PostgreSQL).
LOOPBACK_OFFSETS = {"postgres": 32, "grafana": 30, "prefect-server": 42, "kibana": 56, "prometheus": 90,
                    "alertmanager": 93, "k3s": 64,
                    # the reference's pgAdmin :5080, docs :3333, k6 :9000
                    "pgadmin": 80, "docs": 33, "k6": 0}


def source_digest(folder: Path, exclude: tuple[str, ...] = ()) -> str:
    """A content hash of a build context, so an edit rebuilds the image and nothing else does;
    `exclude` names top-level entries left out (a local build's output)."""
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file() and "__pycache__" not in p.parts
                       and p.relative_to(folder).parts[0] not in exclude):
        digest.update(path.relative_to(folder).as_posix().encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


def pyapi_image() -> str:
    return f"{PROJECT}/pyapi:{source_digest(PYAPI_SOURCE)}"


def backup_image(config: StackConfig) -> str:
    """PostgreSQL with pgBackRest, built from components/backup/image on `postgres.image`: the
    tag hashes both, so a new base or a new script rebuilds it."""
    digest = hashlib.sha256(f"{source_digest(BACKUP_IMAGE_CONTEXT)}:{config.postgres.image}".encode()).hexdigest()
    return f"{PROJECT}/postgres-pgbackrest:{digest[:12]}"


def backup_services(config: StackConfig) -> list[ServiceSpec]:
    """The backup sidecar, when `backup.enabled`: pgBackRest's schedule beside PostgreSQL, and
    the time of the last good backup for Prometheus (`backup` job)."""
    if not config.backup.enabled:
        return []
    return [ServiceSpec(
        name="backup",
        image=backup_image(config),
        port=BACKUP_METRICS_PORT,
        tier="data",
        description="pgBackRest: WAL archive, weekly full and daily differential backups, last-success metric",
        health=HealthCheck(test=("CMD", "busybox", "wget", "-q", "-O", "/dev/null",
                                 f"http://127.0.0.1:{BACKUP_METRICS_PORT}/metrics.txt")),
        limits=Limits(memory_mb=256, cpus=0.5),
        stateful=True,  # it shares PostgreSQL's data and the repository volume: one at a time
        metrics=Metrics(path="/metrics.txt"),
        depends_on=("postgres",),
    )]


def http_check(port: int, path: str) -> HealthCheck:
    # busybox wget exists in the alpine images; the probe stays inside the container.
    return HealthCheck(test=("CMD", "wget", "-q", "-O", "/dev/null", f"http://127.0.0.1:{port}{path}"))


def bash_http_check(port: int, path: str) -> HealthCheck:
    """For images with bash but neither wget nor curl (Promtail; the Debian-based ASP.NET
    images): an HTTP/1.0 request over bash's /dev/tcp, healthy on a 200 status line."""
    probe = (
        f"exec 3<>/dev/tcp/127.0.0.1/{port} && "
        f"printf 'GET {path} HTTP/1.0\\r\\n\\r\\n' >&3 && head -n1 <&3 | grep -q ' 200 '"
    )
    return HealthCheck(test=("CMD", "bash", "-c", probe))


def loopback_port(config: StackConfig, service: str) -> int | None:
    offset = LOOPBACK_OFFSETS.get(service)
    return None if offset is None else config.ports.base + offset


def declare_services(config: StackConfig) -> Catalog:
    """The stack's services in start order: data first, then the APIs, the gateway, then the
    monitoring and logging tiers the stack turns on. Every limit here is a default."""
    apis = config.apis
    services = [
        ServiceSpec(
            name="postgres",
            # With backups on, PostgreSQL runs the image that carries pgBackRest (archive_command).
            image=backup_image(config) if config.backup.enabled else config.postgres.image,
            port=5432,
            tier="data",
            description="PostgreSQL, one database per API",
            # Over TCP: during first-start init the image's temporary server listens on the
            # socket only, so the check turns healthy once the real server is up.
            health=HealthCheck(test=("CMD-SHELL", 'pg_isready -h 127.0.0.1 -U "$POSTGRES_USER" -d postgres')),
            limits=Limits(memory_mb=512, cpus=1.0),
            min_memory_mb=POSTGRES_MIN_MEMORY_MB,
            host_port=loopback_port(config, "postgres"),
            stateful=True,  # its data volume takes one server at a time
        ),
        ServiceSpec(
            name="redis",
            image=config.redis.image,
            port=6379,
            tier="data",
            description="Redis: API counters and the gateway's response cache",
            health=HealthCheck(
                test=("CMD-SHELL", 'redis-cli -a "$REDIS_PASSWORD" --no-auth-warning ping | grep -q PONG')
            ),
            limits=Limits(memory_mb=128, cpus=0.25),
            stateful=True,  # its append-only file takes one server at a time
            min_memory_mb=32,  # maxmemory is 75% of it; the rest is the server and AOF rewrites
        ),
        ServiceSpec(
            name="dotnet-api",
            image=apis.dotnet.image or "mcr.microsoft.com/dotnet/samples:aspnetapp-9.0",
            port=8080,
            tier="app",
            description=".NET API",
            # Microsoft's ASP.NET images carry neither wget nor curl.
            health=bash_http_check(8080, "/healthz"),
            limits=Limits(memory_mb=256, cpus=0.5),
            min_memory_mb=96,  # the .NET runtime and ASP.NET Core before the first request
            replicas=apis.dotnet.replicas,
            metrics=Metrics(),
            route=Route(path_prefix="/api/dotnet/", cache_ttl_s=apis.dotnet.cache_ttl_s),
            depends_on=("postgres", "redis"),
        ),
        ServiceSpec(
            name="python-api",
            image=apis.python.image or pyapi_image(),
            port=8000,
            tier="app",
            description="Python reference API",
            health=HealthCheck(
                test=("CMD", "python", "-c", "import urllib.request as u; u.urlopen('http://127.0.0.1:8000/health', timeout=3)")
            ),
            limits=Limits(memory_mb=256, cpus=0.5),
            min_memory_mb=64,  # CPython with psycopg and redis-py loaded
            replicas=apis.python.replicas,
            metrics=Metrics(),
            route=Route(path_prefix="/api/python/", cache_ttl_s=apis.python.cache_ttl_s),
            depends_on=("postgres", "redis"),
        ),
        ServiceSpec(
            name="gateway",
            image="openresty/openresty:1.25.3.2-alpine",
            port=GATEWAY_HTTP,
            tier="edge",
            description="nginx (OpenResty) gateway with the Redis response cache",
            health=http_check(GATEWAY_HTTP, "/health"),
            limits=Limits(memory_mb=128, cpus=0.5),
            min_memory_mb=32,  # nginx.conf's shared zones (rate limits, Lua dicts) take about 17 MB
            metrics=Metrics(path="/metrics", port=9145),
            public_ports=gateway_ports(config),
            depends_on=("redis",),
        ),
    ]
    # The tiers below live in their own modules; they import this one's helpers.
    from infra.services_kubernetes import kubernetes_services
    from infra.services_logging import logging_services
    from infra.services_monitoring import monitoring_services
    from infra.services_orchestration import orchestration_services
    from infra.services_tools import tool_services

    services += (backup_services(config) + monitoring_services(config) + logging_services(config)
                 + orchestration_services(config) + kubernetes_services(config) + tool_services(config))
    # The limits above are defaults; a stack overrides them by service name (`coderz:limits`).
    services = [
        s.model_copy(update={"limits": config.limits[s.name]}) if s.name in config.limits else s for s in services
    ]
    return Catalog(services=tuple(services))


GATEWAY_HTTP, GATEWAY_HTTPS = 8080, 8443  # unprivileged ports inside the gateway container


def gateway_ports(config: StackConfig) -> tuple[PublicPort, ...]:
    ports = [PublicPort(host=config.ports.http, container=GATEWAY_HTTP)]
    if config.ports.https is not None:
        ports.append(PublicPort(host=config.ports.https, container=GATEWAY_HTTPS))
    return tuple(ports)


def check_ports(config: StackConfig) -> tuple[str, str] | None:
    """The first host port two services would share, as (config key, message); else None."""
    claims: list[tuple[int, str, str]] = []
    if config.target.kind == "ssh":  # sshd already listens on the host's every address
        claims.append((config.target.port, "sshd", f"{PROJECT}:target.port"))
    claims.append((config.ports.http, "gateway", f"{PROJECT}:ports.http"))
    if config.ports.https is not None:
        claims.append((config.ports.https, "gateway", f"{PROJECT}:ports.https"))
    for service, offset in LOOPBACK_OFFSETS.items():
        claims.append((config.ports.base + offset, service, f"{PROJECT}:ports.base (+{offset})"))
    seen: dict[int, tuple[str, str]] = {}
    for port, service, key in claims:
        if port in seen:
            other, other_key = seen[port]
            return key.split(" ")[0], f"host port {port} is taken twice: {other} ({other_key}) and {service} ({key})"
        seen[port] = (service, key)
    return None
