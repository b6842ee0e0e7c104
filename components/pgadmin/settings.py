"""pgAdmin's settings (`coderz:pgadmin`) and its server list, rendered from the catalog."""

from __future__ import annotations

import json

from pydantic import Field

from components.validators import EmailAddress
from components.spec import Frozen, PinnedImage, ServiceSpec

SERVERS_FILE = "/pgadmin4/servers.json"  # the image imports it when it creates its database
DATA_DIR = "/var/lib/pgadmin"
LISTEN_PORT = 80  # the image's default (PGADMIN_LISTEN_PORT); it may bind it as its own user


class PgAdminConfig(Frozen):
    """`coderz:pgadmin`: pgAdmin on 127.0.0.1 only (reach it through an SSH tunnel). Its login
    is `adminEmail` with a generated password (stack output `pgadmin_admin_password`)."""

    enabled: bool = False
    image: PinnedImage = "dpage/pgadmin4:8.12"
    admin_email: EmailAddress = "admin@coderz.example"


def render_servers(postgres: ServiceSpec, *, username: str, group: str) -> str:
    """servers.json in pgAdmin's import format (`setup.py load-servers`): the stack's
    PostgreSQL by its network alias and port, logged in as `username` (the monitor role)."""
    return json.dumps({"Servers": {"1": {
        "Name": f"{group} {postgres.name}",
        "Group": group,
        "Host": postgres.name,
        "Port": postgres.port,
        "MaintenanceDB": "postgres",
        "Username": username,
        # the stack network is private and the server speaks no TLS
        "ConnectionParameters": {"sslmode": "disable", "connect_timeout": 10},
    }}}, indent=2) + "\n"
