"""PostgreSQL for the apps: one database and one login role per app, and server tuning scaled
to the container's memory limit.

`render_init_sql` is run by psql as the superuser (the official image runs the .sql files of
/docker-entrypoint-initdb.d/ that way on first start; running it again later is safe too).
Passwords are written as SCRAM-SHA-256 verifiers computed here, so the plain text is never in
the file, in psql's input or in the server's statement log. The verifier's salt is derived
from the role and the password, so the same input renders the same SQL and a `pulumi up`
without changes shows no diff.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import stringprep
import unicodedata
from collections.abc import Sequence

from pydantic import Field, field_validator

from components.spec import Frozen

SCRAM_ITERATIONS = 4096  # PostgreSQL's default scram_iterations
SALT_CONTEXT = b"coderz-infra scram salt v1\x00"
MAX_IDENTIFIER_BYTES = 63  # NAMEDATALEN - 1: longer names would be truncated silently
RESERVED_ROLES = {"public", "none", "current_user", "current_role", "session_user", "postgres"}
RESERVED_DATABASES = {"postgres", "template0", "template1"}
MIN_MEMORY_MB = 64  # below this the scaled shared_buffers and work_mem leave nothing to run on


def _identifier_problem(value: str) -> str | None:
    if not value:
        return "is empty"
    if len(value.encode()) > MAX_IDENTIFIER_BYTES:
        return f"is longer than {MAX_IDENTIFIER_BYTES} bytes"
    if any(unicodedata.category(c) == "Cc" for c in value):
        return "contains a control character"
    return None


class AppDatabase(Frozen):
    """One app's database and the login role that owns it."""

    name: str
    owner: str
    password: str = Field(min_length=1, repr=False)

    @field_validator("name")
    @classmethod
    def _database_name(cls, name: str) -> str:
        problem = _identifier_problem(name)
        if problem:
            raise ValueError(f"database name {name!r} {problem}")
        if name.lower() in RESERVED_DATABASES:
            raise ValueError(f"database {name!r} belongs to PostgreSQL itself")
        return name

    @field_validator("owner")
    @classmethod
    def _role_name(cls, owner: str) -> str:
        problem = _identifier_problem(owner)
        if problem:
            raise ValueError(f"role name {owner!r} {problem}")
        if owner.lower() in RESERVED_ROLES or owner.lower().startswith("pg_"):
            raise ValueError(f"role name {owner!r} is reserved")
        return owner

    @field_validator("password")
    @classmethod
    def _password(cls, password: str) -> str:
        if "\x00" in password:
            raise ValueError("a password cannot contain a NUL character")
        try:
            password.encode()
        except UnicodeEncodeError as err:
            raise ValueError("a password must be valid Unicode text") from err
        return password


class MonitorRole(Frozen):
    """A login role for the metrics exporter: member of pg_monitor, owner of nothing."""

    name: str
    password: str = Field(min_length=1, repr=False)

    _role_name = field_validator("name")(AppDatabase._role_name.__func__)
    _password = field_validator("password")(AppDatabase._password.__func__)


# --- quoting ---------------------------------------------------------------------------------


def quote_ident(name: str) -> str:
    """A double-quoted SQL identifier (psql does not interpolate inside one)."""
    if "\x00" in name:
        raise ValueError("an identifier cannot contain NUL")
    return '"' + name.replace('"', '""') + '"'


def quote_literal(value: str) -> str:
    """A string literal that means the same with standard_conforming_strings on or off."""
    if "\x00" in value:
        raise ValueError("a literal cannot contain NUL")
    quoted = value.replace("'", "''")
    if "\\" in value:
        return "E'" + quoted.replace("\\", "\\\\") + "'"
    return "'" + quoted + "'"


def _dollar_quote(body: str) -> str:
    tag, n = "$init$", 0
    while tag in body:
        n += 1
        tag = f"$init{n}$"
    return f"{tag}\n{body}\n{tag}"


# --- SCRAM-SHA-256 verifiers (what PostgreSQL stores in pg_authid.rolpassword) -----------------


