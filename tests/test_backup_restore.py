"""Backups that restore, for real: Debian's PostgreSQL and pgBackRest on 127.0.0.1, with the
archiving settings and pgbackrest.conf components/backup renders, driven through the code of
`coderz backup`, `coderz backups` and `coderz restore`."""

from __future__ import annotations

import argparse
import time
from datetime import datetime, timezone
from pathlib import Path

import pytest

from infra.cli import EXIT_FAILED, EXIT_REFUSED, CliError
from infra.cli import backup as backup_command
from infra.cli import backups as backups_command
from infra.cli.pgbackrest import parse_info, parse_time
from infra.cli.restore import restore
from tests.backup_harness import cluster, empty_node


def rows(node) -> list[str]:
    return node.sql("SELECT string_agg(v, ',' ORDER BY id) FROM t").split(",")


def write(node, *values: str) -> None:
    node.sql("INSERT INTO t (v) VALUES " + ",".join(f"('{v}')" for v in values))


def server_now(node) -> datetime:
    return parse_time(node.sql("SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')"))


def archive_everything(node) -> None:
    # `check` switches to a new WAL segment and waits until it is archived.
    node.pgbackrest("check")


def take_backup(node, kind: str = "full") -> None:
    assert backup_command.handle(argparse.Namespace(stack="test", type=kind), node) == 0


@pytest.fixture(scope="module")
def history():
    """A full backup, then writes on both sides of an instant T, all archived; yields the
    cluster, T and the WAL segments written after the backup (a restore to T needs them all).
    Tests that restore into a fresh folder come first; the one that restores in place, last."""
    with cluster() as node:
        node.sql("CREATE TABLE t (id serial PRIMARY KEY, v text)")
        write(node, "a1", "a2")
        take_backup(node)
        time.sleep(1.1)  # pgBackRest keeps backup times to the second: T must be a second later
        segments_before = set(Path(node.paths.repo).rglob("0000000100000000*"))
        write(node, "b1")
        node.sql("SELECT pg_switch_wal()")
        write(node, "b2")
        time.sleep(0.05)
        moment = server_now(node)
        time.sleep(0.05)
        write(node, "c1")
        write(node, "c2")
        archive_everything(node)
        after = sorted(set(Path(node.paths.repo).rglob("0000000100000000*")) - segments_before)
        assert after, "the writes after the backup were archived"
        yield node, moment, after


def test_restore_into_a_clone_brings_back_exactly_the_data_up_to_t_and_leaves_the_source_alone(history):
    node, moment, _ = history
    assert rows(node) == ["a1", "a2", "b1", "b2", "c1", "c2"]
    # An empty folder: recovery can only read the repository (as on a host whose disk was lost).
    with empty_node(node) as clone:
        assert restore("test", node, clone, moment) == 0
        assert rows(clone) == ["a1", "a2", "b1", "b2"]
        assert clone.app_log == ["stop", "start coderz-test-python-api"]
    assert rows(node) == ["a1", "a2", "b1", "b2", "c1", "c2"]


@pytest.mark.parametrize("damage", ["missing", "corrupted"])
def test_a_missing_or_corrupted_wal_segment_fails_the_restore_loudly(history, damage):
    node, moment, after = history
    victim = after[0]
    original = victim.read_bytes()
    try:
        if damage == "missing":
            victim.unlink()
        else:
            victim.write_bytes(b"\0garbage" * 64)
        with empty_node(node) as fresh, pytest.raises(CliError) as failed:
            try:
                restore("test", node, fresh, moment)
            finally:
                # Never a silent partial restore: the database is not open, the apps not started.
                assert not fresh.running()
                assert fresh.app_log == ["stop"]
    finally:
        victim.write_bytes(original)
    message = str(failed.value)
    assert failed.value.code == EXIT_FAILED
    assert "did not finish recovery" in message and "recovery ended before configured recovery target was reached" in message
    assert "stay stopped" in message


def test_backups_lists_newest_first_with_age_and_size(history, capsys):
    node, _, _ = history
    take_backup(node, "diff")
    backups, oldest_wal, newest_wal = parse_info(node.pgbackrest("--output=json", "info"))
    assert [b.kind for b in backups] == ["diff", "full"]
    assert backups[0].finished >= backups[1].finished and all(b.size > 0 for b in backups)
    assert oldest_wal and newest_wal and oldest_wal <= newest_wal
    now = datetime.now(timezone.utc)
    capsys.readouterr()
    assert backups_command.handle(argparse.Namespace(stack="test"), node, now=now) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["label", "type", "finished", "(UTC)", "age", "size"]
    assert lines[1].split()[1] == "diff" and lines[2].split()[1] == "full"
    assert lines[1].split()[0].endswith("D") and lines[2].split()[0].endswith("F")
    assert "restorable from" in lines[-1]


def test_a_time_before_the_oldest_backup_is_refused_before_anything_stops(history):
    node, _, _ = history
    with pytest.raises(CliError) as refused:
        restore("test", node, node, parse_time("2020-01-01T00:00:00Z"))
    assert refused.value.code == EXIT_REFUSED and "outside the window" in str(refused.value)
    assert node.app_log == [] and node.running()


def test_restore_in_place_stops_the_apps_restores_to_t_and_starts_them_again(history, capsys):
    node, moment, _ = history
    assert restore("test", node, node, moment) == 0
    assert rows(node) == ["a1", "a2", "b1", "b2"]
    assert node.app_log == ["stop", "start coderz-test-python-api"]
    assert f"restored to {moment:%Y-%m-%d %H:%M:%S} UTC" in capsys.readouterr().out
    # The restored cluster is promoted: it takes writes again.
    write(node, "after")
    assert rows(node)[-1] == "after"
