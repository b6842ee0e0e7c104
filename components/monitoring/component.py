"""`Monitoring`: Prometheus, Alertmanager, Grafana and the exporters of one stack.

Each service's image, port, health check and limits come from its `ServiceSpec` in the
catalog (infra/services_monitoring.py); this component adds what running it needs: config
files (rendered in render.py), host mounts, the Prometheus data volume, secrets.
"""

from __future__ import annotations

from typing import Sequence

import pulumi
import pulumi_docker as docker
from pydantic import BaseModel, ConfigDict, model_validator

from components.container import ConfigFile, ContainerService, ContainerServiceArgs, Placement, VolumeMount, retained
from components.monitoring import render
from components.monitoring.settings import MonitoringConfig, SmtpConfig
from components.secrets import generated_password
from components.spec import Catalog, InputStr

GRAFANA_PROVISIONING = "/etc/grafana/provisioning"
GRAFANA_ADMIN_USER = "admin"
# cAdvisor collectors we do not chart or alert on: each adds many series per container.
CADVISOR_DISABLED = "advtcp,cpu_topology,hugetlb,percpu,process,referenced_memory,resctrl,sched,tcp,udp"
# The services this component runs, declared by infra/services_monitoring.py.
MONITORING_SERVICES = ("node-exporter", "cadvisor", "postgres-exporter", "redis-exporter",
                       "alertmanager", "prometheus", "grafana")


class MonitoringArgs(BaseModel):
    """What the monitoring tier needs from the stack: its catalog (which must hold the
    services of `monitoring_services`), config, network and provider, and the credentials
    the exporters and the mailer use (secret Outputs)."""

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    catalog: Catalog
    config: MonitoringConfig
    placement: Placement
    keeps_data: bool = False
    # postgresql://USER:PASSWORD@postgres:5432/postgres?sslmode=disable, a role with pg_monitor.
    postgres_dsn: InputStr
    redis_password: InputStr | None = None
    smtp: SmtpConfig | None = None
    smtp_password: InputStr | None = None
    # The gateway's public base URL (https://example.org); Grafana builds its links from it.
    public_url: str | None = None
    loki_enabled: bool = False
    loki_url: str = "http://loki:3100"
    elasticsearch_enabled: bool = False
    elasticsearch_url: str = "http://elasticsearch:9200"
    elasticsearch_index: str = "gateway-*"  # the logging pipeline's daily indices
    kubernetes: render.KubernetesTargets | None = None
    kubernetes_token: InputStr | None = None
    backup: render.BackupCheck | None = None
    # The stack's k6 runner pushes results: Prometheus receives remote writes, Grafana charts them.
    k6_results: bool = False
    # Resources the exporters wait for (the PostgreSQL and Redis components).
    depends_on: Sequence[pulumi.Resource] = ()

    @model_validator(mode="after")
    def _complete(self) -> "MonitoringArgs":
        missing = [s for s in MONITORING_SERVICES if s not in self.catalog]
        if missing:
            raise ValueError(f"the catalog lacks {', '.join(missing)} (add monitoring_services(config))")
        if self.kubernetes is not None and self.kubernetes_token is None:
            raise ValueError("kubernetes targets need kubernetes_token")
        if self.smtp is not None and self.smtp.user and self.smtp_password is None:
            raise ValueError("smtp.user needs smtp_password")
        return self


def _secret_env(key: str, value: pulumi.Input[str]) -> pulumi.Output[str]:
    return pulumi.Output.secret(value).apply(lambda v: f"{key}={v}")


