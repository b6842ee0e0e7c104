"""Wires the components of one stack together, in dependency order: host, data, APIs, gateway,
then the logging and monitoring tiers the stack turns on."""

from __future__ import annotations

import gc

import pulumi

from components.api import DB_POOL_PER_REPLICA, Api, ApiArgs, Database, RedisEndpoint
from components.backup.component import Backup, BackupArgs, BackupPlan
from components.gateway.component import Gateway, GatewayArgs, GatewayTls
from components.gateway.site import site_files
from components.host import DockerHost, DockerHostArgs
from components.k3s.cluster import K3sCluster, K3sClusterArgs
from components.k3s import pki
from components.k3s.workloads import MONITOR, K3sWorkloads, K3sWorkloadsArgs
from components.logging.component import Logging, LoggingArgs
from components.mail.relay import SmtpRelay, SmtpRelayArgs, client_config
from components.monitoring.settings import SmtpConfig
from components.docs_site import DocsSite, DocsSiteArgs
from components.k6.component import K6Runner, K6RunnerArgs
from components.pgadmin.component import PgAdmin, PgAdminArgs
from components.monitoring.component import Monitoring, MonitoringArgs
from components.monitoring.render import BackupCheck, KubernetesTargets
from components.prefect.component import DB_MAX_OVERFLOW as PREFECT_DB_MAX_OVERFLOW
from components.prefect.component import DB_POOL_SIZE as PREFECT_DB_POOL_SIZE
from components.prefect.component import Prefect, PrefectArgs
from components.postgres import DATA_DIR, MONITOR_ROLE, Postgres, PostgresArgs, database_name
from components.redis import Redis, RedisArgs
from components.spec import Catalog
from infra.catalog import PYAPI_SOURCE, declare_services, loopback_port
from infra.config import Stack
from infra.services_kubernetes import K3S_API_PORT
from infra.services_logging import GATEWAY_INDEX_PATTERN
from infra.services_orchestration import FLOWS_SOURCE

API_FLAVOURS = {"dotnet-api": "dotnet", "python-api": "python"}


def relax_garbage_collection() -> None:
    """A Pulumi program builds one large graph of objects that lives until the process ends;
    the cyclic collector's repeated full passes over it cost more than they free, and grow
    with the graph (bench/mock_eval.py: about 40% of a 100-replica evaluation)."""
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)


def postgres_clients(catalog: Catalog) -> tuple[str, ...]:
    """Every application that depends on PostgreSQL, and every service declared a client,
    gets its own role and database."""
    return tuple(
        s.name for s in catalog.services if (s.tier == "app" or s.postgres_client) and "postgres" in s.depends_on
    )


# PostgreSQL keeps this many connections for superusers (its superuser_reserved_connections
# default): the role updates through `docker exec psql` and an operator's session use them.
SUPERUSER_RESERVED_CONNECTIONS = 3
# postgres_exporter holds one connection for its built-in queries and one for its collectors.
EXPORTER_CONNECTIONS = 2