def saslprep(password: str) -> bytes:
    """The bytes PostgreSQL hashes for a password: its SASLprep (RFC 4013) form, done the way
    src/common/saslprep.c does it, or the raw UTF-8 when SASLprep prohibits the string."""
    raw = password.encode()
    if password.isascii():
        return raw
    mapped = [" " if stringprep.in_table_c12(c) else c for c in password if not stringprep.in_table_b1(c)]
    if not mapped:
        return raw
    prohibited = (
        stringprep.in_table_c12, stringprep.in_table_c21, stringprep.in_table_c22, stringprep.in_table_c3,
        stringprep.in_table_c4, stringprep.in_table_c5, stringprep.in_table_c6, stringprep.in_table_c7,
        stringprep.in_table_c8, stringprep.in_table_c9, stringprep.in_table_a1,
    )
    # PostgreSQL checks the mapped characters (before normalisation) against the tables.
    if any(check(c) for c in mapped for check in prohibited):
        return raw
    if any(stringprep.in_table_d1(c) for c in mapped):
        if any(stringprep.in_table_d2(c) for c in mapped):
            return raw
        if not (stringprep.in_table_d1(mapped[0]) and stringprep.in_table_d1(mapped[-1])):
            return raw
    return unicodedata.normalize("NFKC", "".join(mapped)).encode()


def scram_verifier(role: str, password: str, iterations: int = SCRAM_ITERATIONS) -> str:
    """SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey> for `password`.

    The 16-byte salt is an HMAC of the role name keyed by the password: unique per role and
    password, and stable, so rendering twice gives the same text."""
    secret = saslprep(password)
    salt = hmac.new(secret, SALT_CONTEXT + role.encode(), hashlib.sha256).digest()[:16]
    salted = hashlib.pbkdf2_hmac("sha256", secret, salt, iterations)
    client_key = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
    stored_key = hashlib.sha256(client_key).digest()
    server_key = hmac.new(salted, b"Server Key", hashlib.sha256).digest()

    def b64(data: bytes) -> str:
        return base64.b64encode(data).decode()

    return f"SCRAM-SHA-256${iterations}:{b64(salt)}${b64(stored_key)}:{b64(server_key)}"


# --- the init script -------------------------------------------------------------------------


def _app_sql(app: AppDatabase) -> str:
    role, db = quote_ident(app.owner), quote_ident(app.name)
    role_lit, db_lit = quote_literal(app.owner), quote_literal(app.name)
    role_block = _login_role_block(app.owner, app.password, "an app database needs its own role")
    return "\n".join([
        f"-- app database {app.name!r}, owned by role {app.owner!r}",
        f"DO {role_block};",
        # CREATE DATABASE cannot run inside DO or a transaction: psql's \gexec runs it when missing.
        f"SELECT format('CREATE DATABASE %I OWNER %I', {db_lit}, {role_lit})",
        f"  WHERE NOT EXISTS (SELECT FROM pg_catalog.pg_database WHERE datname = {db_lit})\\gexec",
        f"ALTER DATABASE {db} OWNER TO {role};",
        # PUBLIC has CONNECT and TEMPORARY on every new database; only the owner keeps them.
        f"REVOKE ALL ON DATABASE {db} FROM PUBLIC;",
        "",
    ])


def _login_role_block(name: str, password: str, purpose: str) -> str:
    """DO block: create the role if missing, refuse a superuser, set LOGIN and the verifier."""
    role, role_lit = quote_ident(name), quote_literal(name)
    verifier = quote_literal(scram_verifier(name, password))
    return _dollar_quote(
        "BEGIN\n"
        f"  IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = {role_lit}) THEN\n"
        f"    CREATE ROLE {role};\n"
        f"  ELSIF (SELECT rolsuper FROM pg_catalog.pg_roles WHERE rolname = {role_lit}) THEN\n"
        f"    RAISE EXCEPTION 'role % is a superuser; {purpose}', {role_lit};\n"
        "  END IF;\n"
        f"  ALTER ROLE {role} WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS\n"
        f"    PASSWORD {verifier};\n"
        "END"
    )


