"""The orchestration tier's settings, as a stack file states them (`coderz:prefect`);
infra/config.py composes them into the stack config.

The seven deployments and their default schedules (UTC) are written down once, here, in
`DEFAULT_SCHEDULES`; a stack turns one off or moves it under `prefect.flows.<name>`.
"""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import AfterValidator, Field

from components.spec import Frozen

# The server's image; flows/Dockerfile builds the runner FROM the same one (a test keeps them equal).
PREFECT_IMAGE = "prefecthq/prefect:3.9.1-python3.12"
# HAProxy in front of the Docker socket, one switch per API section (alpine: wget for the check).
SOCKET_PROXY_IMAGE = "tecnativa/docker-socket-proxy:0.3.0"

# The deployment names the flows runner serves (flows/registry.py maps each to its flow).
DEFAULT_SCHEDULES: dict[str, str] = {
    "system-health": "*/5 * * * *",
    "services-health": "*/10 * * * *",
    "threshold-alerts": "*/15 * * * *",
    "k8s-health": "*/15 * * * *",
    "docker-restart-monitor": "*/10 * * * *",
    "daily-summary": "0 6 * * *",
    "weekly-cleanup": "0 2 * * 0",
}

# minute, hour, day of month, month, day of week (0 and 7 are Sunday)
CRON_FIELDS = (("minute", 0, 59), ("hour", 0, 23), ("day of month", 1, 31), ("month", 1, 12), ("day of week", 0, 7))
_CRON_PART = re.compile(r"^(\*|(\d+)(?:-(\d+))?)(?:/(\d+))?$")


def _cron(expression: str) -> str:
    """Five numeric fields (`*`, `a`, `a-b`, lists, `/step`), each within its range; names
    (MON, JAN) and macros (@daily) are refused so what runs is what the file says."""
    fields = expression.split()
    if len(fields) != 5:
        raise ValueError(f"cron {expression!r} needs 5 fields (minute hour day month weekday), got {len(fields)}")
    for text, (name, low, high) in zip(fields, CRON_FIELDS):
        for part in text.split(","):
            match = _CRON_PART.match(part)
            if not match:
                raise ValueError(f"cron {expression!r}: {name} {part!r} is not *, N, N-M or a /step of them")
            _, start, end, step = match.groups()
            numbers = [int(n) for n in (start, end) if n is not None]
            if any(not low <= n <= high for n in numbers):
                raise ValueError(f"cron {expression!r}: {name} must be within {low}-{high}")
            if end is not None and int(end) < int(start):
                raise ValueError(f"cron {expression!r}: {name} range {part!r} runs backwards")
            if step is not None and not 1 <= int(step) <= high:
                raise ValueError(f"cron {expression!r}: {name} step must be within 1-{high}")
    return " ".join(fields)


Cron = Annotated[str, AfterValidator(_cron)]


class FlowSchedule(Frozen):
    """One deployment: on or off, and its cron (UTC); no `cron` keeps the default."""

    enabled: bool = True
    cron: Cron | None = None


def _schedule(name: str):
    return Field(default=FlowSchedule(), alias=name)


class FlowSchedules(Frozen):
    """`prefect.flows`, keyed by deployment name (an unknown name is refused as a typo)."""

    system_health: FlowSchedule = _schedule("system-health")
    services_health: FlowSchedule = _schedule("services-health")
    threshold_alerts: FlowSchedule = _schedule("threshold-alerts")
    k8s_health: FlowSchedule = _schedule("k8s-health")
    docker_restart_monitor: FlowSchedule = _schedule("docker-restart-monitor")
    daily_summary: FlowSchedule = _schedule("daily-summary")
    weekly_cleanup: FlowSchedule = _schedule("weekly-cleanup")

    def effective(self) -> dict[str, str]:
        """Deployment name -> cron, for the deployments this stack keeps on."""
        chosen = {}
        for field, info in type(self).model_fields.items():
            schedule: FlowSchedule = getattr(self, field)
            if schedule.enabled:
                chosen[info.alias] = schedule.cron or DEFAULT_SCHEDULES[info.alias]
        return chosen


class PrefectConfig(Frozen):
    """Prefect server (UI and API under the gateway at /prefect/, on 127.0.0.1 too where
    `publishUi` asks), the flows runner and the Docker socket proxy it talks through."""

    enabled: bool = True
    publish_ui: bool = False
    flows: FlowSchedules = FlowSchedules()
    # weekly-cleanup deletes the runner's own log files older than this
    log_retention_days: int = Field(default=14, ge=1, le=3650)
    # services-health gives a probe this long before it counts as down
    probe_timeout_s: int = Field(default=5, ge=1, le=60)
