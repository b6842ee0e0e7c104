"""`Backup`: the backup sidecar beside the stack's PostgreSQL.

It owns the sidecar container (pgBackRest's schedule, the last-success metric on
`METRICS_PORT`). `BackupPlan` is what the sidecar and PostgreSQL share: how the image that
carries pgBackRest is built, its config file and the S3 keys. The Postgres component builds
that image (once) and owns the volumes (data, socket folder, repository); the sidecar runs the
same image by its ID and mounts the same volumes.
"""

from __future__ import annotations

from typing import Sequence

import pulumi
from pydantic import BaseModel, ConfigDict

from components.backup.render import CONFIG_PATH, IMAGE_CONTEXT, METRICS_PORT, STANZA, render_pgbackrest_conf
from components.backup.settings import BackupConfig
from components.container import ConfigFile, ContainerService, ContainerServiceArgs, Placement, VolumeMount
from components.spec import InputStr, ServiceSpec

SOCKET_DIR = "/var/run/postgresql"
REPO_DIR = "/var/lib/pgbackrest"
METRICS_DIR = "/srv/metrics"


class BackupPlan(BaseModel):
    """What PostgreSQL (archive_command) and the sidecar (backups, restores) both need."""

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    config: BackupConfig
    stack: str
    postgres_image: str  # the base the pgBackRest image is built on
    s3_keys: tuple[InputStr, InputStr] | None = None

    def files(self) -> list[ConfigFile]:
        return [ConfigFile(path=CONFIG_PATH, content=render_pgbackrest_conf(self.config, self.stack))]

    def envs(self) -> list[InputStr]:
        """The S3 keys, as pgBackRest reads them from the environment (secret Outputs)."""
        if self.config.s3 is None or self.s3_keys is None:
            return []
        access, secret = self.s3_keys
        return [pulumi.Output.concat("PGBACKREST_REPO1_S3_KEY=", access),
                pulumi.Output.concat("PGBACKREST_REPO1_S3_KEY_SECRET=", secret)]

    def build(self) -> dict:
        """How PostgreSQL's service builds the image; the sidecar gets its ID instead."""
        return dict(build_context=IMAGE_CONTEXT, build_args={"POSTGRES_IMAGE": self.postgres_image})


class BackupVolumes(BaseModel):
    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    data: InputStr
    socket: InputStr
    repo: InputStr


class BackupArgs(BaseModel):
    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    spec: ServiceSpec
    placement: Placement
    plan: BackupPlan
    volumes: BackupVolumes
    # The image PostgreSQL's service built from `plan.build()`: one build, both containers on it.
    image_id: InputStr
    data_dir: str  # where PostgreSQL's container mounts the data volume
    depends_on: Sequence[pulumi.Resource] = ()


class Backup(pulumi.ComponentResource):
    """Owns the backup sidecar container."""

    container_names: pulumi.Output[list[str]]

    def __init__(self, name: str, args: BackupArgs, *, opts: pulumi.ResourceOptions | None = None):
        super().__init__("coderz:data:Backup", name, None, opts)
        config, volumes = args.plan.config, args.volumes
        self.service = ContainerService(
            name,
            ContainerServiceArgs(
                spec=args.spec,
                placement=args.placement,
                envs=[
                    f"STANZA={STANZA}", f"FULL_DAY={config.full_day}", f"HOUR_UTC={config.hour_utc}",
                    f"METRICS_DIR={METRICS_DIR}", f"METRICS_PORT={METRICS_PORT}", f"PGHOST={SOCKET_DIR}",
                    "PGUSER=postgres", *args.plan.envs(),
                ],
                files=args.plan.files(),
                volumes=[
                    VolumeMount(container_path=args.data_dir, volume_name=volumes.data),
                    VolumeMount(container_path=SOCKET_DIR, volume_name=volumes.socket),
                    VolumeMount(container_path=REPO_DIR, volume_name=volumes.repo),
                ],
                command=["backup-loop.sh", "loop"],
                user="postgres",
                depends_on=list(args.depends_on),
                image_id=args.image_id,
            ),
            opts=pulumi.ResourceOptions(parent=self),
        )
        self.container_names = self.service.container_names
        self.register_outputs({"container_names": self.container_names})
