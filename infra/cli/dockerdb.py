"""`DockerDatabaseHost`: a deployed stack's PostgreSQL and backup sidecar, driven with the docker
CLI (over SSH for an SSH target: `docker -H ssh://user@host:port`, the operator's own key).

pgBackRest runs in the backup sidecar, which shares the data volume and the socket folder with
PostgreSQL and stays up while PostgreSQL is stopped for a restore. Container names come from
the stack file and the catalog, as the program names them.
"""

from __future__ import annotations

import json
from typing import Callable, Sequence

from components.backup.render import STANZA
from infra.catalog import declare_services
from infra.cli import EXIT_REFUSED, CliError
from infra.cli.pgbackrest import ToolFailed, run_tool, wait_until
from infra.config import PROJECT, ConfigError, stack_file_config

BACKUP_SERVICE = "backup"
SOURCE_REPO = "/var/lib/pgbackrest-source"


def docker_host(target) -> str:
    return f"ssh://{target.user}@{target.host}:{target.port}" if target.kind == "ssh" else target.socket


def container_names(prefix: str, service: str, replicas: int) -> list[str]:
    return [f"{prefix}-{service}"] if replicas == 1 else [f"{prefix}-{service}-{i}" for i in range(1, replicas + 1)]


class DockerDatabaseHost:
    """One stack's database side. With `source`, pgBackRest reads the source stack's repository
    (a restore into a clone): its volume is mounted into a one-off container from the sidecar's
    image, or, for S3, the source's path in the bucket is used."""

    def __init__(self, stack: str, *, source: str | None = None, run: Callable[..., str] = run_tool,
                 ready_timeout: float = 600):
        try:
            config = stack_file_config(stack)
            source_config = stack_file_config(source) if source else config
        except (ConfigError, FileNotFoundError) as error:
            raise CliError(str(error), EXIT_REFUSED) from None
        if not config.backup.enabled:
            raise CliError(f"Pulumi.{stack}.yaml: {PROJECT}:backup.enabled is off: the stack has no backups", EXIT_REFUSED)
        prefix = f"{PROJECT}-{stack}"
        catalog = declare_services(config)
        self.stack, self.source, self.s3 = stack, source, source_config.backup.s3
        self.docker = ["docker", "-H", docker_host(config.target)]
        self.sidecar, self.postgres = f"{prefix}-{BACKUP_SERVICE}", f"{prefix}-postgres"
        self.apps = [name for s in catalog.services if s.tier == "app" and "postgres" in s.depends_on
                     for name in container_names(prefix, s.name, s.replicas)]
        self.run, self.ready_timeout = run, ready_timeout

    def pgbackrest(self, *args: str) -> str:
        command = ["pgbackrest", f"--stanza={STANZA}", *args]
        if self.source is None:
            return self.run([*self.docker, "exec", "-u", "postgres", self.sidecar, *command], "pgbackrest " + args[-1])
        if self.s3 is not None:
            path = self.s3.path or f"/{PROJECT}/{self.source}"
            return self.run([*self.docker, "exec", "-u", "postgres", self.sidecar, command[0], f"--repo1-path={path}",
                             *command[1:]], "pgbackrest " + args[-1])
        image = self.run([*self.docker, "inspect", "-f", "{{.Config.Image}}", self.sidecar], "docker inspect").strip()
        return self.run([*self.docker, "run", "--rm", "-u", "postgres", "--volumes-from", self.sidecar,
                         "-v", f"{PROJECT}-{self.source}-backup-data:{SOURCE_REPO}", image,
                         command[0], f"--repo1-path={SOURCE_REPO}", *command[1:]], "pgbackrest " + args[-1])

    def _state(self, name: str) -> dict:
        text = self.run([*self.docker, "inspect", "-f", "{{json .State}}", name], "docker inspect")
        return json.loads(text)

    def stop_database(self) -> None:
        self.run([*self.docker, "stop", "-t", "120", self.postgres], "docker stop")

    def start_database(self) -> None:
        self.run([*self.docker, "start", self.postgres], "docker start")

        def ready() -> bool:
            state = self._state(self.postgres)
            if not state.get("Running"):
                logs = self.run([*self.docker, "logs", "--tail", "20", self.postgres], "docker logs")
                raise ToolFailed("PostgreSQL start", logs)
            if (state.get("Health") or {}).get("Status") != "healthy":
                return False
            # Healthy is not enough: a server in recovery accepts connections (hot standby) and may
            # still stop when the archive runs out. Done means promoted.
            answer = self.run([*self.docker, "exec", "-u", "postgres", self.postgres, "psql", "-XtAc",
                               "SELECT pg_is_in_recovery()"], "psql")
            return answer.strip() == "f"

        if not wait_until(ready, self.ready_timeout, interval=2):
            raise ToolFailed("PostgreSQL start", f"not healthy after {self.ready_timeout:.0f}s")

    def stop_apps(self) -> list[str]:
        running = [name for name in self.apps if self._state(name).get("Running")]
        if running:
            self.run([*self.docker, "stop", *running], "docker stop")
        return running

    def start_apps(self, names: Sequence[str]) -> None:
        if names:
            self.run([*self.docker, "start", *names], "docker start")
