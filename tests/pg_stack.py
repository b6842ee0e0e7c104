"""A stack's database side on the real Docker daemon, for the restore tests: one local image
assembled from this host's PostgreSQL 15 and pgBackRest (Debian bookworm's, with their shared
libraries), bash and jq for the sidecar's script, busybox for the rest, and the repository's own
backup-loop.sh; then a stack's PostgreSQL, backup sidecar and a stand-in application, named,
labelled and sharing volumes as the program deploys them (components/postgres.py,
components/backup, components/container.py). No pull, no network (`--network none`).

The stack's own image is PostgreSQL 16 from the official image; the host has 15. The restore
mechanics (containers, volumes, pgBackRest's restore and archive-get, the CLI's order of steps)
do not depend on the major.
"""

from __future__ import annotations

import io
import json
import os
import secrets
import subprocess
import tarfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from components.backup.component import METRICS_DIR, REPO_DIR, SOCKET_DIR
from components.backup.render import CONFIG_PATH, LOOP_SCRIPT, METRICS_PORT, render_pgbackrest_conf
from components.backup.settings import BackupConfig
from components.postgres import DATA_DIR
from components.postgres_init import postgres_command
from components.backup.render import archive_settings
from tests.servers import require_tool

PG_MAJOR = 15
PG_BIN = f"/usr/lib/postgresql/{PG_MAJOR}/bin"
PG_LIB = f"/usr/lib/postgresql/{PG_MAJOR}/lib"
PG_SHARE = f"/usr/share/postgresql/{PG_MAJOR}"
UID = GID = 999  # the official image's postgres user
BUSYBOX_APPLETS = ("sh", "cat", "cp", "date", "env", "find", "grep", "head", "id", "ls", "mkdir", "mv", "rm",
                   "sed", "sleep", "stat", "tail", "tr", "true", "wc")
# The stand-in for the official image's docker-entrypoint.sh: a cluster on an empty volume, then
# the server with the container's command line.
ENTRYPOINT = """#!/bin/sh
set -e
if [ ! -s "$PGDATA/PG_VERSION" ]; then
  initdb -D "$PGDATA" -U postgres -A trust -E UTF8 --locale=C --no-sync >/dev/null
fi
exec "$@" -D "$PGDATA"
"""
# A stand-in application: stops at once on SIGTERM, as a well-behaved API does.
APP_COMMAND = ["sh", "-c", "trap 'exit 0' TERM; while true; do sleep 1; done"]


def docker(*argv: str, check: bool = True, timeout: float = 120, env: dict[str, str] | None = None) -> str:
    done = subprocess.run(["docker", *argv], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})})
    if check and done.returncode != 0:
        raise AssertionError(f"docker {' '.join(argv[:3])}...: {done.stderr.strip()}")
    return done.stdout.strip()


def _libraries(binaries: list[Path]) -> set[Path]:
    found: set[Path] = set()
    for binary in binaries:
        text = subprocess.run(["ldd", str(binary)], capture_output=True, text=True).stdout
        for line in text.splitlines():
            parts = line.split()
            path = parts[2] if "=>" in parts and len(parts) > 2 else parts[0]
            if path.startswith("/"):
                found.add(Path(path))
    return found


def rootfs_tar() -> bytes:
    """The image's files as a tar: real binaries and every library they load."""
    for tool in ("pgbackrest", "jq", "bash", "busybox", f"{PG_BIN}/postgres"):
        require_tool(tool)
    busybox = Path(require_tool("busybox")).resolve()
    assert b"ld-linux" not in busybox.read_bytes()[:8192], f"{busybox} is not static (install busybox-static)"
    elves = [*Path(PG_BIN).iterdir(), *(p for p in Path(PG_LIB).glob("*.so") if "llvmjit" not in p.name),
             Path(require_tool("pgbackrest")), Path(require_tool("jq")), Path(require_tool("bash"))]
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        def folder(path: str, mode: int = 0o755, owner: int = 0) -> None:
            info = tarfile.TarInfo(path.lstrip("/"))
            info.type, info.mode, info.uid, info.gid = tarfile.DIRTYPE, mode, owner, owner
            tar.addfile(info)

        def text(path: str, content: str, mode: int = 0o644) -> None:
            data = content.encode()
            info = tarfile.TarInfo(path.lstrip("/"))
            info.size, info.mode = len(data), mode
            tar.addfile(info, io.BytesIO(data))

        def real(path: Path, arcname: str | None = None) -> None:
            tar.add(str(path.resolve()), arcname=(arcname or str(path)).lstrip("/"), recursive=True)

        for path in sorted(set(elves) | _libraries([p for p in elves if p.is_file()])):
            real(path)
        for tree in (PG_SHARE, "/usr/share/zoneinfo"):
            real(Path(tree))
        real(busybox, "/bin/busybox")
        for applet, target in [*((a, "busybox") for a in BUSYBOX_APPLETS), ("bash", "/usr/bin/bash")]:
            link = tarfile.TarInfo(f"bin/{applet}")
            link.type, link.linkname = tarfile.SYMTYPE, target
            tar.addfile(link)
        text("/etc/passwd", f"root:x:0:0:root:/root:/bin/sh\npostgres:x:{UID}:{GID}:PostgreSQL:/var/lib/postgresql:/bin/sh\n")
        text("/etc/group", f"root:x:0:\npostgres:x:{GID}:\n")
        folder("/tmp", 0o1777)
        folder("/etc/pgbackrest")
        for path in ("/var/lib/postgresql", DATA_DIR, SOCKET_DIR, REPO_DIR, "/var/log/pgbackrest", "/tmp/pgbackrest",
                     METRICS_DIR):
            folder(path, 0o750 if path != SOCKET_DIR else 0o775, UID)
        text("/usr/local/bin/docker-entrypoint.sh", ENTRYPOINT, 0o755)
        text("/usr/local/bin/backup-loop.sh", LOOP_SCRIPT.read_text(), 0o755)
    return buffer.getvalue()


