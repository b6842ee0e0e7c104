"""The rule for missing tools: a skip with its reason by hand, a failure under CI=true."""

from __future__ import annotations

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
