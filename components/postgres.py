"""`Postgres`: the stack's PostgreSQL server, its data volume and one database per API.

Passwords are generated here and leave only as secret outputs. The init SQL (roles,
databases) is uploaded into the container as secret content and run by the image on a fresh
data volume; the server's tuning follows the container's memory limit.
"""

from __future__ import annotations

from typing import Sequence

import pulumi
import pulumi_docker as docker
from pydantic import BaseModel, ConfigDict

from components.container import ConfigFile, ContainerService, ContainerServiceArgs, VolumeMount, retained
from components.postgres_init import AppDatabase, postgres_command, render_init_sql
from components.secrets import generated_password
from components.spec import InputStr, ServiceSpec

DATA_DIR = "/var/lib/postgresql/data"


def database_name(service: str) -> str:
    """The database and role of a service: `python-api` -> `python_api`."""
    return service.replace("-", "_")


class PostgresArgs(BaseModel):
    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    spec: ServiceSpec
    prefix: str
    network_name: InputStr
    provider: docker.Provider
    clients: Sequence[str]
    max_connections: int
    keep_data: bool


class Postgres(pulumi.ComponentResource):
    """Owns the PostgreSQL container, its volume, the superuser and one role+database per client."""

    host: pulumi.Output[str]
    port: pulumi.Output[int]
    admin_dsn: pulumi.Output[str]
    database_urls: dict[str, pulumi.Output[str]]

    def __init__(self, name: str, args: PostgresArgs, *, opts: pulumi.ResourceOptions | None = None):
        super().__init__("coderz:data:Postgres", name, None, opts)
        spec = args.spec
        child = pulumi.ResourceOptions(parent=self)

        admin_password = generated_password(f"{name}-admin-password", parent=self)
        client_passwords = {
            client: generated_password(f"{name}-{database_name(client)}-password", parent=self) for client in args.clients
        }

        volume = docker.Volume(
            f"{name}-data",
            name=f"{args.prefix}-{spec.name}-data",
            opts=retained(args.keep_data, self, args.provider),
        )
        init_sql = pulumi.Output.all(*client_passwords.values()).apply(
            lambda secrets: render_init_sql(
                [
                    AppDatabase(name=database_name(c), owner=database_name(c), password=s)
                    for c, s in zip(client_passwords, secrets)
                ]
            )
        )
        self.service = ContainerService(
            name,
            ContainerServiceArgs(
                spec=spec,
                prefix=args.prefix,
                network_name=args.network_name,
                provider=args.provider,
                envs=[
                    "POSTGRES_USER=postgres",
                    "POSTGRES_DB=postgres",
                    f"PGDATA={DATA_DIR}/pgdata",
                    pulumi.Output.concat("POSTGRES_PASSWORD=", admin_password),
                ],
                files=[ConfigFile(path="/docker-entrypoint-initdb.d/10-apps.sql", content=pulumi.Output.secret(init_sql))],
                volumes=[VolumeMount(container_path=DATA_DIR, volume_name=volume.name)],
                command=postgres_command(spec.limits.memory_mb, args.max_connections),
            ),
            opts=child,
        )

        self.host = pulumi.Output.from_input(spec.name)
        self.port = pulumi.Output.from_input(spec.port)
        self.admin_dsn = pulumi.Output.secret(
            pulumi.Output.format("postgresql://postgres:{0}@{1}:{2}/postgres?sslmode=disable", admin_password, spec.name, spec.port)
        )
        self.database_urls = {
            client: pulumi.Output.secret(
                pulumi.Output.format(
                    "postgresql://{0}:{1}@{2}:{3}/{0}", database_name(client), secret, spec.name, spec.port
                )
            )
            for client, secret in client_passwords.items()
        }
        self.passwords = client_passwords
        self.register_outputs(
            {"host": self.host, "port": self.port, "admin_dsn": self.admin_dsn, "database_urls": self.database_urls}
        )
