"""The Postgres component under mocks: volume, init script, tuning, secrets."""

from __future__ import annotations

import pulumi
import pytest

from components.container import Placement
from components.host import HostShell
from components.postgres import MONITOR_ROLE, Postgres, PostgresArgs
from components.postgres_init import postgres_command
from components.spec import HealthCheck, Limits
from tests.conftest import make_spec, run
from tests.mocks import generated_secrets, is_secret, plaintext_leaks

SPEC = make_spec(
    "postgres", image="postgres:16.4-alpine", port=5432, route=None, metrics=None, host_port=5132,
    limits=Limits(memory_mb=1024, cpus=1), health=HealthCheck(test=("CMD-SHELL", "pg_isready -U postgres")),
)


def base_fields(provider) -> dict:
    return dict(spec=SPEC, placement=Placement(prefix="coderz-qa", network_name="coderz-qa-net", provider=provider),
                clients=("dotnet-api", "python-api"), max_connections=100, keep_data=False, monitor_role=True,
                shell=HostShell(docker_host="unix:///var/run/docker.sock"))


def postgres(provider, **changes) -> Postgres:
    return Postgres("postgres", PostgresArgs(**{**base_fields(provider), **changes}))


@pytest.mark.parametrize("keep", [True, False])
def test_data_volume_is_kept_and_protected_only_when_asked(monitor, provider, keep):
    run(lambda: postgres(provider, keep_data=keep))
    (volume,) = monitor.of_type("docker:index/volume:Volume")
    assert volume.plain["name"] == "coderz-qa-postgres-data"
    assert (volume.retain_on_delete, volume.protect) == (keep, keep)


def test_container_runs_tuned_with_roles_for_each_client_and_the_exporter(monitor, provider):
    db = run(lambda: postgres(provider))
    (container,) = monitor.of_type("docker:index/container:Container")
    spec = container.plain
    assert spec["command"] == postgres_command(1024, 100)
    assert "shared_buffers=256MB" in spec["command"]
    assert spec["shmSize"] == 256
    assert spec["ports"] == [{"internal": 5432, "external": 5132, "ip": "127.0.0.1"}]
    assert spec["volumes"] == [{"containerPath": "/var/lib/postgresql/data", "volumeName": "coderz-qa-postgres-data",
                                "readOnly": False}]
    (upload,) = spec["uploads"]
    assert upload["file"] == "/docker-entrypoint-initdb.d/10-apps.sql"
    sql = upload["content"]
    for role in ("dotnet_api", "python_api"):
        assert f'CREATE DATABASE %I OWNER %I\', \'{role}\', \'{role}\'' in sql
    assert f'GRANT pg_monitor TO "{MONITOR_ROLE}";' in sql
    assert is_secret(container.inputs["uploads"]) and is_secret(container.inputs["envs"])
    assert "POSTGRES_USER=postgres" in spec["envs"]
    assert plaintext_leaks(monitor.registrations, generated_secrets(monitor)) == []

    @pulumi.runtime.test
    def outputs_are_secret_urls():
        def check(values):
            admin, monitor_dsn, python_url, *secret_flags = values
            assert admin.startswith("postgresql://postgres:generated-postgres-admin-password@postgres:5432/")
            assert monitor_dsn.startswith(f"postgresql://{MONITOR_ROLE}:generated-postgres-{MONITOR_ROLE}-password@")
            assert python_url == "postgresql://python_api:generated-postgres-python_api-password@postgres:5432/python_api"
            assert all(secret_flags)
        return pulumi.Output.all(
            db.admin_dsn, db.monitor_dsn, db.database_urls["python-api"],
            db.admin_dsn.is_secret(), db.monitor_dsn.is_secret(), db.database_urls["python-api"].is_secret(),
        ).apply(check)

    outputs_are_secret_urls()


def test_without_monitoring_there_is_no_exporter_role(monitor, provider):
    db = run(lambda: postgres(provider, monitor_role=False))
    (container,) = monitor.of_type("docker:index/container:Container")
    assert "pg_monitor" not in container.plain["uploads"][0]["content"]
    assert db.monitor_dsn is None
    assert {r.name for r in monitor.of_type("RandomPassword")} == {
        "postgres-admin-password", "postgres-dotnet_api-password", "postgres-python_api-password"}


def test_roles_are_applied_again_when_the_script_changes(monitor, provider):
    run(lambda: Postgres("pg-a", PostgresArgs(**{**base_fields(provider), "clients": ("python-api",)})))
    run(lambda: Postgres("pg-b", PostgresArgs(**{**base_fields(provider), "clients": ("python-api", "reports-api")})))
    applies = {c.name: c for c in monitor.of_type("command:local:Command")}
    assert set(applies) == {"pg-a-apply-roles", "pg-b-apply-roles"}
    assert applies["pg-a-apply-roles"].plain["triggers"] != applies["pg-b-apply-roles"].plain["triggers"]
    assert "psql -v ON_ERROR_STOP=1" in applies["pg-b-apply-roles"].plain["create"]
