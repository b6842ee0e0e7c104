"""The pgBackRest image's Dockerfile (components/backup/image): read as the builder reads it,
and built for real with the classic builder on a stand-in base whose apt-get records what it
is asked to install (no network here: the real base and apt.postgresql.org are out of reach)."""

from __future__ import annotations

import re
import shlex
import subprocess
from pathlib import Path

import pytest

from components.backup.render import IMAGE_CONTEXT, LOOP_SCRIPT
from infra.config import stack_file_config
from tests.servers import require_tool

DOCKERFILE = IMAGE_CONTEXT / "Dockerfile"
# What the official postgres:16 Debian images configure (docker-library/postgres, 16/bookworm).
PGDG_LIST = ("deb [ signed-by=/usr/local/share/keyrings/postgres.gpg.asc ] "
             "http://apt.postgresql.org/pub/repos/apt/ bookworm-pgdg main 16")
# Options of COPY/ADD/RUN that the classic builder refuses ("requires BuildKit").
BUILDKIT_ONLY = ("--chmod", "--mount", "--link", "--parents", "--exclude", "<<")


def instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    joined = re.sub(r"\\\n", " ", "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#")))
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1]) for line in joined.splitlines() if line.strip()]


def pinned_version() -> str:
    steps = instructions(DOCKERFILE.read_text())
    after_from = steps[[kind for kind, _ in steps].index("FROM") + 1:]
    # An ARG before FROM is out of scope after it: the pin must be declared in the stage.
    (version,) = [args.split("=", 1)[1] for kind, args in after_from if kind == "ARG" and args.startswith("PGBACKREST_VERSION=")]
    return version


def test_the_dockerfile_pins_pgbackrest_and_builds_on_the_stacks_postgres():
    steps = instructions(DOCKERFILE.read_text())
    assert [kind for kind, _ in steps][:2] == ["ARG", "FROM"] and steps[1][1] == "${POSTGRES_IMAGE}"
    default = steps[0][1].split("=", 1)[1]
    assert {stack_file_config(s).postgres.image for s in ("qa", "prod")} == {default}
    assert re.fullmatch(r"2\.\d+\.\d+-\d+\.pgdg120\+\d+", pinned_version()), "a pgdg build for bookworm (pgdg120)"
    (run,) = [args for kind, args in steps if kind == "RUN" and "apt-get install" in args]
    words = shlex.split(run)
    assert '"pgbackrest=${PGBACKREST_VERSION}"' in run and "pgbackrest" not in words, "never an unpinned install"


def test_only_what_the_classic_builder_reads_and_every_copy_source_exists():
    for kind, args in instructions(DOCKERFILE.read_text()):
        assert not any(args.startswith(flag) or f" {flag}" in args for flag in BUILDKIT_ONLY), (kind, args)
        if kind in ("COPY", "ADD"):
            *sources, _ = shlex.split(args)
            for source in sources:
                assert (IMAGE_CONTEXT / source).is_file(), f"COPY source {source} is not in {IMAGE_CONTEXT}"


def test_the_pin_is_the_major_the_tests_run_and_not_older():
    """The suite runs Debian bookworm's pgBackRest (2.45) against its PostgreSQL 15. The image
    cannot use that build: 2.45 predates PostgreSQL 16 (its binary holds the catalog version of
    15, 202209061, and not 16's, 202307071), so the image pins a newer 2.x from the PostgreSQL
    apt repository. Same major (pgBackRest keeps the repository format within a major); the
    minor at least the tested one."""
    tested = subprocess.run([require_tool("pgbackrest"), "version"], capture_output=True, text=True).stdout
    major, minor = map(int, re.search(r"pgBackRest (\d+)\.(\d+)", tested).groups())
    pin_major, pin_minor = map(int, pinned_version().split(".")[:2])
    assert (pin_major, pin_minor >= minor) == (major, True)
    binary = Path(require_tool("pgbackrest")).read_bytes()
    if (major, minor) < (2, 46):
        assert (202209061).to_bytes(4, "little") in binary and (202307071).to_bytes(4, "little") not in binary


