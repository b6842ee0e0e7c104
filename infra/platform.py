"""Wires the components of one stack together, in dependency order."""

from __future__ import annotations

import pulumi

from components.api import Api, ApiArgs, Database, RedisEndpoint
from components.host import DockerHost, DockerHostArgs
from components.postgres import Postgres, PostgresArgs, database_name
from components.redis import Redis, RedisArgs
from components.spec import Catalog
from infra.catalog import PYAPI_SOURCE, declare_services
from infra.config import Stack


def postgres_clients(catalog: Catalog) -> tuple[str, ...]:
    """Every service that depends on PostgreSQL gets its own role and database."""
    return tuple(s.name for s in catalog.services if "postgres" in s.depends_on)


def build(stack: Stack) -> dict[str, pulumi.Input]:
    """Create every resource of the stack; returns the stack outputs."""
    config, prefix = stack.config, stack.prefix
    catalog = declare_services(config)
    host = DockerHost(
        "host",
        DockerHostArgs(
            target=config.target,
            prefix=prefix,
            public_ports=catalog.public_ports(),
            ssh_private_key=stack.secrets.ssh_private_key,
        ),
    )
    shared = dict(prefix=prefix, network_name=host.network_name, provider=host.provider)

    postgres = Postgres(
        "postgres",
        PostgresArgs(
            spec=catalog.get("postgres"),
            clients=postgres_clients(catalog),
            max_connections=config.postgres.max_connections,
            keep_data=config.keeps_data,
            **shared,
        ),
    )
    redis = Redis("redis", RedisArgs(spec=catalog.get("redis"), keep_data=config.keeps_data, **shared))
    redis_endpoint = RedisEndpoint(host="redis", port=catalog.get("redis").port, password=redis.password)

    apis = {}
    for service, flavour in (("dotnet-api", "dotnet"), ("python-api", "python")):
        spec = catalog.get(service)
        apis[service] = Api(
            service,
            ApiArgs(
                spec=spec,
                flavour=flavour,
                environment=config.environment,
                database=Database(
                    host="postgres",
                    port=catalog.get("postgres").port,
                    name=database_name(service),
                    password=postgres.passwords[service],
                ),
                redis=redis_endpoint,
                build_context=PYAPI_SOURCE if flavour == "python" and config.apis.python.image is None else None,
                depends_on=[postgres, redis],
                **shared,
            ),
        )

    return {
        "docker_host": host.docker_host,
        "network": host.network_name,
        "services": {s.name: {"image": s.image, "port": s.port, "replicas": s.replicas} for s in catalog.services},
        "published_ports": {str(port): name for port, name in catalog.published_ports().items()},
        "postgres_admin_dsn": postgres.admin_dsn,
        "redis_url": redis.url,
    }
