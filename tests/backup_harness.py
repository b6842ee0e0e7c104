"""A real PostgreSQL cluster with pgBackRest on 127.0.0.1, driven through the same
`DatabaseHost` calls the `coderz backup/backups/restore` commands make on a deployed stack.

The cluster's archiving settings and pgbackrest.conf are the ones components/backup renders,
with the paths pointed at a scratch folder.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Iterator, Sequence

from components.backup.render import BackupPaths, archive_settings, render_pgbackrest_conf
from components.backup.settings import BackupConfig
from infra.cli.pgbackrest import STANZA, ToolFailed, wait_until
from infra.cli.s3clone import S3CloneSteps
from tests.servers import free_port, require_tool, scratch_dir


def as_postgres(argv: Sequence[str]) -> list[str]:
    # PostgreSQL (and so pgBackRest, which must own the same files) refuses to run as root.
    return ["runuser", "-u", "postgres", "--", *argv] if os.geteuid() == 0 else list(argv)


class LocalCluster:
    """One cluster and its pgBackRest config; `repo` may be another cluster's (a restore into a
    clone reads the source's repository)."""

    def __init__(self, workdir: Path, config: BackupConfig, *, repo: str | None = None,
                 environment: dict[str, str] | None = None):
        self.workdir, self.config = workdir, config
        self.port = free_port()
        self.paths = BackupPaths(
            pg_data=str(workdir / "data"), pg_socket=str(workdir), pg_port=self.port,
            repo=repo or str(workdir / "repo"), lock=str(workdir / "lock"), log=str(workdir / "log"),
            config=str(workdir / "pgbackrest.conf"),
        )
        self.environment = environment or {}
        self.app_log: list[str] = []
        Path(self.paths.config).write_text(render_pgbackrest_conf(config, "test", self.paths))
        for folder in ("lock", "log", *(() if repo else ("repo",))):
            (workdir / folder).mkdir()
        if os.geteuid() == 0:
            for path in workdir.rglob("*"):
                shutil.chown(path, "postgres", "postgres")
            shutil.chown(workdir, "postgres", "postgres")

    def run(self, argv: Sequence[str], *, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess:
        done = subprocess.run(as_postgres(argv), capture_output=True, text=True, timeout=timeout, check=False,
                              env={**os.environ, **self.environment})
        if check and done.returncode != 0:
            raise ToolFailed(" ".join(argv[:2]), done.stderr or done.stdout)
        return done

    def initdb(self) -> None:
        self.run([require_tool("initdb"), "-D", self.paths.pg_data, "-U", "postgres", "-A", "trust", "--no-sync"])
        settings = {
            "listen_addresses": "'127.0.0.1'", "fsync": "off", "wal_level": "replica",
            **{k: f"'{v}'" for k, v in archive_settings(self.config, self.paths).items()},
        }
        with open(Path(self.paths.pg_data) / "postgresql.conf", "a") as conf:
            conf.writelines(f"{key} = {value}\n" for key, value in settings.items())

    # --- DatabaseHost ---------------------------------------------------------------------------

    def pgbackrest(self, *args: str) -> str:
        return self.run(["pgbackrest", f"--config={self.paths.config}", f"--stanza={STANZA}", *args], timeout=300).stdout

    def stop_database(self) -> None:
        if not self.running():  # like `docker stop` on a stopped container
            return
        self.run([require_tool("pg_ctl"), "-D", self.paths.pg_data, "-m", "fast", "-w", "stop"])

    def before_restore(self) -> None:
        """Nothing to do: a clone here reads its source's repository where it lies."""

    def after_restore(self) -> None:
        """Nothing to do: the repository read is the one archived into."""

    def server_options(self) -> str:
        return f"-p {self.port} -k {self.workdir}"

    def start_database(self) -> None:
        log = self.workdir / "pg.log"
        # Port and socket on the command line, as the container passes its settings: a restored
        # postgresql.conf is the source's.
        done = self.run([require_tool("pg_ctl"), "-D", self.paths.pg_data, "-l", str(log), "-w", "-t", "60",
                         "-o", self.server_options(), "start"], check=False)
        if done.returncode != 0:
            raise ToolFailed("PostgreSQL start", f"pg_ctl exit {done.returncode}: {done.stderr.strip()}\n"
                             + (log.read_text() if log.exists() else ""))
        # Accepting connections is not enough: during recovery a hot standby accepts them too,
        # and may still stop when the archive runs out.

        not_running = [0]

        def recovered() -> bool:
            # `pg_ctl status` has said "no server running" once of a loaded machine's polls
            # while the log said ready: a stop is three answers in a row, not one.
            if not self.running():
                not_running[0] += 1
                if not_running[0] >= 3:
                    raise ToolFailed("PostgreSQL start", "pg_ctl status: no server running\n" + log.read_text())
                return False
            not_running[0] = 0
            with contextlib.suppress(ToolFailed):
                return self.sql("SELECT pg_is_in_recovery()") == "f"
            return False

        if not wait_until(recovered, 60, interval=0.2):
            raise ToolFailed("PostgreSQL start", "still in recovery after 60s")

    def stop_apps(self) -> list[str]:
        self.app_log.append("stop")
        return ["coderz-test-python-api"]

    def start_apps(self, names: Sequence[str]) -> None:
        self.app_log.append("start " + " ".join(names))

    # --- for the tests --------------------------------------------------------------------------

    def sql(self, statement: str) -> str:
        return self.run([require_tool("psql"), "-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-h", str(self.workdir),
                         "-p", str(self.port), "-U", "postgres", "-d", "postgres", "-c", statement]).stdout.strip()

    def running(self) -> bool:
        return self.run([require_tool("pg_ctl"), "-D", self.paths.pg_data, "status"], check=False).returncode == 0


# What a cluster, its WAL archive, its repository and a restored copy take, with room to spare.
SHM_NEEDED_BYTES = 1 << 30


def fast_scratch(prefix: str, shm: Path = Path("/dev/shm")) -> Path:
    """A scratch folder in memory when the machine has a /dev/shm with room for it: pgBackRest
    syncs every file it writes to the repository, which on a disk costs seconds per backup.
    A container's /dev/shm is 64 MiB unless told otherwise: too small, so on disk there."""
    if shm.is_dir() and os.access(shm, os.W_OK) and shutil.disk_usage(shm).free >= SHM_NEEDED_BYTES:
        path = Path(tempfile.mkdtemp(prefix=prefix, dir=shm))
        path.chmod(0o755)
        return path
    return scratch_dir(prefix)


class S3CloneCluster(LocalCluster):
    """A clone keeping its repository in its own path of the bucket, restored from `source_path`
    through the same steps `DockerDatabaseHost` runs for such a clone (infra/cli/s3clone.py).
    Its archiving settings go on the server's command line, as the deployed container passes
    them: a restored postgresql.conf is the source's, with the source's config file."""

    def __init__(self, workdir: Path, config: BackupConfig, *, source_path: str, **options):
        super().__init__(workdir, config, **options)
        self.steps = S3CloneSteps(super().pgbackrest, source_path)

    def pgbackrest(self, *args: str) -> str:
        return super().pgbackrest(*self.steps.from_source(*args))

    def before_restore(self) -> None:
        self.steps.before_restore()

    def after_restore(self) -> None:
        self.steps.after_restore()

    def server_options(self) -> str:
        settings = archive_settings(self.config, self.paths)
        return super().server_options() + "".join(f" -c {key}='{value}'" for key, value in settings.items())


@contextlib.contextmanager
def cluster(config: BackupConfig = BackupConfig(enabled=True), *, kind: type[LocalCluster] = LocalCluster,
            **options) -> Iterator[LocalCluster]:
    """A running cluster with its stanza created; stopped and removed afterwards."""
    require_tool("pgbackrest")
    workdir = fast_scratch("pgbr-")
    node = kind(workdir, config, **options)
    try:
        node.initdb()
        node.start_database()
        LocalCluster.pgbackrest(node, "stanza-create")  # in its own repository, whatever the kind reads
        yield node
    finally:
        if (Path(node.paths.pg_data) / "postmaster.pid").exists():
            node.run([require_tool("pg_ctl"), "-D", node.paths.pg_data, "-m", "immediate", "stop"], check=False)
        shutil.rmtree(workdir, ignore_errors=True)


@contextlib.contextmanager
def empty_node(source: LocalCluster) -> Iterator[LocalCluster]:
    """An empty data folder that restores from `source`'s repository (a clone, or a host whose
    disk was lost: no old pg_wal to fall back on)."""
    workdir = fast_scratch("pgbr-into-")
    node = LocalCluster(workdir, source.config, repo=source.paths.repo, environment=source.environment)
    node.run(["mkdir", "-m", "0700", node.paths.pg_data])
    try:
        yield node
    finally:
        if (Path(node.paths.pg_data) / "postmaster.pid").exists():
            node.run([require_tool("pg_ctl"), "-D", node.paths.pg_data, "-m", "immediate", "stop"], check=False)
        shutil.rmtree(workdir, ignore_errors=True)
