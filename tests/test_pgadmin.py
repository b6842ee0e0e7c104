"""pgAdmin: its server list in pgAdmin's import format, the component and the stacks under mocks."""

from __future__ import annotations

import functools
import json
import subprocess
from pathlib import Path

import jsonschema
import pulumi
import pytest

from components.container import Placement
from components.pgadmin.component import PgAdmin, PgAdminArgs
from components.pgadmin.settings import (MONITOR_PGPASS, SERVERS_FILE, START_SCRIPT, PgAdminConfig, render_pgpass,
                                        render_servers, render_start_script, storage_folder)
from components.postgres import MONITOR_ROLE
from infra.catalog import declare_services
from infra.config import ConfigError, load, stack_file_config
from tests.conftest import run
from tests.mocks import deploy_stack, engine_config, generated_secrets, is_secret, plaintext_leaks, service_of

SCHEMA = json.loads((Path(__file__).resolve().parent.parent / "components" / "pgadmin" / "schemas"
                     / "servers.schema.json").read_text())
PROD = declare_services(stack_file_config("prod"))


def test_servers_json_is_valid_in_pgadmins_import_format_and_names_the_stacks_postgres():
    document = json.loads(render_servers(PROD.get("postgres"), username=MONITOR_ROLE, group="coderz-prod"))
    jsonschema.validate(document, SCHEMA)
    (server,) = document["Servers"].values()
    assert (server["Host"], server["Port"], server["Username"]) == ("postgres", 5432, MONITOR_ROLE)


@pytest.mark.parametrize("broken", [
    {"Servers": {}},
    {"Servers": {"1": {"Name": "x", "Group": "g", "MaintenanceDB": "postgres", "Host": "h", "Port": "5432", "Username": "u"}}},
    {"Servers": {"1": {"Name": "x", "Group": "g", "MaintenanceDB": "postgres", "Port": 5432, "Username": "u"}}},
    {"Servers": {"1": {"Name": "x", "MaintenanceDB": "postgres", "Host": "h", "Port": 5432, "Username": "u"}}},
])
def test_the_schema_refuses_what_pgadmins_importer_refuses(broken):
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, SCHEMA)


def args(provider, **changes) -> PgAdminArgs:
    fields = dict(spec=PROD.get("pgadmin"), postgres=PROD.get("postgres"), username=MONITOR_ROLE,
                  password=pulumi.Output.secret("monitor-secret"), config=PgAdminConfig(enabled=True),
                  placement=Placement(prefix="coderz-prod", network_name="net", provider=provider), keep_data=True)
    return PgAdminArgs(**{**fields, **changes})


def test_component_loopback_only_secret_passwords_own_volume(monitor, provider):
    run(lambda: PgAdmin("pgadmin", args(provider)))
    (container,) = monitor.of_type("docker:index/container:Container")
    assert container.plain["ports"] == [{"internal": 80, "external": 5080, "ip": "127.0.0.1"}]
    # a secret element makes the whole list a secret, as the engine stores it
    assert is_secret(container.inputs["envs"]) and is_secret(container.inputs["uploads"])
    assert "PGADMIN_DEFAULT_PASSWORD=generated-pgadmin-admin" in container.plain["envs"]
    uploads = {u["file"]: u for u in container.plain["uploads"]}
    assert json.loads(uploads[SERVERS_FILE]["content"])["Servers"]["1"]["Host"] == "postgres"
    # the monitor password: in the pgpass alone, pgAdmin's user's (5050) and no one else's
    pgpass = uploads[MONITOR_PGPASS]
    assert pgpass["content"] == "postgres:5432:*:metrics:monitor-secret\n"
    assert (pgpass["owner"], pgpass["group"], pgpass["permissions"]) == ("5050", "0", "0400")
    assert plaintext_leaks(monitor.registrations, {"monitor-secret", "generated-pgadmin-admin"}) == []
    assert "monitor-secret" not in uploads[SERVERS_FILE]["content"] + uploads[START_SCRIPT]["content"]
    # the start script links it into the admin's storage folder, then runs the image's entrypoint
    assert container.plain["entrypoints"] == ["/bin/sh", START_SCRIPT]
    assert uploads[START_SCRIPT]["content"] == render_start_script("admin@coderz.example")
    (volume,) = monitor.of_type("docker:index/volume:Volume")
    assert volume.plain["name"] == "coderz-prod-pgadmin-data" and volume.protect and volume.retain_on_delete
    assert container.plain["volumes"][0]["containerPath"] == "/var/lib/pgadmin"


