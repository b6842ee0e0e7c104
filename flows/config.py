"""The one file the program renders for the runner, and the secrets that come as env vars.

The file names no password: the SMTP password and the Kubernetes token are read from the
environment (`SMTP_PASSWORD`, `KUBERNETES_TOKEN`), which the program sets from secret Outputs.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

CONFIG_ENV = "CODERZ_FLOWS_CONFIG"
DEFAULT_PATH = "/etc/coderz/flows.json"


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Probe(_Model):
    """One container's health endpoint: an HTTP URL, a TCP port where the service speaks no
    HTTP (PostgreSQL, Redis), or Docker's verdict of its health check where nothing reaches
    the service over the network."""

    service: str
    container: str
    kind: Literal["http", "tcp", "docker"]
    host: str
    port: int | None = None
    path: str = "/"

    @property
    def target(self) -> str:
        if self.kind == "docker":
            return f"docker://{self.container}"
        return f"http://{self.host}:{self.port}{self.path}" if self.kind == "http" else f"tcp://{self.host}:{self.port}"


class Smtp(_Model):
    host: str
    port: int
    user: str | None = None
    from_address: str
    to: list[str]
    starttls: bool = True

    @property
    def password(self) -> str | None:
        return os.environ.get("SMTP_PASSWORD") or None


class Kubernetes(_Model):
    """The k3s API: a kubeconfig file (k3s.yaml, uploaded as a secret file), or a URL with the
    bearer token in KUBERNETES_TOKEN and a CA file (`insecure` for a self-signed test server)."""

    url: str | None = None
    ca_file: str | None = None
    insecure: bool = False
    kubeconfig_file: str | None = None

    @property
    def token(self) -> str | None:
        return os.environ.get("KUBERNETES_TOKEN") or None


class FlowsConfig(_Model):
    stack: str  # the `coderz.stack` label value of this stack's containers
    schedules: dict[str, str]  # deployment name -> cron (UTC), the enabled ones only
    probes: list[Probe]
    prometheus_url: str | None = None
    alertmanager_url: str | None = None
    thresholds: dict[str, int] = {}
    backup_metric: str | None = None
    smtp: Smtp | None = None
    docker_url: str  # the socket proxy (http://host:port) or, in tests, unix:///path
    kubernetes: Kubernetes | None = None
    state_dir: str
    log_retention_days: int = Field(ge=1)
    probe_timeout_s: float = Field(default=5, gt=0)

    @property
    def log_dir(self) -> Path:
        return Path(self.state_dir) / "logs"


def load_config(path: str | None = None) -> FlowsConfig:
    """The rendered file at `path`, else at $CODERZ_FLOWS_CONFIG, else the runner's default."""
    source = Path(path or os.environ.get(CONFIG_ENV) or DEFAULT_PATH)
    return FlowsConfig.model_validate(json.loads(source.read_text()))
