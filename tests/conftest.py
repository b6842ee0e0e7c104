"""Shared fixtures: Pulumi mocks that record what a component registers."""

from __future__ import annotations

import pulumi
import pulumi_docker as docker
import pytest

from components.spec import HealthCheck, Limits, Metrics, Route, ServiceSpec
from tests.mocks import RecordingMonitor, install_mocks


@pytest.fixture
def monitor() -> RecordingMonitor:
    """Fresh mocks for one test; the monitor lists every resource registered after it."""
    return install_mocks("test")


@pytest.fixture
def provider(monitor) -> docker.Provider:
    """The one explicit Docker provider a component is given."""
    return docker.Provider("test-docker", host="unix:///var/run/docker.sock")


def make_spec(name: str = "web", **changes) -> ServiceSpec:
    """A small valid declaration; keyword arguments replace fields."""
    fields = dict(
        name=name,
        image="nginx:1.27.2-alpine",
        port=8080,
        tier="app",
        description="test service",
        health=HealthCheck(test=("CMD", "true")),
        limits=Limits(memory_mb=64, cpus=0.25),
        metrics=Metrics(),
        route=Route(path_prefix=f"/{name}/", cache_ttl_s=10),
    )
    fields.update(changes)
    return ServiceSpec(**fields)


def run(build):
    """Evaluate `build()` under the installed mocks and wait for every registration."""
    result = {}

    @pulumi.runtime.test
    def program():
        result["value"] = build()
        return pulumi.Output.from_input(1)

    program()
    return result["value"]
