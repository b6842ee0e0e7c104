"""components/postgres_init.py against a real PostgreSQL: the init script run twice through
psql, what each app role can and cannot reach, and the tuning as the server reports it."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from components.postgres_init import (
    AppDatabase,
    MonitorRole,
    postgres_command,
    postgres_settings,
    quote_ident,
    quote_literal,
    render_init_sql,
    scram_verifier,
)
from tests.servers import (
    free_port,
    postgres_server,
    process,
    require_module,
    require_tool,
    scratch_dir,
)

# Passwords that break naive quoting: quotes, backslashes, psql's :variables, dollar quotes.
NASTY = "it's a \\\"pass\\word\"; $$ :foo :'bar' -- \\gexec E'\\x41'"
# Non-ASCII: SASLprep maps the no-break space to a space, drops the soft hyphen and NFKC
# turns the "ﬁ" ligature into "fi"; the verifier must hash what libpq hashes.
UNICODE = "pässwörd\u00a0\u00adﬁnal-€"
# A control character makes SASLprep refuse the string: PostgreSQL then hashes the raw bytes.
PROHIBITED = "bell-\u00e4\x07"

ALPHA = AppDatabase(name="alpha", owner="alpha_app", password=NASTY)
BETA = AppDatabase(name='be"ta-db', owner='be"ta app', password=UNICODE)


# --- helpers ---------------------------------------------------------------------------------


def psql(server: dict, sql: str, workdir: Path) -> subprocess.CompletedProcess:
    """Run a script the way the official image runs /docker-entrypoint-initdb.d/*.sql."""
    script = workdir / "init.sql"
    script.write_text(sql)
    argv = [require_tool("psql"), "-v", "ON_ERROR_STOP=1", "--no-psqlrc", "--no-password",
            "-h", str(server["host"]), "-p", str(server["port"]), "-U", str(server["user"]),
            "--dbname", "postgres", "-f", str(script)]
    env = {**os.environ, "PGPASSWORD": str(server["password"]), "PGCONNECT_TIMEOUT": "5"}
    return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60, check=False)


def connect(server: dict, user: str, password: str, dbname: str):
    psycopg = require_module("psycopg")
    return psycopg.connect(host=server["host"], port=server["port"], user=user, password=password,
                           dbname=dbname, connect_timeout=5, autocommit=True)


def superuser(server: dict):
    return connect(server, str(server["user"]), str(server["password"]), "postgres")


@pytest.fixture(scope="module")
def server() -> Iterator[dict]:
    require_tool("psql")
    require_module("psycopg")
    with postgres_server() as srv:
        yield srv


# --- rendering, no server --------------------------------------------------------------------


def test_script_holds_no_plain_password_and_is_stable():
    sql = render_init_sql([ALPHA, BETA])
    assert NASTY not in sql and UNICODE not in sql and "pass\\word" not in sql
    assert sql == render_init_sql([ALPHA, BETA])  # same input, same text: no Pulumi diff
    assert sql.count("SCRAM-SHA-256$4096:") == 2
    assert "password" not in repr(ALPHA)  # kept out of logs and tracebacks


def test_verifier_depends_on_role_and_password():
    one = scram_verifier("a", "pw")
    assert re.fullmatch(r"SCRAM-SHA-256\$4096:[A-Za-z0-9+/=]{24}\$[A-Za-z0-9+/=]{44}:[A-Za-z0-9+/=]{44}", one)
    assert one != scram_verifier("b", "pw") and one != scram_verifier("a", "pw2")


def test_quoting():
    assert quote_ident('we"ird') == '"we""ird"'
    assert quote_literal("it's") == "'it''s'"
    assert quote_literal("a\\b'c") == "E'a\\\\b''c'"
    with pytest.raises(ValueError):
        quote_literal("nul\x00")


@pytest.mark.parametrize("fields", [
    {"name": "postgres", "owner": "x", "password": "p"},
    {"name": "template1", "owner": "x", "password": "p"},
    {"name": "db", "owner": "pg_monitor", "password": "p"},
    {"name": "db", "owner": "public", "password": "p"},
    {"name": "db", "owner": "postgres", "password": "p"},
    {"name": "d" * 64, "owner": "x", "password": "p"},
    {"name": "db", "owner": "x\ny", "password": "p"},
    {"name": "db", "owner": "x", "password": ""},
    {"name": "db", "owner": "x", "password": "nul\x00"},
    {"name": "db", "owner": "x", "password": "p", "extra": 1},
])
def test_rejects_bad_declarations(fields):
    with pytest.raises(ValueError):
        AppDatabase(**fields)


def test_rejects_duplicates_and_conflicting_passwords():
    with pytest.raises(ValueError, match="twice"):
        render_init_sql([ALPHA, ALPHA.model_copy(update={"owner": "other"})])
    with pytest.raises(ValueError, match="two different passwords"):
        render_init_sql([ALPHA, AppDatabase(name="alpha2", owner=ALPHA.owner, password="different")])
    # one role may own two databases when its password agrees
    assert render_init_sql([ALPHA, AppDatabase(name="alpha2", owner=ALPHA.owner, password=NASTY)])


# --- the script on a real server ---------------------------------------------------------------


def test_init_script_runs_twice_and_isolates_apps(server, tmp_path):
    psycopg = require_module("psycopg")
    sql = render_init_sql([ALPHA, BETA])
    for run in (1, 2):
        result = psql(server, sql, tmp_path)
        assert result.returncode == 0, f"run {run}: {result.stderr}"

    for app, other in ((ALPHA, BETA), (BETA, ALPHA)):
        with connect(server, app.owner, app.password, app.name) as conn:
            conn.execute("CREATE TABLE notes (id int PRIMARY KEY, body text)")
            conn.execute("INSERT INTO notes VALUES (1, %s)", (app.name,))
            assert conn.execute("SELECT body FROM notes").fetchone() == (app.name,)
            assert conn.execute("SELECT current_user").fetchone() == (app.owner,)
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute("CREATE DATABASE sneaky")
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute("CREATE ROLE sneaky")
        with pytest.raises(psycopg.OperationalError, match="permission denied for database"):
            connect(server, app.owner, app.password, other.name)
        with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
            connect(server, app.owner, app.password + "x", app.name)

    with superuser(server) as conn:
        for app in (ALPHA, BETA):
            row = conn.execute(
                "SELECT r.rolsuper, r.rolcreatedb, r.rolcreaterole, r.rolreplication, r.rolcanlogin, "
                "       pg_get_userbyid(d.datdba), has_database_privilege('public', d.oid, 'CONNECT') "
                "FROM pg_roles r, pg_database d WHERE r.rolname = %s AND d.datname = %s",
                (app.owner, app.name),
            ).fetchone()
            assert row == (False, False, False, False, True, app.owner, False)


def test_monitor_role_reads_statistics_and_reaches_no_app_database(server, tmp_path):
    psycopg = require_module("psycopg")
    monitor = MonitorRole(name="metrics_reader", password=NASTY)
    sql = render_init_sql([ALPHA], [monitor])
    for run in (1, 2):
        result = psql(server, sql, tmp_path)
        assert result.returncode == 0, f"run {run}: {result.stderr}"
    with connect(server, monitor.name, monitor.password, "postgres") as conn:
        # what postgres-exporter reads: every database's backends and the connection limit
        names = {row[0] for row in conn.execute("SELECT datname FROM pg_stat_database WHERE datname IS NOT NULL")}
        assert ALPHA.name in names
        assert int(conn.execute("SELECT setting FROM pg_settings WHERE name = 'max_connections'").fetchone()[0]) > 0
        assert conn.execute("SELECT pg_has_role(current_user, 'pg_monitor', 'MEMBER')").fetchone() == (True,)
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("CREATE ROLE sneaky")
    with pytest.raises(psycopg.OperationalError, match="permission denied for database"):
        connect(server, monitor.name, monitor.password, ALPHA.name)
    with pytest.raises(ValueError, match="both app owner and monitor"):
        render_init_sql([ALPHA], [MonitorRole(name=ALPHA.owner, password="x")])


def test_rerun_updates_the_password_and_keeps_the_data(server, tmp_path):
    first = AppDatabase(name="gamma", owner="gamma_app", password="first-password")
    second = first.model_copy(update={"password": "second 'password' \\ now"})
    assert psql(server, render_init_sql([first]), tmp_path).returncode == 0
    with connect(server, first.owner, first.password, first.name) as conn:
        conn.execute("CREATE TABLE kept (v int)")
        conn.execute("INSERT INTO kept VALUES (42)")

    result = psql(server, render_init_sql([second]), tmp_path)
    assert result.returncode == 0, result.stderr
    psycopg = require_module("psycopg")
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        connect(server, first.owner, first.password, first.name)
    with connect(server, second.owner, second.password, second.name) as conn:
        assert conn.execute("SELECT v FROM kept").fetchone() == (42,)


def test_password_that_saslprep_refuses(server, tmp_path):
    app = AppDatabase(name="delta", owner="delta_app", password=PROHIBITED)
    result = psql(server, render_init_sql([app]), tmp_path)
    assert result.returncode == 0, result.stderr
    with connect(server, app.owner, app.password, app.name) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)


def test_refuses_to_demote_a_superuser(server, tmp_path):
    with superuser(server) as conn:
        conn.execute("CREATE ROLE boss SUPERUSER LOGIN")
    result = psql(server, render_init_sql([AppDatabase(name="boss_db", owner="boss", password="pw")]), tmp_path)
    assert result.returncode != 0
    assert "is a superuser" in result.stderr
    with superuser(server) as conn:
        assert conn.execute("SELECT rolsuper FROM pg_roles WHERE rolname = 'boss'").fetchone() == (True,)
        assert conn.execute("SELECT count(*) FROM pg_database WHERE datname = 'boss_db'").fetchone() == (0,)


# --- tuning ----------------------------------------------------------------------------------


def test_reference_tuning_at_16_gb():
    assert postgres_settings(16384, 200) == {
        "max_connections": "200",
        "shared_buffers": "4GB",
        "effective_cache_size": "12GB",
        "maintenance_work_mem": "1GB",
        "work_mem": "16MB",
        "wal_level": "replica",
        "max_wal_size": "4GB",
        "min_wal_size": "1GB",
        "checkpoint_completion_target": "0.9",
        "random_page_cost": "1.1",
        "effective_io_concurrency": "200",
        "log_min_duration_statement": "1000",
        "autovacuum": "on",
        "autovacuum_max_workers": "4",
        "autovacuum_naptime": "30s",
    }


def test_tuning_scales_with_memory_and_has_floors():
    small, large = postgres_settings(512, 100), postgres_settings(65536, 100)
    assert (small["shared_buffers"], small["effective_cache_size"]) == ("128MB", "384MB")
    assert small["maintenance_work_mem"] == "32MB" and small["work_mem"] == "4MB"
    assert (small["max_wal_size"], small["min_wal_size"]) == ("1GB", "80MB")
    assert large["maintenance_work_mem"] == "1GB"  # capped
    assert (large["shared_buffers"], large["max_wal_size"]) == ("16GB", "16GB")
    assert postgres_command(512, 100)[:3] == ["postgres", "-c", "max_connections=100"]
    with pytest.raises(ValueError):
        postgres_settings(32, 100)
    with pytest.raises(ValueError):
        postgres_settings(512, 0)


def _as_postgres_user(argv: list[str]) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *argv] if os.geteuid() == 0 else argv


@pytest.fixture(scope="module")
def empty_cluster() -> Iterator[Path]:
    """An initdb'd data directory (trust auth, loopback only), started per test below."""
    initdb = require_tool("initdb")
    workdir = scratch_dir("pg-tuning-")
    if os.geteuid() == 0:
        shutil.chown(workdir, "postgres")
    data = workdir / "data"
    subprocess.run(_as_postgres_user([initdb, "-D", str(data), "-U", "postgres", "-A", "trust", "--no-sync"]),
                   check=True, capture_output=True)
    try:
        yield data
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


@contextlib.contextmanager
def started_with(data: Path, command: list[str]) -> Iterator[int]:
    """Start the server with exactly the container's command line (plus where to listen)."""
    assert command[0] == "postgres"
    port = free_port()
    argv = [require_tool("postgres"), *command[1:], "-D", str(data), "-p", str(port), "-k", str(data.parent),
            "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off"]
    with process(_as_postgres_user(argv), port=port, log=data.parent / f"postgres-{port}.log"):
        try:
            # The port opens before the server accepts logins ("the database system is starting up").
            for _ in range(200):
                if subprocess.run([require_tool("pg_isready"), "-q", "-h", "127.0.0.1", "-p", str(port)]).returncode == 0:
                    break
                time.sleep(0.1)
            yield port
        finally:
            subprocess.run(_as_postgres_user([require_tool("pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"]),
                           capture_output=True, check=False)


# How PostgreSQL writes a value back when it differs from the way it was given.
SHOWN = {("log_min_duration_statement", "1000"): "1s"}


@pytest.mark.parametrize("memory_mb,max_connections", [(512, 100), (4096, 200)])
def test_server_runs_with_the_tuning(empty_cluster, memory_mb, max_connections):
    psycopg = require_module("psycopg")
    settings = postgres_settings(memory_mb, max_connections)
    with (
        started_with(empty_cluster, postgres_command(memory_mb, max_connections)) as port,
        psycopg.connect(host="127.0.0.1", port=port, user="postgres", dbname="postgres", connect_timeout=5) as conn,
    ):
        for key, expected in settings.items():
            shown, source = conn.execute(
                "SELECT current_setting(%s), source FROM pg_settings WHERE name = %s", (key, key)
            ).fetchone()
            assert shown == SHOWN.get((key, expected), expected), key
            assert source == "command line", key
