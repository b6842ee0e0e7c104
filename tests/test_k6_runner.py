"""The k6 runner and what it changes in monitoring, under mocks."""

from __future__ import annotations

import functools

import pytest

from components.container import Placement
from components.k6.component import K6Runner, K6RunnerArgs
from components.k6.settings import K6Config, scripts
from components.monitoring import render
from infra.catalog import declare_services
from infra.config import stack_file_config
from tests.conftest import run
from tests.mocks import deploy_stack, service_of

PROD = declare_services(stack_file_config("prod"))


def test_runner_gets_every_script_and_its_remote_write_target(monitor, provider):
    run(lambda: K6Runner("k6", K6RunnerArgs(
        spec=PROD.get("k6"), config=K6Config(enabled=True), remote_write_url="http://prometheus:9090/api/v1/write",
        placement=Placement(prefix="coderz-prod", network_name="net", provider=provider))))
    (container,) = monitor.of_type("docker:index/container:Container")
    uploads = {u["file"]: u["content"] for u in container.plain["uploads"]}
    assert uploads == {f"/loadtests/{name}": text for name, text in scripts().items()}
    assert {"/loadtests/smoke.js", "/loadtests/load.js", "/loadtests/lib.js", "/loadtests/routes.json"} <= set(uploads)
    assert "K6_PROMETHEUS_RW_SERVER_URL=http://prometheus:9090/api/v1/write" in container.plain["envs"]
    assert container.plain["ports"] == [{"internal": 6565, "external": 5000, "ip": "127.0.0.1"}]
    assert container.plain["entrypoints"][0] == "sh" and container.plain["image"].startswith("sha256:")
    (image,) = monitor.of_type("RemoteImage")
    assert image.plain["name"] == "grafana/k6:1.1.0"


@functools.cache
def deployed(stack: str):
    return deploy_stack(stack)


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_prometheus_receives_remote_writes_and_grafana_charts_them_where_k6_runs(stack):
    monitor, outputs = deployed(stack)
    containers = {service_of(c): c.plain for c in monitor.of_type("docker:index/container:Container")}
    assert outputs["k6_container"] == f"coderz-{stack}-k6"
    assert "--web.enable-remote-write-receiver" in containers["prometheus"]["command"]
    grafana_files = {u["file"] for u in containers["grafana"]["uploads"]}
    assert f"{render.GRAFANA_DASHBOARDS_DIR}/{render.K6_DASHBOARD}" in grafana_files


def test_without_k6_prometheus_takes_no_writes():
    assert "--web.enable-remote-write-receiver" not in render.prometheus_flags(retention_days=1)
    assert render.K6_DASHBOARD not in render.dashboards(k6=False)
