"""The rule for missing tools: a skip with its reason by hand, a failure under CI=true."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests import servers


def test_a_missing_tool_skips_by_hand_with_the_reason(monkeypatch):
    monkeypatch.setattr(servers, "IN_CI", False)
    with pytest.raises(pytest.skip.Exception, match="no-such-tool-xyz is not installed"):
        servers.require_tool("no-such-tool-xyz")


def test_a_missing_tool_fails_under_ci(monkeypatch):
    monkeypatch.setattr(servers, "IN_CI", True)
    with pytest.raises(pytest.fail.Exception, match="a missing tool is a failure under CI=true"):
        servers.require_tool("no-such-tool-xyz")


def test_postgres_binaries_are_found_outside_path():
    # pg_ctl and initdb live in /usr/lib/postgresql/<version>/bin, not on PATH.
    assert servers.require_tool("pg_ctl").endswith("/pg_ctl")


def test_the_backup_scratch_folder_goes_to_memory_only_where_it_fits(tmp_path, monkeypatch):
    """A container's 64 MiB /dev/shm cannot hold a cluster and its backups: disk there."""
    import shutil

    from tests import backup_harness

    shm = tmp_path / "shm"
    shm.mkdir()
    monkeypatch.setattr(backup_harness, "SHM_NEEDED_BYTES", shutil.disk_usage(shm).free + (1 << 40))
    too_small = backup_harness.fast_scratch("fits-", shm=shm)
    monkeypatch.setattr(backup_harness, "SHM_NEEDED_BYTES", 1)
    roomy = backup_harness.fast_scratch("fits-", shm=shm)
    try:
        assert too_small.parent == Path("/tmp") and roomy.parent == shm
        assert too_small.stat().st_mode & 0o777 == roomy.stat().st_mode & 0o777 == 0o755
    finally:
        shutil.rmtree(too_small)
