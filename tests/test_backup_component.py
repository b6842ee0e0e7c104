"""The backup sidecar and PostgreSQL's archiving, in the stack files under mocks."""

from __future__ import annotations

import hashlib

import pulumi
import pytest
import pulumi_docker as docker

from components.backup.component import BackupPlan
from components.backup.settings import BackupConfig, S3Repository
from tests.conftest import run
from tests.mocks import is_secret, plaintext_leaks
from tests.test_stacks import containers, deployed


def container(stack: str, name: str):
    (found,) = [c for c in containers(stack) if c.plain["name"] == f"coderz-{stack}-{name}"]
    return found.plain


def mounts(spec) -> dict[str, str]:
    return {v["containerPath"]: v["volumeName"] for v in spec["volumes"]}


def test_prod_archives_every_wal_segment_and_runs_the_backup_sidecar():
    postgres, backup = container("prod", "postgres"), container("prod", "backup")
    command = postgres["command"]
    assert "archive_mode=on" in command and "archive_timeout=60s" in command
    assert "archive_command=pgbackrest --config=/etc/pgbackrest/pgbackrest.conf --stanza=main archive-push %p" in command
    # The sidecar sees the cluster where PostgreSQL sees it: same data, socket and repository.
    shared = {"/var/lib/postgresql/data", "/var/run/postgresql", "/var/lib/pgbackrest"}
    assert {p: mounts(postgres)[p] for p in shared} == {p: mounts(backup)[p] for p in shared}
    assert mounts(backup)["/var/lib/pgbackrest"] == "coderz-prod-backup-data"
    assert backup["user"] == "postgres" and backup["command"] == ["backup-loop.sh", "loop"]
    assert {"FULL_DAY=sun", "HOUR_UTC=2", "METRICS_PORT=9188", "STANZA=main"} <= set(backup["envs"])
    for spec in (postgres, backup):
        (conf,) = [u for u in spec["uploads"] if u["file"] == "/etc/pgbackrest/pgbackrest.conf"]
        assert "repo1-retention-full=30" in conf["content"] and "pg1-path=/var/lib/postgresql/data/pgdata" in conf["content"]


PGBACKREST_IMAGE = "coderz/postgres-pgbackrest:"


@pytest.mark.parametrize("stack", ["qa", "prod"])
def test_the_pgbackrest_image_is_built_once_and_both_containers_run_it_by_id(stack):
    monitor, _ = deployed(stack)
    builds = [r for r in monitor.of_type("RemoteImage") if r.plain["name"].startswith(PGBACKREST_IMAGE)]
    # One image resource, owned by PostgreSQL's service: two builds of one tag could race.
    (image,) = builds
    assert image.name == "postgres-image" and image.parent.endswith("ContainerService::postgres")
    assert image.plain["build"]["context"].endswith("components/backup/image")
    assert image.plain["build"]["buildArgs"] == {"POSTGRES_IMAGE": "postgres:16.4-bookworm"}
    assert [r.name for r in monitor.of_type("RemoteImage") if r.name == "backup-image"] == []
    # Both by the built image's ID (the mock's imageId for that tag): a rebuild replaces both.
    image_id = "sha256:" + hashlib.sha256(image.plain["name"].encode()).hexdigest()
    assert container(stack, "postgres")["image"] == image_id == container(stack, "backup")["image"]


def test_without_backups_nothing_builds_the_pgbackrest_image():
    monitor, _ = deployed("dev")
    assert not any(r.plain["name"].startswith(PGBACKREST_IMAGE) for r in monitor.of_type("RemoteImage"))
    (postgres,) = [r for r in monitor.of_type("RemoteImage") if r.name == "postgres-image"]
    assert "build" not in postgres.plain and postgres.plain["name"] == "postgres:16.4-alpine"


def test_prometheus_scrapes_the_backup_job_and_alerts_on_its_age():
    prometheus = container("prod", "prometheus")
    files = {u["file"]: u["content"] for u in prometheus["uploads"]}
    assert "job_name: backup" in files["/etc/prometheus/prometheus.yml"]
    assert "metrics_path: /metrics.txt" in files["/etc/prometheus/prometheus.yml"]
    rules = files["/etc/prometheus/rules.yml"]
    assert "alert: BackupTooOld" in rules and "time() - max(coderz_backup_last_success_timestamp_seconds) > 93600" in rules


def test_dev_has_no_backup_and_no_archiving():
    names = {c.plain["name"] for c in containers("dev")}
    assert "coderz-dev-backup" not in names
    assert not any("archive" in arg for arg in container("dev", "postgres")["command"])
    rules = {u["file"]: u["content"] for u in container("dev", "prometheus")["uploads"]}["/etc/prometheus/rules.yml"]
    assert "Backup" not in rules


def test_s3_keys_reach_pgbackrest_only_as_secrets(monitor, provider):
    plan = BackupPlan(
        config=BackupConfig(enabled=True, s3=S3Repository(endpoint="s3.example:9000", bucket="coderz-b", region="x1")),
        stack="qa", postgres_image="postgres:16.4-bookworm",
        s3_keys=(pulumi.Output.secret("access-key-1"), pulumi.Output.secret("secret-key-1")),
    )
    run(lambda: docker.Container("probe", image="sha256:" + "0" * 64, envs=plan.envs(),
                                 opts=pulumi.ResourceOptions(provider=provider)))
    (probe,) = monitor.of_type("Container")
    assert is_secret(probe.inputs["envs"])
    assert probe.plain["envs"] == ["PGBACKREST_REPO1_S3_KEY=access-key-1", "PGBACKREST_REPO1_S3_KEY_SECRET=secret-key-1"]
    assert plaintext_leaks(monitor.registrations, {"access-key-1", "secret-key-1"}) == []
    conf = plan.files()[0].content
    assert "access-key-1" not in conf and "repo1-s3-endpoint=s3.example" in conf and "repo1-storage-port=9000" in conf


def test_a_service_runs_an_image_it_builds_or_one_it_is_given_never_both(provider):
    from pathlib import Path

    from pydantic import ValidationError

    from components.container import ContainerServiceArgs, Placement
    from tests.conftest import make_spec

    placement = Placement(prefix="coderz-qa", network_name="coderz-qa-net", provider=provider)
    with pytest.raises(ValidationError, match="give image_id or build_context, not both"):
        ContainerServiceArgs(spec=make_spec("backup"), placement=placement, image_id="sha256:" + "1" * 64,
                             build_context=Path("components/backup/image"))