def test_pgadmin_without_the_monitor_password_is_refused(provider):
    with pytest.raises(ValueError, match="its password is needed"):
        args(provider, password=None)


def test_pgpass_escapes_and_refuses_what_libpq_would_misread():
    postgres = PROD.get("postgres")
    assert render_pgpass(postgres, username="metrics", password="a:b\\c") == "postgres:5432:*:metrics:a\\:b\\\\c\n"
    for broken in ("", "two\nlines", "cr\r"):
        with pytest.raises(ValueError, match="one non-empty line"):
            render_pgpass(postgres, username="metrics", password=broken)


@pytest.mark.parametrize("email,folder", [
    ("ops@coderz.example", "ops_coderz.example"),
    ("1ops@coderz.example", "pga_user_1ops_coderz.example"),
    ("a/b@coderz.example", "aslashb_coderz.example"),
])
def test_storage_folder_is_named_as_pgadmin_names_it(email, folder):
    assert storage_folder(email) == folder


def test_start_script_quotes_what_it_is_given(tmp_path):
    script = render_start_script("o'neil@coderz.example", storage_dir=str(tmp_path / "st ore"),
                                 pgpass=str(tmp_path / "p ass"), then="true")
    (tmp_path / "p ass").write_text("x")
    subprocess.run(["sh", "-c", script], check=True, timeout=10)
    link = tmp_path / "st ore" / "o'neil_coderz.example" / ".pgpass"
    assert link.is_symlink() and link.read_text() == "x"


def test_a_public_pgadmin_is_refused(provider):
    from components.spec import PublicPort
    with pytest.raises(ValueError, match="never public"):
        args(provider, spec=PROD.get("pgadmin").model_copy(update={"public_ports": (PublicPort(host=5080, container=80),)}))


def test_stack_file_errors_name_the_key():
    raw, _ = engine_config("prod", secrets={"sshPrivateKey": "k", "smtpPassword": "p"},
                           overrides={"coderz:monitoring": {"enabled": False}})
    with pytest.raises(ConfigError, match=r"^Pulumi\.prod\.yaml: coderz:pgadmin\.enabled: .*monitor role"):
        load(raw, "prod", check_secrets=False)
    raw, _ = engine_config("prod", secrets={"sshPrivateKey": "k", "smtpPassword": "p"},
                           overrides={"coderz:pgadmin": {"enabled": True, "image": "dpage/pgadmin4:latest"}})
    with pytest.raises(ConfigError, match=r"coderz:pgadmin\.image: .*pinned"):
        load(raw, "prod", check_secrets=False)


@functools.cache
def deployed(stack: str):
    return deploy_stack(stack)


def test_prod_runs_pgadmin_with_its_password_as_a_secret_output_and_dev_does_not():
    monitor, outputs = deployed("prod")
    assert outputs["pgadmin_url"] == "http://127.0.0.1:5080/"
    assert [c for c in monitor.of_type("docker:index/container:Container") if service_of(c) == "pgadmin"]
    (container,) = [c for c in monitor.of_type("docker:index/container:Container") if service_of(c) == "pgadmin"]
    pgpass = {u["file"]: u["content"] for u in container.plain["uploads"]}[MONITOR_PGPASS]
    assert pgpass == f"postgres:5432:*:metrics:{outputs['postgres_monitor_password']}\n"
    assert plaintext_leaks(monitor.registrations, generated_secrets(monitor)) == []
    dev_monitor, dev_outputs = deployed("dev")
    assert "pgadmin_url" not in dev_outputs
    assert not [c for c in dev_monitor.of_type("docker:index/container:Container") if "pgadmin" in c.plain["name"]]