@pytest.fixture
def stand_in_base(pg_image, tmp_path):
    """The session's image plus an apt-get that records its arguments and the official image's
    apt source list."""
    from tests.pg_stack import docker

    (tmp_path / "apt-get").write_text('#!/bin/sh\necho "$*" >>/var/log/apt-get.log\n')
    (tmp_path / "apt-get").chmod(0o755)
    # busybox-static has no `install`: the one form the Dockerfile uses, in sh.
    (tmp_path / "install").write_text(
        '#!/bin/sh\n[ "$1" = -d ] || exit 2; shift\n'
        'while [ $# -gt 0 ]; do case $1 in -o) o=$2; shift 2;; -g) g=$2; shift 2;; -m) m=$2; shift 2;; *) break;; esac; done\n'
        'mkdir -p "$@" && chown "$o:$g" "$@" && chmod "$m" "$@"\n')
    (tmp_path / "install").chmod(0o755)
    (tmp_path / "pgdg.list").write_text(PGDG_LIST + "\n")
    (tmp_path / "Dockerfile").write_text(f"FROM {pg_image}\nCOPY apt-get install /usr/bin/\n"
                                         "COPY pgdg.list /etc/apt/sources.list.d/pgdg.list\n"
                                         "RUN mkdir -p /var/lib/apt/lists /var/log && ln -s busybox /bin/chown "
                                         "&& ln -s busybox /bin/chmod\n")
    tag = pg_image.replace("pgbackrest:", "apt-stand-in:")
    docker("build", "-q", "--force-rm", "-t", tag, str(tmp_path), env={"DOCKER_BUILDKIT": "0"})
    yield tag
    docker("rmi", "-f", tag, check=False)


def test_the_dockerfile_builds_with_the_classic_builder(stand_in_base):
    from tests.pg_stack import docker

    tag = stand_in_base.replace("apt-stand-in:", "pgbackrest-built:")
    try:
        docker("build", "-q", "--force-rm", "--build-arg", f"POSTGRES_IMAGE={stand_in_base}", "-t", tag, str(IMAGE_CONTEXT),
               env={"DOCKER_BUILDKIT": "0"}, timeout=300)
        probe = ("cat /var/log/apt-get.log /etc/apt/sources.list.d/pgdg-archive.list; "
                 "ls -ln /usr/local/bin/backup-loop.sh /usr/local/bin/coderz-entrypoint.sh; "
                 "ls -lnd /var/lib/pgbackrest /etc/pgbackrest /srv/metrics")
        out = docker("run", "--rm", "--network", "none", "--entrypoint", "sh", tag, "-c", probe).splitlines()
        assert out[0] == "update"
        assert out[1] == f"install -y --no-install-recommends pgbackrest={pinned_version()} jq busybox"
        assert out[2] == PGDG_LIST.replace("//apt.postgresql.org/", "//apt-archive.postgresql.org/").replace(
            "bookworm-pgdg ", "bookworm-pgdg-archive ")
        assert all(line.startswith("-rwxr-xr-x") and " 0 " in line for line in out[3:5])
        assert all(" 999 " in line for line in out[5:]) and len(out) == 8
        script = docker("run", "--rm", "--network", "none", "--entrypoint", "cat", tag, "/usr/local/bin/backup-loop.sh")
        assert script == LOOP_SCRIPT.read_text().strip()
        assert docker("inspect", "-f", "{{json .Config.Entrypoint}} {{json .Config.Cmd}}", tag) == \
            '["coderz-entrypoint.sh"] ["postgres"]'
        check_alpine_refusal(tag)
    finally:
        docker("rmi", "-f", tag, check=False)


def check_alpine_refusal(tag: str) -> None:
    """A data folder an alpine image made (owner uid 70) is refused before the official
    entrypoint could take it over; Debian's (uid 999) goes on to it."""
    from tests.pg_stack import docker

    volume = tag.replace(":", "-").replace("/", "-") + "-data"
    try:
        for owner, expected in ((70, 64), (999, 0)):
            docker("run", "--rm", "--network", "none", "-v", f"{volume}:/data", "--entrypoint", "sh", tag, "-c",
                   f"rm -rf /data/pgdata && mkdir /data/pgdata && echo 16 >/data/pgdata/PG_VERSION "
                   f"&& chown -R {owner}:{owner} /data/pgdata")
            done = subprocess.run(["docker", "run", "--rm", "--network", "none", "-e", "PGDATA=/data/pgdata",
                                   "-v", f"{volume}:/data", tag, "postgres", "--version"],
                                  capture_output=True, text=True, timeout=60)
            assert done.returncode == expected, done.stderr
            if owner == 70:
                assert "made by an alpine PostgreSQL image (owner uid 70): refusing" in done.stderr
            else:
                assert done.stdout.startswith("postgres (PostgreSQL)")
    finally:
        docker("volume", "rm", "-f", volume, check=False)
