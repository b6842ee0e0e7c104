"""pgAdmin: its server list in pgAdmin's import format, the component and the stacks under mocks."""

from __future__ import annotations

import functools
import json
from pathlib import Path

import jsonschema
import pytest

from components.container import Placement
from components.pgadmin.component import PgAdmin, PgAdminArgs
from components.pgadmin.settings import SERVERS_FILE, PgAdminConfig, render_servers
from components.postgres import MONITOR_ROLE
from infra.catalog import declare_services
from infra.config import ConfigError, load, stack_file_config
from tests.conftest import run
from tests.mocks import deploy_stack, engine_config, is_secret, service_of

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


def test_component_loopback_only_secret_password_own_volume(monitor, provider):
    spec = PROD.get("pgadmin")
    run(lambda: PgAdmin("pgadmin", PgAdminArgs(
        spec=spec, postgres=PROD.get("postgres"), username=MONITOR_ROLE, config=PgAdminConfig(enabled=True),
        placement=Placement(prefix="coderz-prod", network_name="net", provider=provider), keep_data=True)))
    (container,) = monitor.of_type("docker:index/container:Container")
    assert container.plain["ports"] == [{"internal": 80, "external": 5080, "ip": "127.0.0.1"}]
    # a secret element makes the whole list a secret, as the engine stores it
    assert is_secret(container.inputs["envs"])
    assert "PGADMIN_DEFAULT_PASSWORD=generated-pgadmin-admin" in container.plain["envs"]
    (upload,) = container.plain["uploads"]
    assert upload["file"] == SERVERS_FILE and json.loads(upload["content"])["Servers"]["1"]["Host"] == "postgres"
    (volume,) = monitor.of_type("docker:index/volume:Volume")
    assert volume.plain["name"] == "coderz-prod-pgadmin-data" and volume.protect and volume.retain_on_delete
    assert container.plain["volumes"][0]["containerPath"] == "/var/lib/pgadmin"


def test_a_public_pgadmin_is_refused(provider):
    from components.spec import PublicPort
    with pytest.raises(ValueError, match="never public"):
        PgAdminArgs(spec=PROD.get("pgadmin").model_copy(update={"public_ports": (PublicPort(host=5080, container=80),)}),
                    postgres=PROD.get("postgres"), username=MONITOR_ROLE, config=PgAdminConfig(enabled=True),
                    placement=Placement(prefix="p", network_name="n", provider=provider))


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
    dev_monitor, dev_outputs = deployed("dev")
    assert "pgadmin_url" not in dev_outputs
    assert not [c for c in dev_monitor.of_type("docker:index/container:Container") if "pgadmin" in c.plain["name"]]
