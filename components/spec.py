"""The service declaration: the one place a service's image, port, health check, metrics and
exposure are written down.

Gateway routes, Prometheus targets, health flows, the port table and the diagram are all
derived from a tuple of `ServiceSpec`, never listed again by hand.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal, TypeAlias

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic.alias_generators import to_camel

# `pulumi.Input[str]` in an args model: a str or an Output of one. Pydantic cannot validate an
# Output's future content, so args models accept these as they are.
InputStr: TypeAlias = Any

# Docker's image reference grammar (distribution/reference): an optional registry host[:port]/,
# lowercase path components, then a tag and/or a sha256 digest -- one of them required here.
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_REGISTRY = r"(?:[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*(?::[0-9]{1,5})?/)?"
PINNED_TAG = re.compile(
    rf"^{_REGISTRY}{_COMPONENT}(?:/{_COMPONENT})*(?::[A-Za-z0-9_][A-Za-z0-9_.-]{{0,127}}|@sha256:[0-9a-f]{{64}})$"
)


def _pinned(image: str) -> str:
    if image.endswith(":latest") or ":" not in image.rsplit("/", 1)[-1] and "@" not in image:
        raise ValueError(f"image {image!r} must carry a pinned tag or digest (not latest)")
    if len(image) > 255 or not PINNED_TAG.fullmatch(image):
        raise ValueError(f"image {image!r} is not a Docker image reference (registry/name:tag, lowercase name)")
    return image


PinnedImage = Annotated[str, AfterValidator(_pinned)]


class Frozen(BaseModel):
    """Base of every config and declaration model: immutable, strict about unknown keys, and
    spelled in camelCase in stack files (`memoryMb`) while Python code uses snake_case."""

    model_config = ConfigDict(
        frozen=True, extra="forbid", alias_generator=to_camel, populate_by_name=True
    )


class Limits(Frozen):
    """Resource limits of one container."""

    memory_mb: int = Field(ge=16, le=262_144)
    # Docker refuses a CPU limit below 0.01 ("Range of CPUs is from 0.01 to ...").
    cpus: float = Field(ge=0.01, le=64, allow_inf_nan=False)

    @property
    def memory_bytes(self) -> int:
        return self.memory_mb * 1024 * 1024


class HealthCheck(Frozen):
    """A Docker health check; `test` is the exec form run inside the container."""

    test: tuple[str, ...]
    interval_s: int = Field(default=10, ge=1)
    timeout_s: int = Field(default=5, ge=1)
    retries: int = Field(default=5, ge=1)
    start_period_s: int = Field(default=15, ge=0)

    @field_validator("test")
    @classmethod
    def _exec_form(cls, test: tuple[str, ...]) -> tuple[str, ...]:
        if not test or test[0] not in ("CMD", "CMD-SHELL"):
            raise ValueError("a health check starts with CMD or CMD-SHELL")
        return test


class Metrics(Frozen):
    """Where Prometheus scrapes a service. `port` defaults to the service's own port."""

    path: str = "/metrics"
    port: int | None = Field(default=None, ge=1, le=65535)


class Route(Frozen):
    """How the gateway exposes a service: a path prefix, and how long GET answers are cached."""

    path_prefix: str
    cache_ttl_s: int = Field(default=0, ge=0, le=86_400)
    # APIs see their own paths (/health), UIs that know their sub-path (Grafana) keep it.
    strip_prefix: bool = True
    # Where the gateway sends the route when it is not the service's own alias and port (a
    # Kubernetes NodePort on the k3s server; the host's address for a k3s on the host).
    upstream_host: str | None = Field(default=None, pattern=r"^[A-Za-z0-9]([A-Za-z0-9.-]{0,251}[A-Za-z0-9])?$")
    upstream_port: int | None = Field(default=None, ge=1, le=65535)
    # The route's pages draw data: images (MkDocs Material's icons are data: SVGs in its CSS):
    # the gateway's CSP adds `img-src 'self' data:` on this route alone.
    data_images: bool = False

    @field_validator("path_prefix")
    @classmethod
    def _slashes(cls, prefix: str) -> str:
        if not re.fullmatch(r"/([a-z0-9-]+/)+", prefix):
            raise ValueError("a route prefix looks like /api/python/ (lowercase, slashes around)")
        return prefix


