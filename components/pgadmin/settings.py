"""pgAdmin's settings (`coderz:pgadmin`), its server list rendered from the catalog, and how the
monitor role's password reaches it (a pgpass file pgAdmin hands to libpq: no prompt).

What the image does with these (dpage/pgadmin4:8.12, pkg/docker/entrypoint.sh): on a fresh
volume it creates the admin from PGADMIN_DEFAULT_EMAIL/PASSWORD and runs `setup.py load-servers
<PGADMIN_SERVER_JSON_FILE> --user <email>`; every PGADMIN_CONFIG_<KEY>=<value> becomes a
`KEY = value` line of config_distro.py (once, unquoted: values are Python literals).
"""

from __future__ import annotations

import json
import shlex

from components.spec import Frozen, PinnedImage, ServiceSpec
from components.validators import EmailAddress

SERVERS_FILE = "/pgadmin4/servers.json"  # the image imports it when it creates its database
DATA_DIR = "/var/lib/pgadmin"
STORAGE_DIR = f"{DATA_DIR}/storage"  # pgAdmin's STORAGE_DIR: one folder per user
LISTEN_PORT = 80  # the image's default (PGADMIN_LISTEN_PORT); it may bind it as its own user
IMAGE_ENTRYPOINT = "/entrypoint.sh"
# The image's user (Dockerfile: useradd -u 5050 -g root pgadmin; USER 5050).
PGADMIN_UID = "5050"
# The monitor role's pgpass, uploaded outside the volume (never on it, so never in its backups),
# owned by pgAdmin's user, mode 0400: no other user of the container reads it, and libpq
# accepts it (it ignores a pgpass that group or others may read).
MONITOR_PGPASS = "/run/secrets/coderz-monitor.pgpass"
# Where servers.json points libpq: pgAdmin (server mode) resolves a passfile in the user's
# storage folder, whatever the path says; the start script links it there.
PASSFILE = ".pgpass"
START_SCRIPT = "/run/coderz/start-pgadmin.sh"
# pgAdmin's settings, as the image's PGADMIN_CONFIG_* environment (Python literals).
CONFIG = {"UPGRADE_CHECK_ENABLED": "False"}


class PgAdminConfig(Frozen):
    """`coderz:pgadmin`: pgAdmin on 127.0.0.1 only (reach it through an SSH tunnel). Its login
    is `adminEmail` with a generated password (stack output `pgadmin_admin_password`)."""

    enabled: bool = False
    image: PinnedImage = "dpage/pgadmin4:8.12"
    admin_email: EmailAddress = "admin@coderz.example"


def storage_folder(email: str) -> str:
    """The user's storage folder name, as pgAdmin 8.12 derives it (pgadmin/utils/paths.py
    preprocess_username): `@` -> `_`, slashes spelled out, a leading digit prefixed."""
    name = email if email and not email[0].isdigit() else f"pga_user_{email}"
    return name.replace("@", "_").replace("/", "slash").replace("\\", "slash")


def render_servers(postgres: ServiceSpec, *, username: str, group: str) -> str:
    """servers.json in pgAdmin's import format (`setup.py load-servers`): the stack's
    PostgreSQL by its network alias and port, logged in as `username` (the monitor role) with
    the password of the pgpass file (`render_pgpass`)."""
    return json.dumps({"Servers": {"1": {
        "Name": f"{group} {postgres.name}",
        "Group": group,
        "Host": postgres.name,
        "Port": postgres.port,
        "MaintenanceDB": "postgres",
        "Username": username,
        # the stack network is private and the server speaks no TLS
        "ConnectionParameters": {"sslmode": "disable", "connect_timeout": 10, "passfile": f"/{PASSFILE}"},
    }}}, indent=2) + "\n"


def _pgpass_field(value: str) -> str:
    # libpq's pgpass: fields split on ':', a backslash escapes ':' and '\'
    return value.replace("\\", "\\\\").replace(":", "\\:")


def render_pgpass(postgres: ServiceSpec, *, username: str, password: str) -> str:
    """One pgpass line: `username`'s password on the stack's PostgreSQL, any database (pgAdmin
    opens each database it browses)."""
    if not password or "\n" in password or "\r" in password:
        raise ValueError("a pgpass password is one non-empty line")
    return f"{_pgpass_field(postgres.name)}:{postgres.port}:*:{_pgpass_field(username)}:{_pgpass_field(password)}\n"


def render_start_script(email: str, *, storage_dir: str = STORAGE_DIR, pgpass: str = MONITOR_PGPASS,
                        then: str = IMAGE_ENTRYPOINT) -> str:
    """The container's entrypoint, run as pgAdmin's user: link the uploaded pgpass into the
    admin's storage folder (made here, so pgAdmin's user owns it: the image makes no storage
    folder, and one the upload made would be root's and stop pgAdmin), then the image's own
    entrypoint. On every start, so a replaced container links its own file."""
    folder = f"{storage_dir}/{storage_folder(email)}"
    return "\n".join([
        "#!/bin/sh",
        "set -eu",
        "umask 077  # pgAdmin makes its storage folders 0700",
        f"mkdir -p {shlex.quote(folder)}",
        f"ln -sfn {shlex.quote(pgpass)} {shlex.quote(f'{folder}/{PASSFILE}')}",
        f'exec {shlex.quote(then)} "$@"',
        "",
    ])
