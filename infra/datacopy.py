"""Copy every application database of one PostgreSQL server into another.

Used by `coderz clone --with-data` between two stacks' `coderz-<stack>-postgres` containers,
through each host's Docker engine (`DockerPostgres`); the tests run the same copy between two
real servers on 127.0.0.1 (`TcpPostgres`).

Per database, `pg_dump --no-owner --no-privileges --clean --if-exists` streams into
`psql --single-transaction` that first switches to the TARGET's owner of that database
(`SET ROLE`): every object restored belongs to the target stack's role, whose password differs
from the source's, and nothing of the source's roles or grants travels. A database the target
lacks is created, owned by the target's role of the same name, with the grants the init script
gives (PUBLIC revoked); if the target has no such role the copy is refused before anything is
copied. A failed dump kills the restore before its COMMIT, so a database is copied whole or
not at all. Row counts are read on both sides afterwards and reported.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import threading
from dataclasses import dataclass, field
from typing import Protocol, Sequence

from components.postgres_init import quote_ident

SUPERUSER = "postgres"  # POSTGRES_USER of the stack's container (components/postgres.py)
MAINTENANCE_DB = "postgres"
LIST_DATABASES = (
    "SELECT datname, pg_get_userbyid(datdba) FROM pg_catalog.pg_database "
    f"WHERE datallowconn AND NOT datistemplate AND datname <> '{MAINTENANCE_DB}' ORDER BY 1"
)
LOGIN_ROLES = "SELECT rolname FROM pg_catalog.pg_roles WHERE rolcanlogin AND NOT rolsuper ORDER BY 1"
# Exact row counts of every ordinary table, in one query (query_to_xml runs a count per table).
COUNT_ROWS = """
SELECT n.nspname, c.relname,
       (xpath('/row/c/text()', query_to_xml(format('SELECT count(*) AS c FROM %I.%I', n.nspname, c.relname),
                                            false, true, '')))[1]::text
FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind = 'r' AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\\_%'
ORDER BY 1, 2
"""
DUMP_FLAGS = ("--no-owner", "--no-privileges", "--clean", "--if-exists", "--encoding=UTF8")
RESTORE_FLAGS = ("--no-psqlrc", "--quiet", "-v", "ON_ERROR_STOP=1", "--single-transaction", "-f", "-")
# ASCII unit and record separators between fields and rows: no name or count carries them.
QUERY_FLAGS = ("--no-psqlrc", "--quiet", "-v", "ON_ERROR_STOP=1", "--no-align", "--tuples-only",
               "--field-separator=\x1f", "--record-separator=\x1e")


class CopyError(Exception):
    """The copy stopped; the message says which database and why."""


class PgSide(Protocol):
    """How to run a PostgreSQL client tool as the superuser against one server."""

    label: str

    def command(self, tool: str, database: str, *, stdin: bool = False) -> tuple[list[str], dict[str, str]]:
        """(argv, extra environment) to run `tool` (psql, pg_dump) on `database`."""


@dataclass(frozen=True)
class DockerPostgres:
    """The stack's PostgreSQL container, reached through its host's Docker engine
    (`DOCKER_HOST`): the tools run inside the container, over its local socket."""

    container: str
    docker_host: str

    @property
    def label(self) -> str:
        return f"{self.container} ({self.docker_host})"

    def command(self, tool: str, database: str, *, stdin: bool = False) -> tuple[list[str], dict[str, str]]:
        # PGDATABASE, not --dbname: a name with '=' would be read as a connection string.
        argv = ["docker", "exec", *(["-i"] if stdin else []), "-e", f"PGDATABASE={database}",
                self.container, tool, "-U", SUPERUSER]
        return argv, {"DOCKER_HOST": self.docker_host}


@dataclass(frozen=True)
class TcpPostgres:
    """A server reached over TCP with the superuser's password (the tests' servers)."""

    host: str
    port: int
    user: str
    password: str = field(repr=False)

    @property
    def label(self) -> str:
        return f"{self.host}:{self.port}"

    def command(self, tool: str, database: str, *, stdin: bool = False) -> tuple[list[str], dict[str, str]]:
        env = {"PGHOST": self.host, "PGPORT": str(self.port), "PGUSER": self.user, "PGPASSWORD": self.password,
               "PGDATABASE": database, "PGCONNECT_TIMEOUT": "10"}
        return [tool], env


@dataclass(frozen=True)
class DatabaseCopy:
    name: str
    owner: str
    created: bool
    rows: dict[str, int]  # "schema.table" -> rows in the target after the copy
    source_rows: dict[str, int]

    def summary(self) -> str:
        note = ", created" if self.created else ""
        line = f"{self.name} (owner {self.owner}{note}): {len(self.rows)} tables, {sum(self.rows.values())} rows"
        extra = sorted(self.rows.keys() - self.source_rows.keys())
        changed = sorted(t for t in self.source_rows if self.rows.get(t) != self.source_rows[t])
        if extra:
            line += f"; tables only the target has, left as they were: {', '.join(extra)}"
        if changed:
            line += f"; row counts differ from the source now (written to during the copy?): {', '.join(changed)}"
        return line


def _run(side: PgSide, tool: str, database: str, flags: Sequence[str], sql: str, timeout: float) -> str:
    argv, env = side.command(tool, database)
    result = subprocess.run([*argv, *flags, "-c", sql], env={**os.environ, **env}, capture_output=True,
                            timeout=timeout, check=False)
    if result.returncode != 0:
        raise CopyError(f"{side.label}: {tool} on {database!r} failed: {result.stderr.decode(errors='replace').strip()}")
    return result.stdout.decode()


def query(side: PgSide, database: str, sql: str, timeout: float = 120) -> list[tuple[str, ...]]:
    """Rows of a query as text tuples."""
    out = _run(side, "psql", database, QUERY_FLAGS, sql, timeout).removesuffix("\n")
    return [tuple(record.split("\x1f")) for record in out.split("\x1e") if record]


def row_counts(side: PgSide, database: str) -> dict[str, int]:
    return {f"{schema}.{table}": int(rows) for schema, table, rows in query(side, database, COUNT_ROWS)}


def _stream(source: PgSide, target: PgSide, database: str, owner: str, timeout: float) -> None:
    dump_argv, dump_env = source.command("pg_dump", database)
    restore_argv, restore_env = target.command("psql", database, stdin=True)
    with tempfile.TemporaryFile() as dump_err, tempfile.TemporaryFile() as restore_err:
        dump = subprocess.Popen([*dump_argv, *DUMP_FLAGS], env={**os.environ, **dump_env},
                                stdout=subprocess.PIPE, stderr=dump_err)
        restore = subprocess.Popen([*restore_argv, *RESTORE_FLAGS], env={**os.environ, **restore_env},
                                   stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=restore_err)
        # A stuck side must not hang the copy: both are killed after `timeout` seconds.
        expired = threading.Event()

        def stop() -> None:
            expired.set()
            dump.kill()
            restore.kill()

        watchdog = threading.Timer(timeout, stop)
        watchdog.start()
        try:
            assert dump.stdout is not None and restore.stdin is not None
            try:
                restore.stdin.write(f"SET ROLE {quote_ident(owner)};\n".encode())
                shutil.copyfileobj(dump.stdout, restore.stdin, 1 << 20)
            except BrokenPipeError:
                pass  # the restore stopped early; its exit status and stderr say why
            if dump.wait() != 0:
                # Killed before its input ends, psql never reaches the COMMIT: nothing is kept.
                restore.kill()
                restore.wait()
                dump_err.seek(0)
                why = f"timed out after {timeout:g}s" if expired.is_set() else dump_err.read().decode(errors="replace")
                raise CopyError(f"{source.label}: pg_dump of {database!r} failed, nothing restored: {why.strip()}")
            try:
                restore.stdin.close()
            except BrokenPipeError:
                pass
            if restore.wait() != 0:
                restore_err.seek(0)
                raise CopyError(f"{target.label}: restoring {database!r} failed, rolled back: "
                                f"{restore_err.read().decode(errors='replace').strip()}")
        finally:
            watchdog.cancel()
            for process in (dump, restore):
                if process.poll() is None:
                    process.kill()
                    process.wait()


def copy_databases(source: PgSide, target: PgSide, *, timeout: float = 3600) -> list[DatabaseCopy]:
    """Copy every application database of `source` into `target`; returns what was copied."""
    databases = query(source, MAINTENANCE_DB, LIST_DATABASES)
    existing = dict(query(target, MAINTENANCE_DB, LIST_DATABASES))
    roles = {role for (role,) in query(target, MAINTENANCE_DB, LOGIN_ROLES)}
    # Decide every owner before copying anything, so a refusal leaves the target untouched.
    plan = []
    for name, source_owner in databases:
        owner = existing.get(name, source_owner)
        if name not in existing and owner not in roles:
            raise CopyError(f"{target.label} has no database {name!r} and no login role {owner!r} to own it: "
                            "deploy the new stack (its init script makes the roles) before copying data")
        plan.append((name, owner, name not in existing))
    copied = []
    for name, owner, create in plan:
        if create:
            # As the init script makes it (components/postgres_init.py): owned by the app's role,
            # PUBLIC's CONNECT and TEMPORARY revoked. CREATE DATABASE cannot share a transaction.
            query(target, MAINTENANCE_DB, f"CREATE DATABASE {quote_ident(name)} OWNER {quote_ident(owner)}")
            query(target, MAINTENANCE_DB, f"REVOKE ALL ON DATABASE {quote_ident(name)} FROM PUBLIC")
        _stream(source, target, name, owner, timeout)
        copied.append(DatabaseCopy(name, owner, create, row_counts(target, name), row_counts(source, name)))
    return copied
