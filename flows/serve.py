"""The runner's entry point: serve the deployments the rendered file schedules (UTC)."""

from __future__ import annotations

from prefect import serve
from prefect.deployments.runner import RunnerDeployment
from prefect.schedules import Cron

from flows.config import FlowsConfig, load_config
from flows.registry import FLOWS

TIMEZONE = "UTC"


def deployments(config: FlowsConfig) -> list[RunnerDeployment]:
    unknown = sorted(set(config.schedules) - set(FLOWS))
    if unknown:
        raise SystemExit(f"flows config schedules unknown deployments: {', '.join(unknown)}")
    return [
        FLOWS[name].to_deployment(name=name, schedules=[Cron(cron, timezone=TIMEZONE)], tags=[config.stack])
        for name, cron in config.schedules.items()
    ]


def main() -> None:
    serve(*deployments(load_config()))


if __name__ == "__main__":
    main()
