"""`Prefect`: the orchestration tier of one stack: the Prefect server, the Docker socket proxy
and the flows runner, with the runner's state volume and the API's auth string.

Each service's image, port, health check and limits come from its `ServiceSpec` in the
catalog (infra/services_orchestration.py); this component adds what running it needs. The
API (and so the UI's data) is behind Prefect's own basic auth (`PREFECT_SERVER_API_AUTH_STRING`,
a generated password); the runner authenticates with the same string.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import pulumi
import pulumi_docker as docker
from pydantic import BaseModel, ConfigDict, model_validator

from components.api import Database
from components.container import ConfigFile, ContainerService, ContainerServiceArgs, Placement, VolumeMount, retained
from components.monitoring.settings import AlertThresholds, SmtpConfig
from components.prefect import render
from components.prefect.settings import PrefectConfig
from components.secrets import generated_password
from components.spec import Catalog, InputStr

# The services this component runs, declared by infra/services_orchestration.py.
PREFECT_SERVICES = ("prefect-server", "docker-proxy", "flows-runner")
AUTH_USER = "admin"
DOCKER_SOCKET = "/var/run/docker.sock"


# The server's SQLAlchemy pool: at most DB_POOL_SIZE + DB_MAX_OVERFLOW PostgreSQL connections.
DB_POOL_SIZE, DB_MAX_OVERFLOW = 5, 5


class PrefectArgs(BaseModel):
    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    catalog: Catalog
    config: PrefectConfig
    placement: Placement
    # the server's own PostgreSQL role and database (the role is named like the database)
    database: Database
    flows_source: Path
    keeps_data: bool = False
    thresholds: AlertThresholds | None = None
    smtp: SmtpConfig | None = None
    smtp_password: InputStr | None = None
    backup_metric: str | None = None
    # The k3s cluster, when the stack has one: its kubeconfig (k3s.yaml with the host's address,
    # a secret), or an API URL with a bearer token.
    kubeconfig: InputStr | None = None
    kubernetes: render.KubernetesApi | None = None
    kubernetes_token: InputStr | None = None
    depends_on: Sequence[pulumi.Resource] = ()

    @model_validator(mode="after")
    def _complete(self) -> "PrefectArgs":
        missing = [s for s in PREFECT_SERVICES if s not in self.catalog]
        if missing:
            raise ValueError(f"the catalog lacks {', '.join(missing)} (add orchestration_services(config))")
        if self.kubernetes is not None and self.kubernetes_token is None:
            raise ValueError("kubernetes needs kubernetes_token")
        if self.kubernetes is not None and self.kubeconfig is not None:
            raise ValueError("give the cluster as kubeconfig or as kubernetes + token, not both")
        if self.smtp is not None and self.smtp.user and self.smtp_password is None:
            raise ValueError("smtp.user needs smtp_password")
        return self


def _secret_env(key: str, value: pulumi.Input[str]) -> pulumi.Output[str]:
    return pulumi.Output.secret(pulumi.Output.concat(key, "=", value))


class Prefect(pulumi.ComponentResource):
    """Owns the Prefect server, socket proxy and runner containers, the runner's state volume
    and the API auth password."""

    api_url: pulumi.Output[str]
    ui_path: pulumi.Output[str]
    auth_string: pulumi.Output[str]
    deployments: pulumi.Output[dict[str, str]]

    def __init__(self, name: str, args: PrefectArgs, *, opts: pulumi.ResourceOptions | None = None):
        super().__init__("coderz:orchestration:Prefect", name, None, opts)
        catalog, child = args.catalog, pulumi.ResourceOptions(parent=self)
        server_spec, proxy_spec, runner_spec = (catalog.get(s) for s in PREFECT_SERVICES)
        base = server_spec.route.path_prefix.rstrip("/")  # /prefect: UI there, API at /prefect/api

        password = generated_password(f"{name}-api-auth", parent=self)
        auth_string = pulumi.Output.secret(pulumi.Output.concat(AUTH_USER, ":", password))
        db = args.database
        self.server = ContainerService(
            f"{name}-server",
            ContainerServiceArgs(
                spec=server_spec,
                placement=args.placement,
                command=["prefect", "server", "start"],
                envs=[
                    "PREFECT_SERVER_API_HOST=0.0.0.0",
                    f"PREFECT_SERVER_API_PORT={server_spec.port}",
                    f"PREFECT_SERVER_API_BASE_PATH={base}/api",
                    f"PREFECT_UI_SERVE_BASE={base}/",
                    # the browser's path to the API, through the gateway or the loopback port alike
                    f"PREFECT_UI_API_URL={base}/api",
                    "PREFECT_SERVER_ANALYTICS_ENABLED=false",
                    # bounded, so the stack's connection budget (infra/platform.py) holds
                    f"PREFECT_SERVER_DATABASE_SQLALCHEMY_POOL_SIZE={DB_POOL_SIZE}",
                    f"PREFECT_SERVER_DATABASE_SQLALCHEMY_MAX_OVERFLOW={DB_MAX_OVERFLOW}",
                    _secret_env("PREFECT_SERVER_API_AUTH_STRING", auth_string),
                    _secret_env("PREFECT_API_DATABASE_CONNECTION_URL", pulumi.Output.format(
                        "postgresql+asyncpg://{0}:{1}@{2}:{3}/{0}", db.name, db.password, db.host, db.port)),
                ],
                depends_on=list(args.depends_on),
            ),
            opts=child,
        )
        self.proxy = ContainerService(
            f"{name}-docker-proxy",
            ContainerServiceArgs(
                spec=proxy_spec,
                placement=args.placement,
                envs=render.socket_proxy_env(),
                volumes=[VolumeMount(container_path=DOCKER_SOCKET, host_path=DOCKER_SOCKET, read_only=True)],
            ),
            opts=child,
        )

        state = docker.Volume(f"{name}-flows-state", name=f"{args.placement.prefix}-flows-state",
                              opts=retained(args.keeps_data, self, args.placement.provider))
        flows_config = render.render_flows_config(
            catalog,
            prefix=args.placement.prefix,
            prefect=args.config,
            thresholds=args.thresholds,
            smtp=args.smtp,
            docker_url=f"http://{proxy_spec.name}:{proxy_spec.port}",
            backup_metric=args.backup_metric,
            kubernetes=render.KubernetesApi(kubeconfig_file=render.KUBECONFIG_PATH) if args.kubeconfig is not None
            else args.kubernetes,
        )
        runner_envs: list[InputStr] = [
            f"CODERZ_FLOWS_CONFIG={render.CONFIG_PATH}",
            f"PREFECT_API_URL=http://{server_spec.name}:{server_spec.port}{base}/api",
            _secret_env("PREFECT_API_AUTH_STRING", auth_string),
            "PREFECT_RUNNER_SERVER_ENABLE=true",
            "PREFECT_RUNNER_SERVER_HOST=0.0.0.0",
            f"PREFECT_RUNNER_SERVER_PORT={runner_spec.port}",
        ]
        if args.smtp_password is not None:
            runner_envs.append(_secret_env("SMTP_PASSWORD", args.smtp_password))
        if args.kubernetes_token is not None:
            runner_envs.append(_secret_env("KUBERNETES_TOKEN", args.kubernetes_token))
        self.runner = ContainerService(
            f"{name}-flows-runner",
            ContainerServiceArgs(
                spec=runner_spec,
                placement=args.placement,
                build_context=args.flows_source,
                envs=runner_envs,
                files=[ConfigFile(path=render.CONFIG_PATH, content=flows_config)] + (
                    [ConfigFile(path=render.KUBECONFIG_PATH, content=pulumi.Output.secret(args.kubeconfig))]
                    if args.kubeconfig is not None else []),
                volumes=[VolumeMount(container_path=render.STATE_DIR, volume_name=state.name)],
                depends_on=[self.server, self.proxy],
            ),
            opts=child,
        )

        self.api_url = pulumi.Output.from_input(f"http://{server_spec.name}:{server_spec.port}{base}/api")
        self.ui_path = pulumi.Output.from_input(f"{base}/")
        self.auth_string = auth_string
        self.deployments = pulumi.Output.from_input(args.config.flows.effective())
        self.register_outputs({"api_url": self.api_url, "ui_path": self.ui_path, "auth_string": self.auth_string,
                               "deployments": self.deployments, "state_volume": state.name})