def import_image() -> str:
    tag = f"coderz-test/pg{PG_MAJOR}-pgbackrest:{secrets.token_hex(4)}"
    changes = ["--change", f"ENV PATH={PG_BIN}:/usr/local/bin:/usr/bin:/bin", "--change", "ENV LANG=C"]
    done = subprocess.run(["docker", "import", *changes, "-", tag], input=rootfs_tar(), capture_output=True, timeout=300)
    assert done.returncode == 0, done.stderr.decode()
    return tag


@dataclass
class StackDb:
    """One stack's PostgreSQL, backup sidecar and application replicas on the daemon."""

    stack: str
    image: str
    config: BackupConfig
    apps: list[str] = field(default_factory=list)

    @property
    def prefix(self) -> str:
        return f"coderz-{self.stack}"

    @property
    def postgres(self) -> str:
        return f"{self.prefix}-postgres"

    @property
    def sidecar(self) -> str:
        return f"{self.prefix}-backup"

    def volumes(self) -> list[str]:
        return [f"{self.prefix}-postgres-data", f"{self.prefix}-postgres-socket", f"{self.prefix}-backup-data"]

    def _mounts(self) -> list[str]:
        data, socket, repo = self.volumes()
        return ["-v", f"{data}:{DATA_DIR}", "-v", f"{socket}:{SOCKET_DIR}", "-v", f"{repo}:{REPO_DIR}"]

    def _common(self, service: str, name: str) -> list[str]:
        return ["create", "--name", name, "--network", "none", "--restart", "unless-stopped",
                "--label", f"coderz.stack={self.prefix}", "--label", f"coderz.service={service}"]

    def up(self, *, hour_utc: int) -> None:
        """PostgreSQL archiving through pgBackRest, the sidecar's loop (its first full backup at
        start, the schedule at `hour_utc`), one application replica; the config file placed as
        the program uploads it."""
        conf = render_pgbackrest_conf(self.config, self.stack)
        command = postgres_command(256, 20, archive_settings(self.config))
        docker(*self._common("postgres", self.postgres), "-u", "postgres", "-e", f"PGDATA={DATA_DIR}/pgdata",
               *self._mounts(), "--health-cmd", "pg_isready -q", "--health-interval", "1s", "--health-retries", "3",
               "--entrypoint", "docker-entrypoint.sh", self.image, *command)
        envs = {"STANZA": "main", "FULL_DAY": "sun", "HOUR_UTC": str(hour_utc), "METRICS_DIR": METRICS_DIR,
                "METRICS_PORT": str(METRICS_PORT), "PGHOST": SOCKET_DIR, "PGUSER": "postgres"}
        docker(*self._common("backup", self.sidecar), "-u", "postgres", *[a for k, v in envs.items() for a in ("-e", f"{k}={v}")],
               *self._mounts(), self.image, "backup-loop.sh", "loop")
        for container in (self.postgres, self.sidecar):
            self._upload(container, CONFIG_PATH, conf)
        app = f"{self.prefix}-python-api-1-{secrets.token_hex(6)}"
        docker(*self._common("python-api", app), self.image, *APP_COMMAND)
        self.apps.append(app)
        docker("start", self.postgres, self.sidecar, app)

    def _upload(self, container: str, path: str, content: str) -> None:
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w") as tar:
            info = tarfile.TarInfo(Path(path).name)
            info.size, info.mode = len(content.encode()), 0o644
            tar.addfile(info, io.BytesIO(content.encode()))
        done = subprocess.run(["docker", "cp", "-", f"{container}:{Path(path).parent}"], input=buffer.getvalue(),
                              capture_output=True, timeout=60)
        assert done.returncode == 0, done.stderr.decode()

    def sql(self, statement: str) -> str:
        return docker("exec", "-u", "postgres", self.postgres, "psql", "-XAtq", "-v", "ON_ERROR_STOP=1", "-c", statement)

    def pgbackrest(self, *args: str) -> str:
        return docker("exec", "-u", "postgres", self.sidecar, "pgbackrest", "--stanza=main", *args, timeout=300)

    def state(self, name: str) -> dict:
        return json.loads(docker("inspect", "-f", "{{json .State}}", name))

    def wait(self, check, what: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if check():
                    return
            except AssertionError:
                pass
            time.sleep(0.5)
        logs = docker("logs", "--tail", "30", self.sidecar, check=False)
        raise AssertionError(f"{self.stack}: {what} not within {timeout:.0f}s; sidecar log:\n{logs}")

    def wait_first_backup(self) -> None:
        """The sidecar takes a full backup at its first start: wait for it (a second backup
        started meanwhile would find the stanza locked)."""
        self.wait(lambda: json.loads(self.pgbackrest("--output=json", "info"))[0].get("backup"), "the first backup")

    def remove(self) -> None:
        names = [self.postgres, self.sidecar, *self.apps]
        subprocess.run(["docker", "rm", "-f", "-v", *names], capture_output=True, timeout=120)
        subprocess.run(["docker", "volume", "rm", "-f", *self.volumes()], capture_output=True, timeout=120)