def postgres_connections(catalog: Catalog) -> dict[str, int]:
    """The most connections each PostgreSQL client of the stack may open, all replicas together."""
    per_replica = {api: DB_POOL_PER_REPLICA[flavour] for api, flavour in API_FLAVOURS.items()}
    per_replica["prefect-server"] = PREFECT_DB_POOL_SIZE + PREFECT_DB_MAX_OVERFLOW
    wanted = {name: catalog.get(name).replicas * per_replica[name] for name in postgres_clients(catalog)}
    if "postgres-exporter" in catalog:
        wanted["postgres-exporter"] = EXPORTER_CONNECTIONS
    return wanted


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
            bridge_ports=host_bridge_ports(stack),
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
                                    image_id=postgres.image_id, data_dir=DATA_DIR, depends_on=[postgres], **shared))
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
            acme=config.gateway.acme,
            keep_data=config.keeps_data,
            public_https_port=config.ports.https or 443,
            rate_limit_rps=config.gateway.rate_limit_rps,
            rate_limit_burst=config.gateway.rate_limit_burst,
            site=site_files() if config.gateway.landing_page else {},
            depends_on=[redis],
            shell=host.shell,
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

    smtp, smtp_password, outputs["smtp_endpoint"] = build_mail(stack, catalog, shared)
    if config.pgadmin.enabled:
        pgadmin = PgAdmin("pgadmin", PgAdminArgs(spec=catalog.get("pgadmin"), postgres=catalog.get("postgres"),
                                                 username=MONITOR_ROLE, password=postgres.monitor_password,
                                                 config=config.pgadmin, keep_data=config.keeps_data, **shared),
                          opts=pulumi.ResourceOptions(depends_on=[postgres]))
        outputs.update(pgadmin_url=pgadmin.url, pgadmin_admin_password=pgadmin.admin_password,
                       # what pgAdmin logs in with, for an operator's psql through the same tunnel
                       postgres_monitor_password=postgres.monitor_password)
    if config.docs.enabled:
        outputs["docs_url"] = DocsSite("docs", DocsSiteArgs(spec=catalog.get("docs"), **shared)).url
    if config.k6.enabled:
        remote_write = f"http://prometheus:{catalog.get('prometheus').port}/api/v1/write" if "prometheus" in catalog else None
        k6 = K6Runner("k6", K6RunnerArgs(spec=catalog.get("k6"), config=config.k6, remote_write_url=remote_write, **shared),
                      opts=pulumi.ResourceOptions(depends_on=[gateway]))
        outputs["k6_container"] = k6.container_name

    kubernetes, kubernetes_token, monitor_kubeconfig = None, None, None
    if config.k3s.enabled:
        cluster, workloads = build_kubernetes(stack, catalog, host)
        outputs.update(kubeconfig=cluster.kubeconfig, kubernetes_api=cluster.api_server)
        # Prometheus reaches the cluster where the gateway does: the k3s alias, or the host's address.
        k3s_spec = catalog.get("k3s")
        in_network = k3s_spec.route.upstream_host or k3s_spec.name
        kubernetes = KubernetesTargets(
            api_server=f"{in_network}:{k3s_spec.port}",
            kube_state_metrics=f"{in_network}:{config.k3s.kube_state_metrics_node_port}",
            ca_certificate=cluster.ca_certificate,
        )
        kubernetes_token = workloads.monitor_token
        # the k8s-health flow reads the cluster as the read-only monitor identity
        monitor_kubeconfig = pki.monitor_kubeconfig(cluster.pki, f"https://{kubernetes.api_server}", kubernetes_token,
                                                    user=MONITOR, cluster=prefix)

    if config.monitoring.enabled:
        monitoring = Monitoring(
            "monitoring",
            MonitoringArgs(
                catalog=catalog,
                config=config.monitoring,
                keeps_data=config.keeps_data,
                postgres_dsn=postgres.monitor_dsn,
                redis_password=redis.password,
                smtp=smtp,
                smtp_password=smtp_password,
                public_url=gateway_public_url(stack),
                loki_enabled=logging.loki_enabled,
                loki_url=logging.loki_url or "http://loki:3100",
                elasticsearch_enabled=logging.elasticsearch_enabled,
                elasticsearch_url=logging.elasticsearch_url or "http://elasticsearch:9200",
                elasticsearch_index=GATEWAY_INDEX_PATTERN,
                kubernetes=kubernetes,
                kubernetes_token=kubernetes_token,
                # The backup-age alerts exist where a backup job does.
                backup=BackupCheck(max_age_hours=config.backup.max_age_hours) if plan is not None else None,
                k6_results=config.k6.enabled,
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

    if config.prefect.enabled:
        server = catalog.get("prefect-server")
        prefect = Prefect(
            "prefect",
            PrefectArgs(
                catalog=catalog,
                config=config.prefect,
                database=Database(
                    host="postgres",
                    port=catalog.get("postgres").port,
                    name=database_name(server.name),
                    password=postgres.passwords[server.name],
                ),
                flows_source=FLOWS_SOURCE,
                keeps_data=config.keeps_data,
                thresholds=config.monitoring.thresholds if config.monitoring.enabled else None,
                # the daily summary reports the last good backup, from the metric the alerts read
                backup_metric=BackupCheck().metric if plan is not None and config.monitoring.enabled else None,
                # the flows mail through the stack's relay, as Alertmanager and Grafana do
                smtp=smtp,
                smtp_password=smtp_password,
                kubeconfig=monitor_kubeconfig,
                # the server creates its schema on start: its role and database must exist
                depends_on=[postgres.apply_roles],
                **shared,
            ),
        )
        outputs.update(
            prefect_ui_path=prefect.ui_path,
            prefect_auth_string=prefect.auth_string,
            prefect_deployments=prefect.deployments,
        )
    return outputs


def build_mail(stack: Stack, catalog: Catalog, shared: dict) -> tuple[SmtpConfig | None, pulumi.Input | None, pulumi.Input | None]:
    """Where the stack's senders mail (Alertmanager, Grafana; `smtp_endpoint` for the Prefect
    flows): the relay when the stack runs one, else the upstream itself. Returns the SMTP
    settings for senders, their password (None through the relay) and the endpoint: a new
    sender (the Prefect flows' component) takes the same pair as Monitoring does."""
    config = stack.config
    upstream, password = config.smtp, stack.secrets.smtp_password
    if not config.smtp_relay.enabled:
        return upstream, password, f"{upstream.host}:{upstream.port}" if upstream else None
    spec = catalog.get("smtp-relay")
    relay = SmtpRelay("smtp-relay", SmtpRelayArgs(spec=spec, config=config.smtp_relay, upstream=upstream,
                                                  upstream_password=password, **shared))
    return (client_config(upstream, spec) if upstream else None), None, relay.endpoint


def host_bridge_ports(stack: Stack) -> tuple[int, ...]:
    """What the stack's containers reach on the host itself: a k3s installed on an SSH target
    (API for Prometheus, NodePorts for the gateway and Prometheus)."""
    k3s = stack.config.k3s
    if not (k3s.enabled and stack.config.target.kind == "ssh"):
        return ()
    return (K3S_API_PORT, k3s.web.node_port, k3s.kube_state_metrics_node_port)


def build_kubernetes(stack: Stack, catalog: Catalog, host: DockerHost) -> tuple[K3sCluster, K3sWorkloads]:
    """The k3s server (container or host install) and the workloads it runs."""
    config = stack.config
    cluster = K3sCluster(
        "k3s",
        K3sClusterArgs(
            config=config.k3s,
            spec=catalog.get("k3s"),
            placement=host.placement,
            target=config.target,
            shell=host.shell,
            keep_data=config.keeps_data,
            local_port=loopback_port(config, "k3s"),
            ssh_key_path=host.ssh_key_path,
        ),
        opts=pulumi.ResourceOptions(depends_on=[host]),
    )
    workloads = K3sWorkloads("k3s-workloads", K3sWorkloadsArgs(config=config.k3s, provider=cluster.provider))
    return cluster, workloads


def gateway_public_url(stack: Stack) -> str | None:
    """The gateway's public base URL where the stack has a domain (Grafana builds links from it)."""
    config = stack.config
    if not config.gateway.domain:
        return None
    if config.gateway.tls_mode:
        https = config.ports.https or 443
        return f"https://{config.gateway.domain}" + ("" if https == 443 else f":{https}")
    return f"http://{config.gateway.domain}" + ("" if config.ports.http == 80 else f":{config.ports.http}")
