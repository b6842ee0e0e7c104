"""`Postgres`: the stack's PostgreSQL server, its data volume and one database per API.

Passwords are generated here and leave only as secret outputs. The init SQL (roles,
databases) is uploaded into the container as secret content and run by the image on a fresh
data volume; the server's tuning follows the container's memory limit.
"""

from __future__ import annotations

import hashlib
from typing import Sequence

import pulumi
import pulumi_docker as docker
from pydantic import BaseModel, ConfigDict

from components.backup.component import REPO_DIR, SOCKET_DIR, BackupPlan, BackupVolumes
from components.backup.render import archive_settings
from components.container import ConfigFile, ContainerService, ContainerServiceArgs, Placement, VolumeMount, retained
from components.host import HostShell
from components.postgres_init import AppDatabase, MonitorRole, postgres_command, render_init_sql
from components.secrets import generated_password
from components.spec import ServiceSpec

DATA_DIR = "/var/lib/postgresql/data"
INIT_SQL = "/docker-entrypoint-initdb.d/10-apps.sql"
MONITOR_ROLE = "metrics"
# Docker's default /dev/shm (64 MB) is too small for parallel queries and large sorts.
SHM_SIZE_MB = 256


def database_name(service: str) -> str:
    """The database and role of a service: `python-api` -> `python_api`."""
    return service.replace("-", "_")


class PostgresArgs(BaseModel):
    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    spec: ServiceSpec
    placement: Placement
    clients: Sequence[str]
    max_connections: int
    keep_data: bool
    # Where `docker exec` runs to bring roles and databases up to date on an existing volume.
    shell: HostShell
    # A pg_monitor login role for the metrics exporter (`monitor_dsn`), when monitoring is on.
    monitor_role: bool = False
    # Continuous archiving with pgBackRest (and the volumes the backup sidecar shares), when on.
    backup: BackupPlan | None = None


class Postgres(pulumi.ComponentResource):
    """Owns the PostgreSQL container, its volume, the superuser and one role+database per client."""

    host: pulumi.Output[str]
    port: pulumi.Output[int]
    # The image the container runs; with backups on, the pgBackRest image the sidecar runs too.
    image_id: pulumi.Output[str]
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
            name=f"{args.placement.prefix}-{spec.name}-data",
            opts=retained(args.keep_data, self, args.placement.provider),
        )
        monitor_password = generated_password(f"{name}-{MONITOR_ROLE}-password", parent=self) if args.monitor_role else None

        def init_sql(secrets: list[str]) -> str:
            apps = [
                AppDatabase(name=database_name(c), owner=database_name(c), password=s)
                for c, s in zip(client_passwords, secrets)
            ]
            monitors = [MonitorRole(name=MONITOR_ROLE, password=secrets[-1])] if args.monitor_role else []
            return render_init_sql(apps, monitors)

        passwords = [*client_passwords.values(), *([monitor_password] if monitor_password is not None else [])]
        script = pulumi.Output.secret(pulumi.Output.all(*passwords).apply(init_sql))
        backup = args.backup
        self.backup_volumes = None
        extra: dict = {}
        if backup is not None:
            # The repository is data: kept and protected like the database's own volume.
            socket = docker.Volume(f"{name}-socket", name=f"{args.placement.prefix}-{spec.name}-socket",
                                   opts=pulumi.ResourceOptions(parent=self, provider=args.placement.provider))
            repo = docker.Volume(f"{name}-backup-data", name=f"{args.placement.prefix}-backup-data",
                                 opts=retained(args.keep_data, self, args.placement.provider))
            self.backup_volumes = BackupVolumes(data=volume.name, socket=socket.name, repo=repo.name)
            extra = dict(
                files=backup.files(), envs=backup.envs(), settings=archive_settings(backup.config),
                volumes=[VolumeMount(container_path=SOCKET_DIR, volume_name=socket.name),
                         VolumeMount(container_path=REPO_DIR, volume_name=repo.name)],
                build=backup.build(),
            )
        self.service = ContainerService(
            name,
            ContainerServiceArgs(
                spec=spec,
                placement=args.placement,
                envs=[
                    "POSTGRES_USER=postgres",
                    "POSTGRES_DB=postgres",
                    f"PGDATA={DATA_DIR}/pgdata",
                    pulumi.Output.concat("POSTGRES_PASSWORD=", admin_password),
                    *extra.get("envs", []),
                ],
                files=[ConfigFile(path=INIT_SQL, content=script), *extra.get("files", [])],
                volumes=[VolumeMount(container_path=DATA_DIR, volume_name=volume.name), *extra.get("volumes", [])],
                command=postgres_command(spec.limits.memory_mb, args.max_connections, extra.get("settings")),
                shm_size_mb=SHM_SIZE_MB,
                **extra.get("build", {}),
            ),
            opts=child,
        )

        # The image runs the script only on an empty volume; this runs it again (it is
        # idempotent) whenever it changes, so an API added later gets its role and database.
        self.apply_roles = args.shell.run(
            f"{name}-apply-roles",
            create=f"docker exec {args.placement.prefix}-{spec.name} psql -v ON_ERROR_STOP=1 --no-psqlrc -U postgres -d postgres -f {INIT_SQL}",
            triggers=[script.apply(lambda text: hashlib.sha256(text.encode()).hexdigest())],
            opts=pulumi.ResourceOptions(parent=self, depends_on=[self.service]),
        )

        self.image_id = self.service.image_id
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
        # the monitor role's password (secret), for the clients that log in as it (pgAdmin)
        self.monitor_password = monitor_password
        self.monitor_dsn = (
            pulumi.Output.secret(
                pulumi.Output.format(
                    "postgresql://{0}:{1}@{2}:{3}/postgres?sslmode=disable", MONITOR_ROLE, monitor_password, spec.name, spec.port
                )
            )
            if monitor_password is not None
            else None
        )
        self.register_outputs(
            {"host": self.host, "port": self.port, "image_id": self.image_id, "admin_dsn": self.admin_dsn, "monitor_dsn": self.monitor_dsn,
             "database_urls": self.database_urls}
        )
