"""The monitoring tier's settings, as a stack file states them (`coderz:monitoring`,
`coderz:smtp`); infra/config.py composes them into the stack config."""

from __future__ import annotations

from pydantic import Field

from components.spec import Frozen
from components.validators import EmailAddress, HostName


class SmtpConfig(Frozen):
    """Where alerts are mailed; the password is the secret `smtpPassword`."""

    host: HostName
    port: int = Field(default=587, ge=1, le=65535)
    user: str | None = None
    from_address: EmailAddress
    to: tuple[EmailAddress, ...] = Field(min_length=1)
    starttls: bool = True


class AlertThresholds(Frozen):
    """When the alert rules fire; host figures are percent used, held for several minutes."""

    cpu_percent: int = Field(default=85, ge=1, le=100)
    memory_percent: int = Field(default=90, ge=1, le=100)
    disk_percent: int = Field(default=85, ge=1, le=100)
    postgres_connections_percent: int = Field(default=80, ge=1, le=100)
    gateway_5xx_percent: int = Field(default=10, ge=1, le=100)
    container_restarts_15m: int = Field(default=2, ge=1, le=100)


class MonitoringConfig(Frozen):
    """Prometheus, Alertmanager, Grafana and the exporters. Alerts are mailed through `smtp`;
    a stack without `smtp` still runs Alertmanager, with a receiver named "null" that sends
    nothing (alerts show in its UI only). `publishGrafana` binds Grafana on 127.0.0.1 too;
    it is always served by the gateway under /grafana/."""

    enabled: bool = True
    scrape_interval_s: int = Field(default=15, ge=1, le=300)
    retention_days: int = Field(default=30, ge=1, le=3650)
    publish_grafana: bool = False
    thresholds: AlertThresholds = AlertThresholds()
