"""`coderz backup` and `coderz restore`, through the CLI's own entry point, against the real
Docker daemon: a stack's PostgreSQL, backup sidecar (the repository's backup-loop.sh) and an
application container, named and labelled as the program deploys them (tests/pg_stack.py; the
host's PostgreSQL 15 stands in for the stack's 16: the mechanics are the same)."""

from __future__ import annotations

import secrets
import time
from pathlib import Path

import pytest

from components.yamltext import dump_yaml, load_yaml
from infra.cli import EXIT_FAILED, EXIT_OK, main
from infra.config import REPO_ROOT, stack_file_config
from tests.pg_stack import StackDb, docker

OTHER_HOUR = (time.gmtime().tm_hour + 12) % 24  # the sidecars' schedule stays out of the way


def rows(db: StackDb) -> list[str]:
    return db.sql("SELECT string_agg(v, ',' ORDER BY id) FROM t").split(",")


def write(db: StackDb, value: str) -> None:
    db.sql(f"INSERT INTO t (v) VALUES ('{value}')")


def cli(root: Path, *argv: str) -> int:
    return main([*argv, "--dir", str(root)])


def started(db: StackDb, name: str) -> tuple[bool, str]:
    state = db.state(name)
    return state["Running"], state["StartedAt"]


def stack_file(root: Path, name: str) -> None:
    """qa's stack file, on the local engine (the daemon this test drives)."""
    document = load_yaml((REPO_ROOT / "Pulumi.qa.yaml").read_text())
    config = document["config"]
    config["coderz:target"] = {"kind": "local"}
    config.pop("coderz:sshPrivateKey", None)
    (root / f"Pulumi.{name}.yaml").write_text(dump_yaml(document))
    (root / "Pulumi.yaml").write_text((REPO_ROOT / "Pulumi.yaml").read_text())  # a project folder


@pytest.fixture(scope="module")
def world(pg_image, tmp_path_factory, monkeypatch_module):
    """qa (a random stack name of the qa kind) with a table written before a backup taken by
    `coderz backup`, then on both sides of an instant T, all archived; and its clone, made by
    `coderz clone` and running with its own first backup. Everything removed at the end."""
    root = tmp_path_factory.mktemp("stacks")
    suffix = secrets.token_hex(3)
    qa_name, clone_name = f"qa-{suffix}", f"qa-{suffix}-clone"
    stack_file(root, qa_name)
    monkeypatch_module.setattr("infra.cli.clone.has_engine", lambda: False)  # no pulumi here: the file only
    assert cli(root, "clone", qa_name, clone_name) == EXIT_OK
    qa = StackDb(qa_name, pg_image, stack_file_config(qa_name, root).backup)
    clone = StackDb(clone_name, pg_image, stack_file_config(clone_name, root).backup)
    try:
        for db in (qa, clone):
            db.up(hour_utc=OTHER_HOUR)
        qa.wait_first_backup()
        qa.sql("CREATE TABLE t (id serial PRIMARY KEY, v text)")
        write(qa, "a1")
        assert cli(root, "backup", qa_name) == EXIT_OK
        write(qa, "b1")
        b1_segment = qa.sql("SELECT pg_walfile_name(pg_current_wal_lsn())")
        qa.sql("SELECT pg_switch_wal()")
        write(qa, "b2")
        time.sleep(0.05)
        moment = qa.sql("SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')")
        time.sleep(0.05)
        write(qa, "c1")
        qa.pgbackrest("check")  # switches to a new segment and waits until it is archived
        clone.wait_first_backup()
        clone.sql("CREATE TABLE t (id serial PRIMARY KEY, v text)")
        write(clone, "clone-only")
        yield root, qa, clone, moment, b1_segment
    finally:
        qa.remove()
        clone.remove()


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as patch:
        yield patch


def test_restore_into_a_clone_brings_back_exactly_the_data_up_to_t_and_leaves_qa_running(world):
    root, qa, clone, moment, _ = world
    qa_before = {name: started(qa, name) for name in (qa.postgres, *qa.apps)}
    clone_app = started(clone, clone.apps[0])
    assert cli(root, "restore", qa.stack, "--time", moment, "--into", clone.stack) == EXIT_OK
    assert rows(clone) == ["a1", "b1", "b2"]
    # qa: its data, its PostgreSQL and its application untouched (not even restarted).
    assert rows(qa) == ["a1", "b1", "b2", "c1"]
    assert {name: started(qa, name) for name in (qa.postgres, *qa.apps)} == qa_before
    # The clone's application was stopped for the restore and started again.
    running, since = started(clone, clone.apps[0])
    assert running and since != clone_app[1]
    # The clone goes on as a fork of qa at T: its repository is a copy of qa's, so WAL archiving
    # and its own backups work on the restored cluster.
    clone.pgbackrest("check")
    assert cli(root, "backup", clone.stack) == EXIT_OK


def test_a_damaged_repository_fails_the_restore_in_place_and_leaves_everything_stopped(world, capsys):
    root, qa, _, moment, b1_segment = world
    app = qa.apps[0]
    folder = "/var/lib/pgbackrest/archive/main"
    found = qa.pgbackrest("archive-get", b1_segment, "/tmp/probe")  # the segment is there before the damage
    assert "found" in found or found == ""
    hide = f"for f in {folder}/*/*/{b1_segment}-*; do mv \"$f\" \"$(dirname $f)/hidden-$(basename $f)\"; done"
    unhide = f"for f in {folder}/*/*/hidden-{b1_segment}-*; do mv \"$f\" \"${{f%/*}}/${{f##*/hidden-}}\"; done"
    docker("exec", "-u", "postgres", qa.sidecar, "sh", "-c", hide)
    try:
        capsys.readouterr()
        assert cli(root, "restore", qa.stack, "--time", moment) == EXIT_FAILED
        message = capsys.readouterr().err
        assert "did not finish recovery" in message and "recovery ended before configured recovery target" in message
        assert f"applications ({app}; start them once the database is back) stay stopped" in message
        assert "nothing was opened half-restored" in message
        time.sleep(2)  # a container the daemon would restart shows up as running again by now
        for name in (qa.postgres, app):
            state = qa.state(name)
            assert not state["Running"] and not state["Restarting"], name
    finally:
        docker("exec", "-u", "postgres", qa.sidecar, "sh", "-c", unhide)
    # With the segment back, the same restore in place works; the operator starts the
    # application the failed restore left stopped, as it said.
    assert cli(root, "restore", qa.stack, "--time", moment) == EXIT_OK
    assert rows(qa) == ["a1", "b1", "b2"]
    assert "applications started again: none were running" in capsys.readouterr().out
    docker("start", app)
    # A restore in place with the application running: stopped for it, started again after.
    write(qa, "d1")
    running, since = started(qa, app)
    assert running
    assert cli(root, "restore", qa.stack) == EXIT_OK
    assert rows(qa) == ["a1", "b1", "b2", "d1"]
    running_after, since_after = started(qa, app)
    assert running_after and since_after != since
    assert f"applications started again: {app}" in capsys.readouterr().out
