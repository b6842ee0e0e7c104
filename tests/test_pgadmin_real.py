"""The real pgAdmin (the pinned image's release, from PyPI) with what the stack gives it: our
servers.json imported by its own `setup.py load-servers --user <email>`, the start script linking
the monitor role's pgpass into the admin's storage folder, and through its HTTP API the server
connecting to a real PostgreSQL as the monitor role (made by the stack's own init SQL) with no
password sent, that role refused a write, and a wrong pgpass refused."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from components.pgadmin.settings import PASSFILE, render_pgpass, render_servers, render_start_script, storage_folder
from components.postgres import MONITOR_ROLE
from components.postgres_init import MonitorRole, render_init_sql
from infra.catalog import declare_services
from infra.config import stack_file_config
from tests.pgadmin_server import Client, PgAdmin, require_pgadmin
from tests.servers import postgres_server, require_tool, scratch_dir
from tests.test_postgres_init import psql

QA_CONFIG = stack_file_config("qa")
QA = declare_services(QA_CONFIG)
EMAIL = QA_CONFIG.pgadmin.admin_email
ADMIN_PASSWORD = "test-only-pgadmin-admin"
# what the stack's RandomPassword makes is alphanumeric; libpq's pgpass escapes are tried too
MONITOR_PASSWORD = "monitor:pw\\with-escapes"


@pytest.fixture(scope="module")
def deployed():
    """PostgreSQL with the monitor role, pgAdmin set up and serving; yields (logged-in client, pgpass, PgAdmin)."""
    home = require_pgadmin()
    require_tool("psql")
    work = scratch_dir("pgadmin-")
    try:
        with postgres_server() as pg:
            result = psql(pg, render_init_sql([], [MonitorRole(name=MONITOR_ROLE, password=MONITOR_PASSWORD)]), work)
            assert result.returncode == 0, result.stderr
            # The stack's PostgreSQL as the catalog declares it, at the test server's port; its
            # name resolves on the stack's network only, so libpq is given the address beside it
            # (the pgpass line still matches on the name).
            postgres = QA.get("postgres").model_copy(update={"port": pg["port"]})
            document = json.loads(render_servers(postgres, username=MONITOR_ROLE, group="coderz-qa"))
            document["Servers"]["1"]["ConnectionParameters"]["hostaddr"] = "127.0.0.1"
            servers = work / "servers.json"
            servers.write_text(json.dumps(document))
            pgpass = work / "secrets" / "monitor.pgpass"
            pgpass.parent.mkdir(mode=0o700)
            write_secret(pgpass, render_pgpass(postgres, username=MONITOR_ROLE, password=MONITOR_PASSWORD))

            pgadmin = PgAdmin(home, work, EMAIL, ADMIN_PASSWORD)
            # the entrypoint's order: the database and its admin, then the servers, then the app
            setup = pgadmin.setup("setup-db")
            assert setup.returncode == 0, setup.stdout + setup.stderr
            loaded = pgadmin.setup("load-servers", str(servers), "--user", EMAIL)
            assert loaded.returncode == 0 and "Added 1 Server Group(s) and 1 Server(s)" in loaded.stdout, \
                loaded.stdout + loaded.stderr
            start = work / "start.sh"
            start.write_text(render_start_script(EMAIL, storage_dir=str(pgadmin.data / "storage"), pgpass=str(pgpass),
                                                 then="true"))
            subprocess.run(["sh", str(start)], check=True, timeout=10)
            with pgadmin.running() as base:
                client = Client(base)
                assert client.login(EMAIL, ADMIN_PASSWORD) in (200, 302)
                yield client, pgpass, pgadmin
    finally:
        shutil.rmtree(work, ignore_errors=True)


def write_secret(path: Path, text: str) -> None:
    if path.exists():
        path.chmod(0o600)
    path.write_text(text)
    path.chmod(0o400)


def the_server(client: Client) -> tuple[int, int, dict]:
    status, groups = client.json("GET", "/browser/server_group/nodes/")
    assert status == 200, groups
    (group,) = [g for g in groups["data"] if g["label"] == "coderz-qa"]
    status, servers = client.json("GET", f"/browser/server/nodes/{group['_id']}")
    assert status == 200, servers
    (server,) = servers["result"]
    return group["_id"], server["_id"], server


def test_our_servers_json_is_what_pgadmin_imported(deployed):
    client, _, pgadmin = deployed
    gid, sid, node = the_server(client)
    assert node["label"] == "coderz-qa postgres"
    status, props = client.json("GET", f"/browser/server/obj/{gid}/{sid}")
    assert status == 200, props
    assert (props["host"], props["username"], props["db"]) == ("postgres", MONITOR_ROLE, "postgres")
    params = {p["name"]: p["value"] for p in props["connection_params"]}
    assert params["passfile"] == f"/{PASSFILE}" and params["sslmode"] == "disable"
    # the start script linked the pgpass where pgAdmin looks for this user's files
    link = pgadmin.data / "storage" / storage_folder(EMAIL) / PASSFILE
    assert link.is_symlink() and link.is_file()
    assert oct(link.parent.stat().st_mode & 0o777) == "0o700"


def test_connects_as_the_monitor_role_with_no_password_sent_and_cannot_write(deployed):
    client, _, _ = deployed
    gid, sid, _ = the_server(client)
    # no password in the request: pgAdmin hands libpq the pgpass (without it, it answers 428)
    status, answer = client.json("POST", f"/browser/server/connect/{gid}/{sid}", body={})
    assert status == 200 and answer["data"]["connected"] and answer["data"]["user"]["name"] == MONITOR_ROLE, answer
    try:
        status, databases = client.json("GET", f"/browser/database/nodes/{gid}/{sid}/")
        (did,) = [d["_id"] for d in databases["data"] if d["label"] == "postgres"]
        writes = {
            f"/browser/database/obj/{gid}/{sid}/": {"name": "written_by_pgadmin", "is_template": False,
                                                     "datconnlimit": -1},
            f"/browser/schema/obj/{gid}/{sid}/{did}/": {"name": "written_by_pgadmin", "namespaceowner": MONITOR_ROLE},
        }
        for path, body in writes.items():
            status, answer = client.json("POST", path, body=body)
            assert status != 200 and "permission denied" in answer.get("errormsg", ""), (path, answer)
    finally:
        client.request("DELETE", f"/browser/server/connect/{gid}/{sid}")


def test_a_wrong_pgpass_is_refused(deployed):
    client, pgpass, _ = deployed
    gid, sid, _ = the_server(client)
    postgres = QA.get("postgres")
    good = pgpass.read_text()
    port = good.split(":", 2)[1]
    write_secret(pgpass, render_pgpass(postgres.model_copy(update={"port": int(port)}), username=MONITOR_ROLE,
                                       password="not-the-password"))
    try:
        status, answer = client.json("POST", f"/browser/server/connect/{gid}/{sid}", body={})
        assert status == 401 and "password authentication failed" in json.dumps(answer), answer
    finally:
        write_secret(pgpass, good)
