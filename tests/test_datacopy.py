"""infra/datacopy.py for real: every application database copied between two PostgreSQL
servers on 127.0.0.1 whose roles were made by the production init script with different
passwords, including Unicode data, a database the target lacks, and the refusals."""

from __future__ import annotations

import dataclasses
import os
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from components.postgres_init import AppDatabase, MonitorRole, render_init_sql
from infra.datacopy import CopyError, DockerPostgres, TcpPostgres, copy_databases, query
from tests.servers import postgres_server, require_module, require_tool

UNICODE_ROWS = [(1, "naïve café ☕"), (2, "日本語のテキスト"), (3, "emoji 🐘 and\nnewline\ttab"), (4, "it's \\ quoted \"x\"")]
APPS = ("dotnet_api", "python_api")


def init(server: dict, password_prefix: str, apps: tuple[str, ...] = APPS) -> dict[str, str]:
    """Roles and databases as a stack's PostgreSQL has them; returns each role's password."""
    passwords = {app: f"{password_prefix}-{app}-pw" for app in apps}
    sql = render_init_sql([AppDatabase(name=a, owner=a, password=p) for a, p in passwords.items()],
                          [MonitorRole(name="metrics", password=f"{password_prefix}-metrics")])
    result = subprocess.run(
        [require_tool("psql"), "--no-psqlrc", "-v", "ON_ERROR_STOP=1", "-d", "postgres", "-f", "-"],
        input=sql, text=True, capture_output=True, check=False, timeout=60,
        env={**os.environ, "PGHOST": "127.0.0.1", "PGPORT": str(server["port"]), "PGUSER": "postgres",
             "PGPASSWORD": str(server["password"])},
    )
    assert result.returncode == 0, result.stderr
    return passwords


def connect(server: dict, user: str, password: str, dbname: str):
    psycopg = require_module("psycopg")
    return psycopg.connect(host="127.0.0.1", port=server["port"], user=user, password=password, dbname=dbname,
                           connect_timeout=5, autocommit=True)


def side(server: dict) -> TcpPostgres:
    return TcpPostgres(host="127.0.0.1", port=int(server["port"]), user="postgres", password=str(server["password"]))


def databases(server: dict) -> dict[str, str]:
    return dict(query(side(server), "postgres", "SELECT datname, pg_get_userbyid(datdba) FROM pg_database"))


@pytest.fixture(scope="module")
def servers() -> Iterator[tuple[dict, dict]]:
    require_tool("pg_dump")
    require_module("psycopg")
    with postgres_server() as source, postgres_server() as target:
        yield source, target


def test_every_database_is_copied_owned_by_the_targets_roles(servers):
    source, target = servers
    source_pw, target_pw = init(source, "source"), init(target, "target")
    with connect(source, "python_api", source_pw["python_api"], "python_api") as conn:
        conn.execute("CREATE TABLE notes (id int PRIMARY KEY, body text NOT NULL)")
        conn.execute("CREATE SEQUENCE ticket_seq START 100")
        conn.execute("CREATE VIEW long_notes AS SELECT * FROM notes WHERE length(body) > 10")
        conn.cursor().executemany("INSERT INTO notes VALUES (%s, %s)", UNICODE_ROWS)
        conn.execute("SELECT nextval('ticket_seq')")
    with connect(source, "dotnet_api", source_pw["dotnet_api"], "dotnet_api") as conn:
        conn.execute("CREATE SCHEMA shop")
        conn.execute("CREATE TABLE shop.orders (id serial PRIMARY KEY, item text)")
        conn.execute("INSERT INTO shop.orders (item) SELECT 'item ' || g FROM generate_series(1, 500) g")
        conn.execute("CREATE TABLE empty_table (x int)")
    # The new stack's app already made a table on start; the target lacks python_api entirely.
    with connect(target, "dotnet_api", target_pw["dotnet_api"], "dotnet_api") as conn:
        conn.execute("CREATE TABLE empty_table (x int)")
        conn.execute("INSERT INTO empty_table VALUES (42)")
    with connect(target, "postgres", str(target["password"]), "postgres") as conn:
        conn.execute("DROP DATABASE python_api")

    report = {copy.name: copy for copy in copy_databases(side(source), side(target))}

    assert set(report) == set(APPS)
    assert report["python_api"].created and not report["dotnet_api"].created
    assert report["python_api"].rows == {"public.notes": 4}
    assert report["dotnet_api"].rows == {"shop.orders": 500, "public.empty_table": 0}
    assert report["dotnet_api"].summary() == "dotnet_api (owner dotnet_api): 2 tables, 500 rows"
    assert report["python_api"].summary() == "python_api (owner python_api, created): 1 tables, 4 rows"
    # the target's roles, with the target's passwords, own and read everything
    with connect(target, "python_api", target_pw["python_api"], "python_api") as conn:
        assert conn.execute("SELECT id, body FROM notes ORDER BY id").fetchall() == UNICODE_ROWS
        assert conn.execute("SELECT count(*) FROM long_notes").fetchone() == (3,)
        assert conn.execute("SELECT nextval('ticket_seq')").fetchone() == (101,)
        owners = conn.execute("SELECT DISTINCT tableowner FROM pg_tables WHERE schemaname = 'public'").fetchall()
        assert owners == [("python_api",)]
        assert conn.execute("SELECT pg_encoding_to_char(encoding) FROM pg_database WHERE datname = current_database()"
                            ).fetchone() == ("UTF8",)
    with connect(target, "dotnet_api", target_pw["dotnet_api"], "dotnet_api") as conn:
        assert conn.execute("SELECT count(*), max(item) FROM shop.orders").fetchone() == (500, "item 99")
        assert conn.execute("SELECT count(*) FROM empty_table").fetchone() == (0,)  # the source's table, not the stale one
        assert conn.execute("INSERT INTO shop.orders (item) VALUES ('new') RETURNING id").fetchone() == (501,)
        assert conn.execute("SELECT nspowner::regrole::text FROM pg_namespace WHERE nspname = 'shop'").fetchone() == (
            "dotnet_api",)
    # the created database is as the init script makes them: the app's own, closed to others
    assert databases(target)["python_api"] == "python_api"
    psycopg = require_module("psycopg")
    with pytest.raises(psycopg.OperationalError, match="permission denied for database"):
        connect(target, "dotnet_api", target_pw["dotnet_api"], "python_api")
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        connect(target, "python_api", source_pw["python_api"], "python_api")


