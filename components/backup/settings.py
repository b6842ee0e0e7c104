"""The backup settings of a stack, as its file states them (`coderz:backup`); infra/config.py
composes them into the stack config. Values here end up in pgbackrest.conf, so every text
field is held to a strict pattern (no newline, no `=`, no spaces can sneak in an option)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from components.spec import Frozen

WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


class S3Repository(Frozen):
    """An S3-compatible bucket for the repository. The keys are the secrets
    `backupS3AccessKey` and `backupS3SecretKey`; pgBackRest always speaks TLS to S3."""

    endpoint: str = Field(pattern=r"^[A-Za-z0-9.-]+(:[0-9]{1,5})?$")
    bucket: str = Field(pattern=r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
    region: str = Field(pattern=r"^[a-z0-9][a-z0-9-]{0,30}$")
    # Where in the bucket; default /coderz/<stack>.
    path: str | None = Field(default=None, pattern=r"^(/[A-Za-z0-9._-]+)+$")
    uri_style: Literal["host", "path"] = "host"
    verify_tls: bool = True

    @property
    def host(self) -> str:
        return self.endpoint.split(":")[0]

    @property
    def port(self) -> int:
        return int(self.endpoint.split(":")[1]) if ":" in self.endpoint else 443

    @model_validator(mode="after")
    def _port(self) -> "S3Repository":
        if not 1 <= self.port <= 65535:
            raise ValueError(f"endpoint port {self.port} is not a TCP port")
        return self


class BackupConfig(Frozen):
    """pgBackRest for the stack's PostgreSQL: WAL archived continuously, a full backup every
    week on `fullDay`, a differential one every other day, both at `hourUtc`; full backups
    (and the WAL and differentials that depend on them) are kept for `retentionDays`, so the
    database can be brought back to any second of that window. The repository is a volume
    on the host, or `s3` when set."""

    enabled: bool = False
    retention_days: int = Field(default=30, ge=1, le=3650)
    full_day: Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"] = "sun"
    hour_utc: int = Field(default=2, ge=0, le=23)
    # A WAL segment is archived at least this often, even on a quiet database (the RPO).
    archive_timeout_s: int = Field(default=60, ge=10, le=3600)
    # The monitoring tier alerts when the last good backup is older than this.
    max_age_hours: int = Field(default=26, ge=2, le=24 * 31)
    s3: S3Repository | None = None