def _monitor_sql(monitor: MonitorRole) -> str:
    return "\n".join([
        f"-- metrics role {monitor.name!r}: reads statistics (pg_monitor), owns nothing",
        f"DO {_login_role_block(monitor.name, monitor.password, 'the exporter needs its own role')};",
        f"GRANT pg_monitor TO {quote_ident(monitor.name)};",
        "",
    ])


def render_init_sql(databases: Sequence[AppDatabase], monitors: Sequence[MonitorRole] = ()) -> str:
    """The psql script that creates (or brings up to date) every app's role and database, and
    the exporters' monitoring roles."""
    names = [d.name for d in databases]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValueError(f"databases declared twice: {', '.join(duplicates)}")
    passwords: dict[str, str] = {}
    for app in databases:
        if passwords.setdefault(app.owner, app.password) != app.password:
            raise ValueError(f"role {app.owner!r} is given two different passwords")
    header = [
        "-- Generated by components/postgres_init.py: one login role and one database per app.",
        "-- Run by psql as the superuser; safe to run again (it also updates the passwords).",
        "\\set ON_ERROR_STOP on",
        "",
    ]
    clashes = sorted({m.name for m in monitors} & set(passwords))
    if clashes:
        raise ValueError(f"roles both app owner and monitor: {', '.join(clashes)}")
    body = [_app_sql(app) for app in databases] + [_monitor_sql(m) for m in monitors]
    return "\n".join(header) + "\n".join(body)


# --- server settings -------------------------------------------------------------------------


def _size(mb: int) -> str:
    """A size the way PostgreSQL writes it back (SHOW shared_buffers): 4GB, 384MB."""
    return f"{mb // 1024}GB" if mb >= 1024 and mb % 1024 == 0 else f"{mb}MB"


def postgres_settings(memory_mb: int, max_connections: int) -> dict[str, str]:
    """The deployment reference's tuning (16 GB: shared_buffers 4GB, effective_cache_size 12GB,
    maintenance_work_mem 1GB, work_mem 16MB, max_wal_size 4GB, min_wal_size 1GB) scaled to the
    container's memory limit.

    work_mem is memory / (max_connections x 5), at least 4MB: a query may run a few sorts and
    hashes at once. The WAL sizes are disk, not memory, so they never go below PostgreSQL's own
    defaults (1GB / 80MB)."""
    if memory_mb < MIN_MEMORY_MB:
        raise ValueError(f"PostgreSQL needs at least {MIN_MEMORY_MB} MB of memory, not {memory_mb}")
    if not 1 <= max_connections <= 10_000:
        raise ValueError(f"max_connections must be between 1 and 10000, not {max_connections}")
    return {
        "max_connections": str(max_connections),
        "shared_buffers": _size(memory_mb // 4),
        "effective_cache_size": _size(memory_mb * 3 // 4),
        "maintenance_work_mem": _size(max(8, min(1024, memory_mb // 16))),
        "work_mem": _size(max(4, memory_mb // (max_connections * 5))),
        "wal_level": "replica",
        "max_wal_size": _size(max(1024, memory_mb // 4)),
        "min_wal_size": _size(max(80, memory_mb // 16)),
        "checkpoint_completion_target": "0.9",
        "random_page_cost": "1.1",
        "effective_io_concurrency": "200",
        "log_min_duration_statement": "1000",
        "autovacuum": "on",
        "autovacuum_max_workers": "4",
        "autovacuum_naptime": "30s",
    }


def postgres_command(memory_mb: int, max_connections: int, extra: dict[str, str] | None = None) -> list[str]:
    """The container command of the official image: `postgres -c key=value ...`; `extra` adds
    settings (continuous archiving, components/backup/render.py)."""
    command = ["postgres"]
    for key, value in {**postgres_settings(memory_mb, max_connections), **(extra or {})}.items():
        command += ["-c", f"{key}={value}"]
    return command
