"""Shared fixtures: Pulumi mocks that record what a component registers."""

from __future__ import annotations

import shutil

import pulumi
import pulumi_docker as docker
import pytest

from components.spec import HealthCheck, Limits, Metrics, Route, ServiceSpec
from tests.mocks import RecordingMonitor, install_mocks
from tests.servers import scratch_dir


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


@pytest.fixture(scope="session")
def prefect_api():
    """A real temporary Prefect server (Prefect's own test harness), started once per session;
    yields its API URL. Flows called inside the session run against it."""
    import os

    from tests.servers import require_module

    require_module("prefect")
    from prefect.settings import PREFECT_API_URL
    from prefect.testing.utilities import prefect_test_harness

    # the harness's server sends no usage data and races nothing for its SQLite file
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    with prefect_test_harness(server_startup_timeout=90):
        yield PREFECT_API_URL.value()


@pytest.fixture(scope="session")
def docs_node_modules():
    """docs/package.json's packages (mermaid), installed once per session by `npm ci`."""
    from tests.docs_build import npm_install

    folder = scratch_dir("docs-npm-")
    try:
        yield npm_install(folder)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="session")
def pg_image():
    """One local image with this host's PostgreSQL 15 and pgBackRest (tests/pg_stack.py),
    imported once per session for the restore tests on the real Docker daemon; removed at the end."""
    from tests.flows_support import require_docker
    from tests.pg_stack import docker, import_image

    require_docker()
    tag = import_image()
    yield tag
    docker("rmi", "-f", tag, check=False)