class Monitoring(pulumi.ComponentResource):
    """Owns the monitoring containers, Prometheus' data volume and Grafana's admin password."""

    prometheus_url: pulumi.Output[str]
    alertmanager_url: pulumi.Output[str]
    grafana_url: pulumi.Output[str]
    grafana_admin_password: pulumi.Output[str]
    scrape_jobs: pulumi.Output[list[str]]

    def __init__(self, name: str, args: MonitoringArgs, *, opts: pulumi.ResourceOptions | None = None):
        super().__init__("coderz:monitoring:Monitoring", name, None, opts)
        catalog, config = args.catalog, args.config
        child = pulumi.ResourceOptions(parent=self)

        def run(service: str, **extra) -> ContainerService:
            return ContainerService(
                f"{name}-{service}",
                ContainerServiceArgs(spec=catalog.get(service), placement=args.placement, **extra),
                opts=child,
            )

        def url(service: str) -> str:
            return f"http://{service}:{catalog.get(service).port}"

        node = run(
            "node-exporter",
            command=["--path.procfs=/host/proc", "--path.sysfs=/host/sys", "--path.rootfs=/host/root"],
            volumes=[VolumeMount(container_path=c, host_path=h, read_only=True)
                     for h, c in (("/proc", "/host/proc"), ("/sys", "/host/sys"), ("/", "/host/root"))],
            # The host's process table, as node exporter's docs run it; its network stays the
            # stack's, so Prometheus finds it by name (host networking would leave the network).
            pid_mode="host",
        )
        cadvisor = run(
            "cadvisor",
            command=["--docker_only=true", f"--housekeeping_interval={config.scrape_interval_s}s",
                     f"--disable_metrics={CADVISOR_DISABLED}", *render.cadvisor_label_flags()],
            volumes=[VolumeMount(container_path=c, host_path=h, read_only=True) for h, c in (
                ("/", "/rootfs"), ("/var/run", "/var/run"), ("/sys", "/sys"),
                ("/var/lib/docker", "/var/lib/docker"), ("/dev/disk", "/dev/disk"))],
        )
        postgres_exporter = run(
            "postgres-exporter",
            envs=[_secret_env("DATA_SOURCE_NAME", args.postgres_dsn)],
            depends_on=list(args.depends_on),
        )
        # The exporters' specs depend on postgres and redis, so the catalog holds both.
        redis_envs = [f"REDIS_ADDR=redis://redis:{catalog.get('redis').port}"]
        if args.redis_password is not None:
            redis_envs.append(_secret_env("REDIS_PASSWORD", args.redis_password))
        redis_exporter = run("redis-exporter", envs=redis_envs, depends_on=list(args.depends_on))

        if args.smtp is not None and args.smtp_password is not None:
            # The SMTP password is written into the file: the whole file is a secret.
            alertmanager_config = pulumi.Output.secret(args.smtp_password).apply(
                lambda password: render.render_alertmanager_config(args.smtp, password))
        else:
            alertmanager_config = render.render_alertmanager_config(args.smtp)
        alertmanager = run(
            "alertmanager",
            command=render.alertmanager_flags(),
            files=[ConfigFile(path=render.ALERTMANAGER_CONFIG, content=alertmanager_config)],
        )

        volume = docker.Volume(f"{name}-prometheus-data", name=f"{args.placement.prefix}-prometheus-data",
                               opts=retained(args.keeps_data, self, args.placement.provider))
        prometheus_files = [
            ConfigFile(path=f"{render.CONFIG_DIR}/prometheus.yml", content=render.render_prometheus_config(
                catalog, scrape_interval_s=config.scrape_interval_s, stack=args.placement.prefix, kubernetes=args.kubernetes)),
            ConfigFile(path=f"{render.CONFIG_DIR}/rules.yml",
                       content=render.render_alert_rules(config.thresholds, backup=args.backup)),
        ]
        if args.kubernetes is not None:
            token_file, ca_file = render.kubernetes_files()
            prometheus_files.append(ConfigFile(path=token_file, content=pulumi.Output.secret(args.kubernetes_token)))
            if args.kubernetes.ca_certificate:
                prometheus_files.append(ConfigFile(path=ca_file, content=args.kubernetes.ca_certificate))
        prometheus = run(
            "prometheus",
            command=render.prometheus_flags(retention_days=config.retention_days, remote_write_receiver=args.k6_results),
            files=prometheus_files,
            volumes=[VolumeMount(container_path=render.PROMETHEUS_DATA, volume_name=volume.name)],
            depends_on=[alertmanager],
        )

        grafana_spec = catalog.get("grafana")
        sub_path = grafana_spec.route.path_prefix if grafana_spec.route else "/"
        root_url = f"{args.public_url.rstrip('/')}{sub_path}" if args.public_url else f"%(protocol)s://%(domain)s:%(http_port)s{sub_path}"
        password = generated_password(f"{name}-grafana-admin", parent=self)
        datasources = render.render_grafana_datasources(
            url("prometheus"),
            loki_url=args.loki_url if args.loki_enabled else None,
            elasticsearch_url=args.elasticsearch_url if args.elasticsearch_enabled else None,
            elasticsearch_index=args.elasticsearch_index,
        )
        grafana_files = [
            ConfigFile(path=f"{GRAFANA_PROVISIONING}/datasources/coderz.yml", content=datasources),
            ConfigFile(path=f"{GRAFANA_PROVISIONING}/dashboards/coderz.yml", content=render.render_grafana_dashboard_provider()),
            *(ConfigFile(path=f"{render.GRAFANA_DASHBOARDS_DIR}/{file}", content=text)
              for file, text in render.dashboards(kubernetes=args.kubernetes is not None, k6=args.k6_results).items()),
        ]
        grafana = run(
            "grafana",
            envs=[
                f"GF_SECURITY_ADMIN_USER={GRAFANA_ADMIN_USER}",
                _secret_env("GF_SECURITY_ADMIN_PASSWORD", password),
                f"GF_SERVER_ROOT_URL={root_url}",
                "GF_SERVER_SERVE_FROM_SUB_PATH=true",
                "GF_USERS_ALLOW_SIGN_UP=false",
                "GF_AUTH_ANONYMOUS_ENABLED=false",
                "GF_ANALYTICS_REPORTING_ENABLED=false",
                "GF_ANALYTICS_CHECK_FOR_UPDATES=false",
                *render.grafana_smtp_env(args.smtp),
                *([_secret_env("GF_SMTP_PASSWORD", args.smtp_password)] if args.smtp and args.smtp.user else []),
            ],
            files=grafana_files,
            depends_on=[prometheus],
        )

        self.services = {"node-exporter": node, "cadvisor": cadvisor, "postgres-exporter": postgres_exporter,
                         "redis-exporter": redis_exporter, "alertmanager": alertmanager,
                         "prometheus": prometheus, "grafana": grafana}
        self.prometheus_volume = volume
        self.prometheus_url = pulumi.Output.from_input(url("prometheus"))
        self.alertmanager_url = pulumi.Output.from_input(url("alertmanager"))
        # Through the gateway when its public URL is known, else where this host can reach it.
        if args.public_url:
            grafana_url = root_url
        elif grafana_spec.host_port:
            grafana_url = f"http://127.0.0.1:{grafana_spec.host_port}{sub_path}"
        else:
            grafana_url = sub_path
        self.grafana_url = pulumi.Output.from_input(grafana_url)
        self.grafana_admin_password = password
        self.scrape_jobs = pulumi.Output.from_input(render.scrape_job_names(catalog, args.kubernetes))
        self.register_outputs({
            "prometheus_url": self.prometheus_url,
            "alertmanager_url": self.alertmanager_url,
            "grafana_url": self.grafana_url,
            "grafana_admin_password": self.grafana_admin_password,
            "scrape_jobs": self.scrape_jobs,
            "prometheus_volume": volume.name,
        })
