"""Orchestration: the Prefect server (UI and API under /prefect/, basic auth), the flows
runner built from `flows/`, and the Docker socket proxy the flows talk through."""

from components.prefect.component import Prefect, PrefectArgs
from components.prefect.settings import DEFAULT_SCHEDULES, PrefectConfig

__all__ = ["DEFAULT_SCHEDULES", "Prefect", "PrefectArgs", "PrefectConfig"]