@dataclasses.dataclass(frozen=True)
class BrokenDump:
    """A source whose pg_dump stops half-way with an error (a dropped connection)."""

    inner: TcpPostgres
    label: str = "broken"

    stall: bool = False

    def command(self, tool, database, *, stdin=False):
        argv, env = self.inner.command(tool, database, stdin=stdin)
        if tool != "pg_dump":
            return argv, env
        if self.stall:  # half a dump, then nothing: only the watchdog ends it
            return ["sh", "-c", 'pg_dump "$@" | head -c 1500; exec sleep 60', "sh"], env
        return ["sh", "-c", 'pg_dump "$@" | head -c 1500; echo "connection lost" >&2; exit 1', "sh"], env


def test_a_failed_dump_restores_nothing(servers):
    source, target = servers
    source_pw, target_pw = init(source, "source"), init(target, "target2")
    with connect(source, "dotnet_api", source_pw["dotnet_api"], "dotnet_api") as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS half (id int)")
    with connect(target, "dotnet_api", target_pw["dotnet_api"], "dotnet_api") as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS kept (v text)")
        conn.execute("INSERT INTO kept VALUES ('still here')")
        before = conn.execute("SELECT table_schema, table_name FROM information_schema.tables "
                              "WHERE table_schema NOT IN ('pg_catalog', 'information_schema') ORDER BY 1, 2").fetchall()
    with pytest.raises(CopyError, match="pg_dump of 'dotnet_api' failed, nothing restored: connection lost"):
        copy_databases(BrokenDump(side(source)), side(target))
    with pytest.raises(CopyError, match="pg_dump of 'dotnet_api' failed, nothing restored: timed out after 2s"):
        copy_databases(BrokenDump(side(source), stall=True), side(target), timeout=2)
    with connect(target, "dotnet_api", target_pw["dotnet_api"], "dotnet_api") as conn:
        after = conn.execute("SELECT table_schema, table_name FROM information_schema.tables "
                             "WHERE table_schema NOT IN ('pg_catalog', 'information_schema') ORDER BY 1, 2").fetchall()
        assert after == before and conn.execute("SELECT v FROM kept").fetchall() == [("still here",)]


def test_a_database_without_a_role_on_the_target_is_refused_before_anything_is_copied(servers):
    source, target = servers
    init(source, "source", APPS + ("legacy_api",))
    target_dbs = databases(target)
    try:
        with pytest.raises(CopyError, match="no database 'legacy_api' and no login role 'legacy_api'"):
            copy_databases(side(source), side(target))
        assert databases(target) == target_dbs
    finally:
        query(side(source), "postgres", "DROP DATABASE legacy_api")
        query(side(source), "postgres", "DROP ROLE legacy_api")


