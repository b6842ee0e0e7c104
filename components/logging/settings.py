"""The logging tier's settings, as a stack file states them (`coderz:logging`); infra/config.py
composes them into the stack config."""

from __future__ import annotations

from pydantic import Field

from components.spec import Frozen

LOGSTASH_HEAP_MB = 256  # Logstash's JVM heap (LS_JAVA_OPTS); its container needs 1.5x that


class LokiConfig(Frozen):
    enabled: bool = True
    retention_days: int = Field(default=14, ge=1, le=3650)


class ElkConfig(Frozen):
    enabled: bool = False
    retention_days: int = Field(default=7, ge=1, le=3650)
    heap_mb: int = Field(default=512, ge=256, le=32_768)
    # Kibana on 127.0.0.1:<ports.base + 56> (reach it through an SSH tunnel), or not at all.
    publish_kibana: bool = True


class LoggingConfig(Frozen):
    loki: LokiConfig = LokiConfig()
    elk: ElkConfig = ElkConfig()
