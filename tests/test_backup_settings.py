"""`coderz:backup`: validated like every key, and rendered into pgbackrest.conf and PostgreSQL's
archiving settings without a way to inject an option."""

from __future__ import annotations

import pytest

from components.backup.render import archive_settings, render_pgbackrest_conf
from components.backup.settings import BackupConfig, S3Repository
from infra.config import load
from tests.mocks import engine_config, secrets_for
from tests.test_config import error_of

S3 = {"endpoint": "s3.eu-west-3.amazonaws.com", "bucket": "coderz-backups", "region": "eu-west-3"}
KEYS = {"backupS3AccessKey": "AKIAEXAMPLE", "backupS3SecretKey": "example-secret"}


def raw(stack: str = "qa", secrets: dict | None = None, **backup) -> dict:
    overrides = {"coderz:backup": {"enabled": True, **backup}}
    config, _ = engine_config(stack, secrets={**secrets_for(stack), **(secrets or {})}, overrides=overrides)
    return config


@pytest.mark.parametrize("backup,key,message", [
    ({"retentionDays": 0}, "coderz:backup.retentionDays", "greater than or equal to 1"),
    ({"fullDay": "sunday"}, "coderz:backup.fullDay", "'mon'"),
    ({"hourUtc": 24}, "coderz:backup.hourUtc", "less than or equal to 23"),
    ({"retentionDay": 30}, "coderz:backup.retentionDay", "unknown key (typo?)"),
    ({"s3": {**S3, "bucket": "Bad_Bucket"}}, "coderz:backup.s3.bucket", "should match pattern"),
    ({"s3": {**S3, "endpoint": "https://s3.example"}}, "coderz:backup.s3.endpoint", "should match pattern"),
    ({"s3": {**S3, "endpoint": "s3.example:99999"}}, "coderz:backup.s3", "not a TCP port"),
    ({"s3": {**S3, "region": "eu-west-3\nrepo1-path=/x"}}, "coderz:backup.s3.region", "should match pattern"),
    ({"s3": {**S3, "path": "/ok/../x y"}}, "coderz:backup.s3.path", "should match pattern"),
    ({"s3": {k: v for k, v in S3.items() if k != "region"}}, "coderz:backup.s3.region", "required key is missing"),
])
def test_bad_backup_settings_are_named_by_file_and_key(backup, key, message):
    error = error_of(raw(secrets=KEYS, **backup))
    assert error.startswith(f"Pulumi.qa.yaml: {key}: ") and message in error


def test_s3_needs_both_keys_as_secrets():
    assert "coderz:backupS3AccessKey: backup.s3 needs its keys" in error_of(raw(s3=S3))
    assert "coderz:backupS3SecretKey" in error_of(raw(secrets={"backupS3AccessKey": "a"}, s3=S3))
    stack = load(raw(secrets=KEYS, s3=S3), "qa")
    assert stack.config.backup.s3.bucket == "coderz-backups" and stack.secrets.backup_s3_keys is not None


def test_backups_need_a_debian_based_postgres_image():
    config = raw()
    config["coderz:postgres"] = '{"image": "postgres:16.4-alpine"}'
    assert "Pulumi.qa.yaml: coderz:postgres.image: backup.enabled needs a Debian-based image" in error_of(config)


def test_the_stack_files_back_up_prod_for_30_days_and_qa_for_7():
    assert load(raw("prod"), "prod").config.backup.retention_days == 30
    assert BackupConfig().enabled is False  # dev: no backups by default


def test_pgbackrest_conf_keeps_the_window_and_never_the_keys():
    volume = render_pgbackrest_conf(BackupConfig(enabled=True, retention_days=30), "prod")
    assert "repo1-retention-full-type=time\nrepo1-retention-full=30" in volume
    assert "repo1-path=/var/lib/pgbackrest" in volume and "repo1-type" not in volume
    s3 = render_pgbackrest_conf(BackupConfig(enabled=True, s3=S3Repository(**S3, uri_style="path")), "prod")
    for line in ("repo1-type=s3", "repo1-path=/coderz/prod", "repo1-s3-endpoint=s3.eu-west-3.amazonaws.com",
                 "repo1-storage-port=443", "repo1-s3-bucket=coderz-backups", "repo1-s3-uri-style=path",
                 "repo1-storage-verify-tls=y"):
        assert line in s3.splitlines()
    assert "key" not in s3.replace("repo1-s3-", "")


def test_archiving_settings_push_every_segment_through_pgbackrest():
    settings = archive_settings(BackupConfig(enabled=True, archive_timeout_s=30))
    assert settings == {
        "archive_mode": "on",
        "archive_command": "pgbackrest --config=/etc/pgbackrest/pgbackrest.conf --stanza=main archive-push %p",
        "archive_timeout": "30s",
    }
