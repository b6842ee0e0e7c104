"""Retention by window, for real: pgBackRest expires exactly the backups (and WAL) outside the
stack's window, and keeps the full backup that the window's first day still needs.

Time passes through libfaketime: PostgreSQL and pgBackRest both run with the clock set back
(pgBackRest takes a backup's time from the database), so the backups are really 40, 35 and 0
days old when the last one's automatic expire runs. No repository file is edited."""

from __future__ import annotations

import glob
import json
from datetime import datetime, timedelta, timezone

from components.backup.settings import BackupConfig
from tests.backup_harness import cluster
from tests.servers import IN_CI, require_tool

import pytest


def libfaketime() -> str:
    require_tool("faketime")
    found = sorted(glob.glob("/usr/lib/*/faketime/libfaketime.so.1"))
    if not found:
        message = "libfaketime is not installed (apt install faketime)"
        pytest.fail(message) if IN_CI else pytest.skip(message)
    return found[0]


def backup_at(node, offset: str | None, *kinds: str) -> None:
    """Restart the cluster with its clock `offset` days back (None: the real clock), back up."""
    node.stop_database()
    for key in ("LD_PRELOAD", "FAKETIME", "FAKETIME_DONT_RESET"):
        node.environment.pop(key, None)
    if offset:
        node.environment.update(LD_PRELOAD=libfaketime(), FAKETIME=offset, FAKETIME_DONT_RESET="1")
    node.start_database()
    for kind in kinds:
        node.sql(f"INSERT INTO t (v) VALUES ('{offset} {kind}')")
        node.pgbackrest(f"--type={kind}", "backup")


def test_time_retention_expires_only_what_is_outside_the_window():
    libfaketime()
    with cluster(BackupConfig(enabled=True, retention_days=30)) as node:
        node.sql("CREATE TABLE t (id serial PRIMARY KEY, v text)")
        backup_at(node, "-40d", "full", "diff")
        first_archive = json.loads(node.pgbackrest("--output=json", "info"))[0]["archive"][0]["min"]
        backup_at(node, "-35d", "full")
        backup_at(node, None, "full")
        info = json.loads(node.pgbackrest("--output=json", "info"))[0]
    today = datetime.now(timezone.utc)
    labels = [(b["label"][:8], b["type"]) for b in info["backup"]]
    # -40d: the full and its diff are gone; -35d: kept, the window's first 5 days need it.
    assert labels == [((today - timedelta(days=35)).strftime("%Y%m%d"), "full"), (today.strftime("%Y%m%d"), "full")]
    assert info["archive"][0]["min"] > first_archive, "the WAL of the expired backups is gone too"
