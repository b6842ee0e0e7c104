"""`PgAdmin`: pgAdmin 4 (pinned dpage/pgadmin4) for the stack's PostgreSQL.

Owns its container, its data volume (kept where the stack keeps data) and its generated admin
password. Its server list is provisioned from the catalog, with the monitor role's password in a
pgpass file only pgAdmin's user reads (settings.py says how it gets there); it binds on the
host's loopback only.
"""

from __future__ import annotations

import pulumi
import pulumi_docker as docker
from pydantic import BaseModel, ConfigDict, model_validator

from components.container import ConfigFile, ContainerService, ContainerServiceArgs, Placement, VolumeMount, retained
from components.pgadmin.settings import (CONFIG, DATA_DIR, LISTEN_PORT, MONITOR_PGPASS, PGADMIN_UID, SERVERS_FILE,
                                        START_SCRIPT, PgAdminConfig, render_pgpass, render_servers, render_start_script)
from components.secrets import generated_password
from components.spec import InputStr, ServiceSpec


class PgAdminArgs(BaseModel):
    """pgAdmin's declaration and settings, and the PostgreSQL it lists (with the role it logs
    in as and that role's password, a secret Output)."""

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    spec: ServiceSpec
    postgres: ServiceSpec
    username: str
    password: InputStr
    config: PgAdminConfig
    placement: Placement
    keep_data: bool = False

    @model_validator(mode="after")
    def _loopback_only(self) -> "PgAdminArgs":
        if self.spec.public_ports:
            raise ValueError("pgAdmin is never public: 127.0.0.1 only")
        if self.spec.port != LISTEN_PORT:
            raise ValueError(f"pgAdmin listens on {LISTEN_PORT}, the spec says {self.spec.port}")
        if self.password is None:
            raise ValueError(f"pgAdmin logs in as {self.username}: its password is needed (no monitor role?)")
        return self


class PgAdmin(pulumi.ComponentResource):
    """Owns the pgAdmin container, its volume and its admin password."""

    admin_password: pulumi.Output[str]
    url: pulumi.Output[str]

    def __init__(self, name: str, args: PgAdminArgs, *, opts: pulumi.ResourceOptions | None = None):
        super().__init__("coderz:tools:PgAdmin", name, None, opts)
        provider = args.placement.provider
        password = generated_password(f"{name}-admin", parent=self)
        volume = docker.Volume(f"{name}-data", name=f"{args.placement.prefix}-{args.spec.name}-data",
                               opts=retained(args.keep_data, self, provider))
        servers = render_servers(args.postgres, username=args.username, group=args.placement.prefix)
        pgpass = pulumi.Output.secret(args.password).apply(
            lambda secret: render_pgpass(args.postgres, username=args.username, password=secret))
        self.service = ContainerService(name, ContainerServiceArgs(
            spec=args.spec,
            placement=args.placement,
            envs=[
                f"PGADMIN_DEFAULT_EMAIL={args.config.admin_email}",
                pulumi.Output.secret(password).apply(lambda p: f"PGADMIN_DEFAULT_PASSWORD={p}"),
                f"PGADMIN_SERVER_JSON_FILE={SERVERS_FILE}",
                f"PGADMIN_LISTEN_PORT={LISTEN_PORT}",
                # the image runs its own Postfix for password-reset mail by default; not here
                "PGADMIN_DISABLE_POSTFIX=true",
                *(f"PGADMIN_CONFIG_{key}={value}" for key, value in CONFIG.items()),
            ],
            files=[
                ConfigFile(path=SERVERS_FILE, content=servers),
                ConfigFile(path=MONITOR_PGPASS, content=pgpass, owner=PGADMIN_UID, group="0", permissions="0400"),
                # read by sh (no exec bit needed): uploads are root's, the image runs as 5050
                ConfigFile(path=START_SCRIPT, content=render_start_script(args.config.admin_email)),
            ],
            entrypoint=["/bin/sh", START_SCRIPT],
            volumes=[VolumeMount(container_path=DATA_DIR, volume_name=volume.name)],
        ), opts=pulumi.ResourceOptions(parent=self))
        self.volume = volume
        self.admin_password = password
        self.url = pulumi.Output.from_input(f"http://127.0.0.1:{args.spec.host_port}/" if args.spec.host_port else "")
        self.register_outputs({"admin_password": password, "url": self.url, "volume": volume.name})
