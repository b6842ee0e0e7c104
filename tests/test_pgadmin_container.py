"""The pgAdmin container's files for real, on a Docker daemon: the component's uploads (from
its registration under mocks) put the way the Docker provider puts them -- one tar entry per
file whose header carries its owner, group and mode, through the archive API without copyUIDGID
(`docker cp -` sends a tar as it is) -- into a container of pgAdmin's user (5050, group root),
with a fresh named volume at pgAdmin's data folder and our start script as its entrypoint.

A busybox image stands in for dpage/pgadmin4 (no pulls here), with what the pgAdmin Dockerfile
gives: USER 5050, /var/lib/pgadmin owned 5050:0 (0775), /entrypoint.sh (here: it reads the
pgpass through the link, then waits)."""

from __future__ import annotations

import io
import subprocess
import tarfile
import time
import uuid

import pulumi
import pulumi_docker as docker_provider
import pytest

from components.container import Placement
from components.pgadmin.component import PgAdmin, PgAdminArgs
from components.pgadmin.settings import DATA_DIR, IMAGE_ENTRYPOINT, MONITOR_PGPASS, PASSFILE, PGADMIN_UID, STORAGE_DIR, \
    PgAdminConfig, storage_folder
from components.postgres import MONITOR_ROLE
from infra.catalog import declare_services
from infra.config import stack_file_config
from tests.conftest import run
from tests.mocks import install_mocks
from tests.flows_support import busybox_image, docker, require_docker

RUN = uuid.uuid4().hex[:8]
STACK = f"coderz-pgadmintest-{RUN}"
PROD = declare_services(stack_file_config("prod"))
PASSWORD = "monitor-secret-pw"
LINK = f"{STORAGE_DIR}/{storage_folder(PgAdminConfig().admin_email)}/{PASSFILE}"


def entry(name: str, *, mode: int, uid: int = 0, gid: int = 0, data: bytes | None = None,
          folder: bool = False) -> tuple[tarfile.TarInfo, bytes | None]:
    info = tarfile.TarInfo(name.lstrip("/"))
    info.mode, info.uid, info.gid = mode, uid, gid
    if folder:
        info.type = tarfile.DIRTYPE
    else:
        info.size = len(data or b"")
    return info, data


def provider_tar(uploads: list[dict]) -> bytes:
    """The uploads as the provider archives them: the file's path, its mode ("permissions", else
    0744 executable / 0644), its owner and group (numeric; unset: root)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for upload in uploads:
            default = 0o744 if upload.get("executable") else 0o644
            info, data = entry(upload["file"], mode=int(upload.get("permissions") or oct(default), 8),
                               uid=int(upload.get("owner") or 0), gid=int(upload.get("group") or 0),
                               data=upload["content"].encode())
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def registered_uploads(password: str) -> tuple[list[dict], list[str]]:
    """The pgAdmin container's uploads and entrypoint as the component registers them."""
    monitor = install_mocks("test")
    provider = docker_provider.Provider("test-docker", host="unix:///var/run/docker.sock")
    run(lambda: PgAdmin("pgadmin", PgAdminArgs(
        spec=PROD.get("pgadmin"), postgres=PROD.get("postgres"), username=MONITOR_ROLE,
        password=pulumi.Output.secret(password), config=PgAdminConfig(enabled=True),
        placement=Placement(prefix=STACK, network_name="net", provider=provider))))
    (registered,) = monitor.of_type("docker:index/container:Container")
    assert [v["containerPath"] for v in registered.plain["volumes"]] == [DATA_DIR]
    return registered.plain["uploads"], registered.plain["entrypoints"]


@pytest.fixture
def deploy():
    """Makes and starts the pgAdmin container of a given monitor password on the one volume, as
    a deploy does (the old container goes first); yields that function."""
    require_docker()
    stand_in = f"#!/bin/sh\ncat {LINK}\nexec sleep 60\n".encode()
    tag = f"coderz-pgadmintest/busybox:{RUN}"
    busybox_image(tag, label=STACK, applets=("mkdir", "ln", "cat", "stat", "readlink"),
                  changes=(f"USER {PGADMIN_UID}",),
                  extra=(entry("run", mode=0o755, folder=True),
                         entry("var/lib/pgadmin", mode=0o775, uid=int(PGADMIN_UID), folder=True),
                         entry(IMAGE_ENTRYPOINT, mode=0o755, data=stand_in)))
    name = f"{STACK}-pgadmin"

    def make(password: str) -> str:
        uploads, (entrypoint, *argv) = registered_uploads(password)
        docker("rm", "-f", name, check=False)
        docker("create", "--name", name, "--label", f"coderz.stack={STACK}", "--network", "none",
               "-v", f"{name}:{DATA_DIR}", "--entrypoint", entrypoint, tag, *argv)
        result = subprocess.run(["docker", "cp", "-", f"{name}:/"], input=provider_tar(uploads),
                                capture_output=True, timeout=60)
        assert result.returncode == 0, result.stderr
        docker("start", name)
        return name

    try:
        docker("volume", "create", "--label", f"coderz.stack={STACK}", name)
        yield make
    finally:
        docker("rm", "-f", name, check=False)
        docker("volume", "rm", name, check=False)
        docker("rmi", "-f", tag, check=False)


def logs(name: str, wanted: str, timeout: float = 15) -> str:
    deadline = time.monotonic() + timeout
    text = ""
    while time.monotonic() < deadline:
        text = docker("logs", name, check=False)
        if wanted in text:
            break
        time.sleep(0.2)
    return text


def test_pgadmins_user_reads_the_pgpass_through_its_storage_folder_and_no_other_user_can(deploy):
    started = deploy(PASSWORD)
    # the start script ran as 5050, linked the file, and handed over to the image's entrypoint
    assert f"postgres:5432:*:metrics:{PASSWORD}" in logs(started, PASSWORD)
    assert docker("exec", started, "readlink", LINK) == MONITOR_PGPASS
    folder = LINK.rsplit("/", 1)[0]
    owners = docker("exec", started, "stat", "-c", "%n %u:%g %a", MONITOR_PGPASS, STORAGE_DIR, folder).splitlines()
    # the pgpass: pgAdmin's user's, 0400 (libpq refuses a group- or world-readable one); the
    # storage folders: made by pgAdmin's user, 0700, so pgAdmin can write its files there
    assert owners == [f"{MONITOR_PGPASS} 5050:0 400", f"{STORAGE_DIR} 5050:0 700", f"{folder} 5050:0 700"]
    # another user of the container (not root) cannot read it
    denied = subprocess.run(["docker", "exec", "-u", "1000:1000", started, "cat", MONITOR_PGPASS],
                            capture_output=True, text=True, timeout=30)
    assert denied.returncode != 0 and "Permission denied" in denied.stderr
    # the secret is not on the volume: only the link is
    assert docker("exec", started, "stat", "-c", "%F", LINK) == "symbolic link"

    # a new password replaces the container; on the same volume, its start links its own file
    replaced = deploy("rotated-monitor-pw")
    text = logs(replaced, "rotated-monitor-pw")
    assert "postgres:5432:*:metrics:rotated-monitor-pw" in text and PASSWORD not in text
