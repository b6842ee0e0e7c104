"""`DockerDatabaseHost`: a deployed stack's PostgreSQL and backup sidecar, driven with the docker
CLI (over SSH for an SSH target: `docker -H ssh://user@host:port`, the operator's own key).

pgBackRest runs in the backup sidecar, which shares the data volume and the socket folder with
PostgreSQL and stays up while PostgreSQL is stopped for a restore. PostgreSQL and the sidecar
have fixed names (`<prefix>-postgres`, `<prefix>-backup`); the applications roll, so their
container names carry a digest per generation, and they are found by the labels every
container of the stack carries (`coderz.stack`, `coderz.service`, components/container.py).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable, Sequence

from components.backup.component import REPO_DIR
from components.backup.render import STANZA, s3_repo_path
from infra.catalog import declare_services
from infra.cli import EXIT_REFUSED, CliError
from infra.cli.pgbackrest import ToolFailed, run_tool, wait_until
from infra.cli.s3clone import S3CloneSteps
from infra.config import PROJECT, REPO_ROOT, ConfigError, stack_file_config

BACKUP_SERVICE = "backup"
SOURCE_REPO = "/var/lib/pgbackrest-source"
# The repository's own folders (pgBackRest's layout): what a clone's repository is made of.
REPO_FOLDERS = ("archive", "backup")


def docker_host(target) -> str:
    return f"ssh://{target.user}@{target.host}:{target.port}" if target.kind == "ssh" else target.socket


class DockerDatabaseHost:
    """One stack's database side. With `source`, the stack is a clone that restores from the
    source stack's repository: for a repository on a volume, the clone's repository becomes a
    copy of the source's before the restore (`before_restore`), because PostgreSQL's recovery
    in the clone fetches WAL through pgBackRest from the clone's own repository mount; for S3,
    the source's path in the bucket is read and the clone's own path starts a new stanza
    (infra/cli/s3clone.py)."""

    def __init__(self, stack: str, *, source: str | None = None, run: Callable[..., str] = run_tool,
                 ready_timeout: float = 600, root: Path = REPO_ROOT):
        try:
            config = stack_file_config(stack, root)
            source_config = stack_file_config(source, root) if source else config
        except (ConfigError, FileNotFoundError) as error:
            raise CliError(str(error), EXIT_REFUSED) from None
        if not config.backup.enabled:
            raise CliError(f"Pulumi.{stack}.yaml: {PROJECT}:backup.enabled is off: the stack has no backups", EXIT_REFUSED)
        if source == stack:
            raise CliError(f"--into {stack}: a stack is restored in place without --into", EXIT_REFUSED)
        if source is not None and (config.backup.s3 is None) != (source_config.backup.s3 is None):
            raise CliError(f"{stack} and {source} keep their repositories in different kinds of storage "
                           "(one on a volume, one in S3): restore into a clone made by coderz clone", EXIT_REFUSED)
        own, theirs = config.backup.s3, source_config.backup.s3
        if source is not None and own is not None and theirs is not None:
            # The clone reads the source's path with its own bucket settings, and deletes the
            # stanza on its own path: the same path would be the source's repository.
            if (own.endpoint, own.bucket) != (theirs.endpoint, theirs.bucket):
                raise CliError(f"{stack} keeps its repository in {own.bucket} at {own.endpoint}, {source} in "
                               f"{theirs.bucket} at {theirs.endpoint}: a clone restores from its source's bucket", EXIT_REFUSED)
            if s3_repo_path(own, stack) == s3_repo_path(theirs, source):
                raise CliError(f"Pulumi.{stack}.yaml: {PROJECT}:backup.s3.path: {stack} would share {source}'s path "
                               f"{s3_repo_path(own, stack)} in the bucket: give the clone its own", EXIT_REFUSED)
        if source is not None and config.backup.s3 is None and docker_host(config.target) != docker_host(source_config.target):
            raise CliError(f"{source}'s repository is a volume on {docker_host(source_config.target)}, {stack} runs on "
                           f"{docker_host(config.target)}: a clone on another host restores from an S3 repository",
                           EXIT_REFUSED)
        self.prefix = f"{PROJECT}-{stack}"
        self.stack, self.source = stack, source
        # A clone restored from its source's path in S3 (infra/cli/s3clone.py).
        self.s3_clone = (S3CloneSteps(self._pgbackrest, s3_repo_path(theirs, source))
                         if source is not None and theirs is not None else None)
        self.docker = ["docker", "-H", docker_host(config.target)]
        self.sidecar, self.postgres = f"{self.prefix}-{BACKUP_SERVICE}", f"{self.prefix}-postgres"
        self.app_services = [s.name for s in declare_services(config).services
                             if s.tier == "app" and "postgres" in s.depends_on]
        self.run, self.ready_timeout = run, ready_timeout

    def pgbackrest(self, *args: str) -> str:
        return self._pgbackrest(*(self.s3_clone.from_source(*args) if self.s3_clone else args))

    def _pgbackrest(self, *args: str) -> str:
        """pgBackRest with the stack's own configuration."""
        command = ["pgbackrest", f"--stanza={STANZA}", *args]
        return self.run([*self.docker, "exec", "-u", "postgres", self.sidecar, *command], "pgbackrest " + args[-1])

    def before_restore(self) -> None:
        if self.s3_clone is not None:
            self.s3_clone.before_restore()
        if self.source is None or self.s3_clone is not None:
            return
        # In a one-off container from the sidecar's image, with the sidecar's volumes and the
        # source's repository (read-only): the clone's repository becomes a copy of it. The
        # clone's own earlier backups were of the database this restore replaces.
        volume = f"{PROJECT}-{self.source}-backup-data"
        self.run([*self.docker, "volume", "inspect", "-f", "{{.Name}}", volume], f"the repository volume of {self.source}")
        image = self.run([*self.docker, "inspect", "-f", "{{.Config.Image}}", self.sidecar], "docker inspect").strip()
        repo, source = REPO_DIR, SOURCE_REPO
        # Nothing is removed unless the source holds a backup to copy.
        script = (f'[ -d {source}/backup/{STANZA} ] || {{ echo "no backup in the repository of {self.source}" >&2; exit 3; }}; '
                  f"cd {repo} && rm -rf {' '.join(REPO_FOLDERS)} && "
                  f"for d in {' '.join(REPO_FOLDERS)}; do if [ -d {source}/$d ]; then cp -a {source}/$d .; fi; done")
        self.run([*self.docker, "run", "--rm", "-u", "postgres", "--volumes-from", self.sidecar,
                  "-v", f"{volume}:{source}:ro", "--entrypoint", "sh", image, "-c", script],
                 f"copy of {self.source}'s repository")

    def after_restore(self) -> None:
        if self.s3_clone is not None:
            self.s3_clone.after_restore()

    def _state(self, name: str) -> dict:
        text = self.run([*self.docker, "inspect", "-f", "{{json .State}}", name], "docker inspect")
        return json.loads(text)

    def stop_database(self) -> None:
        self.run([*self.docker, "stop", "-t", "120", self.postgres], "docker stop")

    def start_database(self) -> None:
        self.run([*self.docker, "start", self.postgres], "docker start")

        def ready() -> bool:
            state = self._state(self.postgres)
            # The container restarts by itself (restart: unless-stopped) after PostgreSQL stops:
            # "Restarting" is a stop too.
            if not state.get("Running") or state.get("Restarting"):
                # pgBackRest's archive-get lines come between PostgreSQL's own: enough lines to
                # hold the server's last words.
                logs = self.run([*self.docker, "logs", "--tail", "200", self.postgres], "docker logs", merged=True)
                # Left stopped, not restarting into the same failed recovery over and over.
                self.run([*self.docker, "stop", "-t", "10", self.postgres], "docker stop")
                raise ToolFailed("PostgreSQL start", logs)
            if (state.get("Health") or {}).get("Status") != "healthy":
                return False
            # Healthy is not enough: a server in recovery accepts connections (hot standby) and may
            # still stop when the archive runs out. Done means promoted.
            answer = self.run([*self.docker, "exec", "-u", "postgres", self.postgres, "psql", "-XtAc",
                               "SELECT pg_is_in_recovery()"], "psql")
            return answer.strip() == "f"

        if not wait_until(ready, self.ready_timeout, interval=1):
            raise ToolFailed("PostgreSQL start", f"not healthy after {self.ready_timeout:.0f}s")

    def running_apps(self) -> list[str]:
        """The stack's running application containers that use the database, by label."""
        text = self.run([*self.docker, "ps", "--filter", f"label=coderz.stack={self.prefix}",
                         "--format", '{{.Names}}\t{{.Label "coderz.service"}}'], "docker ps")
        pairs = [line.split("\t") for line in text.splitlines() if "\t" in line]
        return sorted(name for name, service in pairs if service in self.app_services)

    def stop_apps(self) -> list[str]:
        running = self.running_apps()
        if running:
            self.run([*self.docker, "stop", *running], "docker stop")
        return running

    def start_apps(self, names: Sequence[str]) -> None:
        if names:
            self.run([*self.docker, "start", *names], "docker start")
