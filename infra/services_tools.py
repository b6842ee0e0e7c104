"""The tools of a stack, declared once: the SMTP relay every sender mails through, and
(per-stack toggles) pgAdmin, the k6 load-test runner and the docs site.

Nothing here is public; what an operator opens (pgAdmin, k6's REST API, the docs) is bound on
the host's loopback only, reached through an SSH tunnel.
"""

from __future__ import annotations

from components.docs_site import DOCS_SOURCE, LISTEN_PORT as DOCS_PORT
from components.docs_site import LOCAL_OUTPUT as DOCS_LOCAL_OUTPUT
from components.k6.settings import API_PORT as K6_API_PORT, health_test as k6_health_test
from components.mail.settings import RELAY_PORT
from components.pgadmin.settings import LISTEN_PORT as PGADMIN_PORT
from components.spec import HealthCheck, Limits, Route, ServiceSpec
from infra.catalog import PROJECT, http_check, loopback_port, source_digest
from infra.config import StackConfig


def smtp_check(port: int) -> HealthCheck:
    """Healthy while Postfix greets on `port` (its 220 banner), read over bash's /dev/tcp (the
    image has bash, no wget or curl)."""
    probe = f"exec 3<>/dev/tcp/127.0.0.1/{port} && head -n1 <&3 | grep -q '^220 .*ESMTP Postfix'"
    return HealthCheck(test=("CMD", "bash", "-c", probe))


def tool_services(config: StackConfig) -> list[ServiceSpec]:
    """The tools the stack turns on, in start order."""
    services = []
    if config.smtp_relay.enabled:
        upstream = f"relays to {config.smtp.host}:{config.smtp.port} over TLS" if config.smtp else "no upstream: mail is held"
        services.append(ServiceSpec(
            name="smtp-relay",
            image=config.smtp_relay.image,
            port=RELAY_PORT,
            tier="tools",
            description=f"Postfix relay for the stack's mail ({upstream})",
            health=smtp_check(RELAY_PORT),
            limits=Limits(memory_mb=64, cpus=0.25),
        ))
    if config.pgadmin.enabled:
        services.append(ServiceSpec(
            name="pgadmin",
            image=config.pgadmin.image,
            port=PGADMIN_PORT,
            tier="tools",
            description="pgAdmin 4 for the stack's PostgreSQL (SSH tunnel)",
            health=http_check(PGADMIN_PORT, "/misc/ping"),
            limits=Limits(memory_mb=384, cpus=0.5),
            host_port=loopback_port(config, "pgadmin"),
            depends_on=("postgres",),
        ))
    if config.docs.enabled:
        services.append(ServiceSpec(
            name="docs",
            # built from docs/ by the program; the tag is its content hash (less a local build's output)
            image=f"{PROJECT}/docs:{source_digest(DOCS_SOURCE, exclude=DOCS_LOCAL_OUTPUT)}",
            port=DOCS_PORT,
            tier="tools",
            description="Docs site (MkDocs Material), under the gateway at /docs/",
            health=http_check(DOCS_PORT, "/"),
            limits=Limits(memory_mb=32, cpus=0.25),
            route=Route(path_prefix="/docs/", cache_ttl_s=config.docs.cache_ttl_s, data_images=True),
            host_port=loopback_port(config, "docs") if config.docs.publish else None,
        ))
    if config.k6.enabled:
        services.append(ServiceSpec(
            name="k6",
            image=config.k6.image,
            port=K6_API_PORT,
            tier="tools",
            description="k6 load-test runner (`coderz loadtest`), REST API while a test runs",
            health=HealthCheck(test=k6_health_test()),
            limits=Limits(memory_mb=512, cpus=1.0),
            host_port=loopback_port(config, "k6"),
            depends_on=("gateway",),
        ))
    return services
