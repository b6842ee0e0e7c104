"""Wires the components of one stack together, in dependency order: host, data, APIs, gateway,
then the logging and monitoring tiers the stack turns on."""

from __future__ import annotations

import gc

import pulumi

from components.api import Api, ApiArgs, Database, RedisEndpoint
from components.backup.component import Backup, BackupArgs, BackupPlan
from components.gateway.component import Gateway, GatewayArgs, GatewayTls
from components.host import DockerHost, DockerHostArgs
from components.logging.component import Logging, LoggingArgs
from components.monitoring.component import Monitoring, MonitoringArgs
from components.monitoring.render import BackupCheck
from components.postgres import DATA_DIR, Postgres, PostgresArgs, database_name
from components.redis import Redis, RedisArgs
from components.spec import Catalog
from infra.catalog import PYAPI_SOURCE, declare_services
from infra.config import Stack
from infra.services_logging import GATEWAY_INDEX_PATTERN

API_FLAVOURS = {"dotnet-api": "dotnet", "python-api": "python"}


def relax_garbage_collection() -> None:
    """A Pulumi program builds one large graph of objects that lives until the process ends;
    the cyclic collector's repeated full passes over it cost more than they free, and grow
    with the graph (bench/mock_eval.py: about 40% of a 100-replica evaluation)."""
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)


def postgres_clients(catalog: Catalog) -> tuple[str, ...]:
    """Every application that depends on PostgreSQL gets its own role and database."""
    return tuple(s.name for s in catalog.services if s.tier == "app" and "postgres" in s.depends_on)


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
    shared = dict(placement=host.placement)
    plan = BackupPlan(config=config.backup, stack=stack.name, postgres_image=config.postgres.image,
                      s3_keys=stack.secrets.backup_s3_keys) if config.backup.enabled else None

    postgres = Postgres(
        "postgres",
        PostgresArgs(
            spec=catalog.get("postgres"),
            clients=postgres_clients(catalog),
            max_connections=config.postgres.max_connections,
            keep_data=config.keeps_data,
            monitor_role=config.monitoring.enabled,
            shell=host.shell,
            backup=plan,
            **shared,
        ),
    )
    if plan is not None:
        Backup("backup", BackupArgs(spec=catalog.get("backup"), plan=plan, volumes=postgres.backup_volumes,
                                    data_dir=DATA_DIR, depends_on=[postgres], **shared))
    redis = Redis("redis", RedisArgs(spec=catalog.get("redis"), keep_data=config.keeps_data, **shared))
    redis_endpoint = RedisEndpoint(host="redis", port=catalog.get("redis").port, password=redis.password)

    apis = {
        service: Api(
            service,
            ApiArgs(
                spec=catalog.get(service),
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
        for service, flavour in API_FLAVOURS.items()
    }

    tls = config.gateway.tls
    # The gateway waits for Redis only: it resolves the APIs at request time.
    gateway = Gateway(
        "gateway",
        GatewayArgs(
            catalog=catalog,
            redis_password=redis.password,
            domain=config.gateway.domain,
            tls=GatewayTls(certificate=tls.certificate, private_key=stack.secrets.tls_private_key) if tls else None,
            public_https_port=config.ports.https or 443,
            rate_limit_rps=config.gateway.rate_limit_rps,
            rate_limit_burst=config.gateway.rate_limit_burst,
            depends_on=[redis],
            **shared,
        ),
    )

    logging = Logging(
        "logging",
        LoggingArgs(catalog=catalog, config=config.logging, keeps_data=config.keeps_data, **shared),
    )
    outputs: dict[str, pulumi.Input] = {
        "gateway_url": gateway.url,
        "gateway_routes": gateway.routes,
        "docker_host": host.docker_host,
        "network": host.network_name,
        "services": {s.name: {"image": s.image, "port": s.port, "replicas": s.replicas} for s in catalog.services},
        "published_ports": {str(port): name for port, name in catalog.published_ports().items()},
        "api_containers": {name: api.container_names for name, api in apis.items()},
        "postgres_admin_dsn": postgres.admin_dsn,
        "redis_url": redis.url,
        "loki_url": logging.loki_url,
        "elasticsearch_url": logging.elasticsearch_url,
        "kibana_url": logging.kibana_url,
    }

    if config.monitoring.enabled:
        monitoring = Monitoring(
            "monitoring",
            MonitoringArgs(
                catalog=catalog,
                config=config.monitoring,
                keeps_data=config.keeps_data,
                postgres_dsn=postgres.monitor_dsn,
                redis_password=redis.password,
                smtp=config.smtp,
                smtp_password=stack.secrets.smtp_password,
                public_url=gateway_public_url(stack),
                loki_enabled=logging.loki_enabled,
                loki_url=logging.loki_url or "http://loki:3100",
                elasticsearch_enabled=logging.elasticsearch_enabled,
                elasticsearch_url=logging.elasticsearch_url or "http://elasticsearch:9200",
                elasticsearch_index=GATEWAY_INDEX_PATTERN,
                # The backup-age alerts exist where a backup job does.
                backup=BackupCheck(max_age_hours=config.backup.max_age_hours) if plan is not None else None,
                depends_on=[postgres, redis],
                **shared,
            ),
        )
        outputs.update(
            prometheus_url=monitoring.prometheus_url,
            grafana_url=monitoring.grafana_url,
            grafana_admin_password=monitoring.grafana_admin_password,
            scrape_jobs=monitoring.scrape_jobs,
        )
    return outputs


def gateway_public_url(stack: Stack) -> str | None:
    """The gateway's public base URL where the stack has a domain (Grafana builds links from it)."""
    config = stack.config
    if not config.gateway.domain:
        return None
    if config.gateway.tls:
        https = config.ports.https or 443
        return f"https://{config.gateway.domain}" + ("" if https == 443 else f":{https}")
    return f"http://{config.gateway.domain}" + ("" if config.ports.http == 80 else f":{config.ports.http}")
