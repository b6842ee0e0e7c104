"""`K6Runner`: the stack's k6 container (pinned grafana/k6), idle until a test is run in it.

Owns the container; the scripts of loadtests/ (and the routes.json they read) are uploaded
through the Docker API, so a changed script replaces the container. `coderz loadtest` execs
`k6 run` in it (settings.run_argv): its REST API answers on the stack's loopback port while a
test runs, and results go to Prometheus' remote-write receiver when the stack has one.
"""

from __future__ import annotations

import pulumi
from pydantic import BaseModel, ConfigDict, model_validator

from components.container import ConfigFile, ContainerService, ContainerServiceArgs, Placement
from components.k6.settings import API_PORT, SCRIPTS_DIR, TREND_STATS, K6Config, scripts
from components.spec import ServiceSpec


class K6RunnerArgs(BaseModel):
    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    spec: ServiceSpec
    config: K6Config
    placement: Placement
    # http://prometheus:9090/api/v1/write, or None when the stack has no Prometheus
    remote_write_url: str | None = None

    @model_validator(mode="after")
    def _api_port(self) -> "K6RunnerArgs":
        if self.spec.port != API_PORT:
            raise ValueError(f"k6's REST API is on {API_PORT}, the spec says {self.spec.port}")
        return self


class K6Runner(pulumi.ComponentResource):
    """Owns the k6 runner container and its copy of loadtests/."""

    container_name: pulumi.Output[str]

    def __init__(self, name: str, args: K6RunnerArgs, *, opts: pulumi.ResourceOptions | None = None):
        super().__init__("coderz:tools:K6Runner", name, None, opts)
        envs = ["K6_NO_USAGE_REPORT=true"]
        if args.remote_write_url:
            envs += [f"K6_PROMETHEUS_RW_SERVER_URL={args.remote_write_url}", f"K6_PROMETHEUS_RW_TREND_STATS={TREND_STATS}"]
        self.service = ContainerService(name, ContainerServiceArgs(
            spec=args.spec,
            placement=args.placement,
            envs=envs,
            # The image's entrypoint is k6 itself; the container idles for `docker exec` and
            # stops at once on `docker stop` (sleep in the background, so TERM is seen).
            entrypoint=["sh", "-c", "trap 'exit 0' TERM INT; while :; do sleep 3600 & wait $!; done"],
            files=[ConfigFile(path=f"{SCRIPTS_DIR}/{file}", content=text) for file, text in scripts().items()],
        ), opts=pulumi.ResourceOptions(parent=self))
        self.container_name = pulumi.Output.from_input(f"{args.placement.prefix}-{args.spec.name}")
        self.register_outputs({"container_name": self.container_name})