def test_docker_side_runs_the_tools_inside_the_stacks_container(tmp_path: Path, monkeypatch):
    """The production side: argv and DOCKER_HOST for `docker exec`, proven with a stand-in
    `docker` that records its arguments and environment."""
    record = tmp_path / "argv"
    docker = tmp_path / "docker"
    docker.write_text(f'#!/bin/sh\nprintf "%s|" "$DOCKER_HOST" "$@" > {record}\nprintf "a\\037b\\036c\\037d\\036\\n"\n')
    docker.chmod(0o755)
    pg = DockerPostgres(container="coderz-pr-1-postgres", docker_host="ssh://deploy@qa.coderz.example:22")
    monkeypatch.setenv("PATH", f"{tmp_path}:{os.environ['PATH']}")
    rows = query(pg, "we=ird db", "SELECT 1")
    assert rows == [("a", "b"), ("c", "d")]
    argv = record.read_text().split("|")
    assert argv[:8] == ["ssh://deploy@qa.coderz.example:22", "exec", "-e", "PGDATABASE=we=ird db",
                        "coderz-pr-1-postgres", "psql", "-U", "postgres"]
    assert pg.command("psql", "x", stdin=True)[0][:3] == ["docker", "exec", "-i"]


def test_clone_with_data_deploys_then_copies_through_each_hosts_docker(servers, tmp_path, monkeypatch, capsys):
    """`coderz clone qa pr-5 --host other --with-data` end to end: the stand-in `pulumi` records the
    engine calls; the stand-in `docker` runs each `docker exec` against the real server that
    plays that stack's container, and records the DOCKER_HOST it was given."""
    from infra.cli import EXIT_OK, main
    from tests.standins import calls, copy_project, install_docker, install_pulumi, path_without

    (tmp_path / "project").mkdir()
    root = copy_project(tmp_path / "project")
    qa = root / "Pulumi.qa.yaml"
    qa.write_text(qa.read_text() + "  coderz:sshPrivateKey:\n    secure: v1:AAAA\n"
                  "  coderz:smtpPassword:\n    secure: v1:BBBB\n")
    log = tmp_path / "calls.jsonl"
    source, target = servers
    source_pw, target_pw = init(source, "qa"), init(target, "pr5")
    with connect(source, "python_api", source_pw["python_api"], "python_api") as conn:
        conn.execute("CREATE TABLE visits (id int PRIMARY KEY, page text)")
        conn.cursor().executemany("INSERT INTO visits VALUES (%s, %s)", UNICODE_ROWS)
    install_pulumi(tmp_path / "bin", log)
    install_docker(tmp_path / "bin", log, {"coderz-qa-postgres": source, "coderz-pr-5-postgres": target})
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}:{path_without('pulumi')}")
    code = main(["clone", "qa", "pr-5", "--host", "other.coderz.example", "--with-data", "--dir", str(root)])
    out = capsys.readouterr().out
    assert code == EXIT_OK, out
    with connect(target, "python_api", target_pw["python_api"], "python_api") as conn:
        assert conn.execute("SELECT id, page FROM visits ORDER BY id").fetchall() == UNICODE_ROWS
    engine = calls(log)
    assert engine[1:5] == [["stack", "ls", "--json"], ["stack", "init", "pr-5"],
                           ["config", "copy", "--stack", "qa", "--dest", "pr-5", "--", "coderz:sshPrivateKey"],
                           ["config", "copy", "--stack", "qa", "--dest", "pr-5", "--", "coderz:smtpPassword"]]
    assert ["stack", "select", "--stack", "pr-5"] in engine
    (up,) = [c for c in engine if c[0] == "up"]
    assert up[1:3] == ["--yes", "--skip-preview"] and up[-2:] == ["--stack", "pr-5"]
    hosts = {(c[c.index("-e") + 2], c[-1]) for c in calls(log, "docker")}
    assert hosts == {("coderz-qa-postgres", "DOCKER_HOST=ssh://deploy@qa.coderz.example:22"),
                     ("coderz-pr-5-postgres", "DOCKER_HOST=ssh://deploy@other.coderz.example:22")}
    assert "copied 2 databases from qa into pr-5:" in out
    copied = {line.split(" ")[2]: line for line in out.splitlines() if line.startswith("  ")}
    assert set(copied) == set(APPS) and "differ from the source" not in out
    assert re.fullmatch(r"  python_api \(owner python_api\): \d+ tables, \d+ rows", copied["python_api"])


def test_a_table_that_changed_during_the_copy_is_named():
    from infra.datacopy import DatabaseCopy

    copy = DatabaseCopy("app", "app", False, rows={"public.a": 3, "public.b": 1, "public.c": 0},
                        source_rows={"public.a": 4, "public.b": 1})
    assert copy.summary() == ("app (owner app): 3 tables, 4 rows; tables only the target has, left as they were: "
                              "public.c; row counts differ from the source now (written to during the copy?): public.a")