class PublicPort(Frozen):
    """A port bound on every host address: the gateway's alone."""

    host: int = Field(ge=1, le=65535)
    container: int = Field(ge=1, le=65535)


Tier = Literal["edge", "app", "data", "monitoring", "logging", "orchestration", "kubernetes", "tools"]


class ServiceSpec(Frozen):
    """One service of the platform, declared once.

    `host_port` publishes the service on the host's loopback only (reach it through an SSH
    tunnel); `public_ports` is for the gateway alone, the one public entry.
    """

    name: str = Field(pattern=r"^[a-z][a-z0-9-]{1,30}$")
    image: PinnedImage
    port: int = Field(ge=1, le=65535)
    health: HealthCheck
    limits: Limits
    tier: Tier
    description: str
    replicas: int = Field(default=1, ge=1, le=1000)
    # The least memory the service starts and runs its own defaults with (a stack's limit
    # override below it is refused at load time); 0 means the model's floor, 16 MB.
    min_memory_mb: int = Field(default=0, ge=0, le=262_144)
    metrics: Metrics | None = None
    route: Route | None = None
    host_port: int | None = Field(default=None, ge=1, le=65535)
    public_ports: tuple[PublicPort, ...] = ()
    depends_on: tuple[str, ...] = ()
    # True for a service whose container holds state two copies must not share or duplicate
    # (a data volume, a read-position file, a lock, alerts it would send twice): a deploy
    # stops the old container before it starts the new one. Stateless services roll.
    stateful: bool = False

    @property
    def rolling(self) -> bool:
        """Replaced create-before-delete: the new container starts beside the old one and is
        healthy before the old one goes. Not for stateful services, nor for one that binds a
        host port (the new container could not bind it while the old one holds it)."""
        return not self.stateful and self.host_port is None and not self.public_ports

    @model_validator(mode="after")
    def _one_unless_rolling(self) -> "ServiceSpec":
        if self.replicas > 1 and not self.rolling:
            raise ValueError(f"{self.name} is stateful or binds a host port: it runs one replica")
        return self

    # Gets its own PostgreSQL role and database (as every `app` that depends on postgres does)
    # though not in the app tier: the Prefect server.
    postgres_client: bool = False

    @property
    def metrics_port(self) -> int | None:
        if self.metrics is None:
            return None
        return self.metrics.port or self.port


class Catalog(Frozen):
    """Every service of a stack, in start order, with the checks that span services."""

    services: tuple[ServiceSpec, ...]

    @model_validator(mode="after")
    def _consistent(self) -> "Catalog":
        names = [s.name for s in self.services]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"services declared twice: {', '.join(duplicates)}")
        for service in self.services:
            unknown = [d for d in service.depends_on if d not in names]
            if unknown:
                raise ValueError(f"{service.name} depends on unknown {', '.join(unknown)}")
            if service.postgres_client and "postgres" not in service.depends_on:
                raise ValueError(f"{service.name} is a PostgreSQL client but does not depend on postgres")
        prefixes = [s.route.path_prefix for s in self.services if s.route]
        if len(prefixes) != len(set(prefixes)):
            raise ValueError("two services share one gateway route prefix")
        return self

    def get(self, name: str) -> ServiceSpec:
        for service in self.services:
            if service.name == name:
                return service
        raise KeyError(name)

    def __contains__(self, name: object) -> bool:
        return any(s.name == name for s in self.services)

    @property
    def routed(self) -> tuple[ServiceSpec, ...]:
        return tuple(s for s in self.services if s.route)

    @property
    def scraped(self) -> tuple[ServiceSpec, ...]:
        return tuple(s for s in self.services if s.metrics)

    def public_ports(self) -> tuple[int, ...]:
        """Host ports open to the world (the firewall opens these and nothing else)."""
        return tuple(p.host for s in self.services for p in s.public_ports)

    def published_ports(self) -> dict[int, str]:
        """Host port -> service, for every port this stack binds on its host."""
        ports: dict[int, str] = {}
        for service in self.services:
            for port in (*(p.host for p in service.public_ports), service.host_port):
                if port is not None:
                    ports[port] = service.name
        return ports
