"""apps/pyapi/app.py run as a process against a real PostgreSQL and a real Redis: its answers,
its metrics, and how it behaves while either is down and after it comes back."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path
from urllib.parse import quote

import pytest

from components.postgres_init import AppDatabase, render_init_sql
from tests.servers import (
    free_port,
    http,
    postgres_server,
    process,
    require_module,
    require_tool,
    scratch_dir,
)

APP = Path(__file__).resolve().parent.parent / "apps" / "pyapi" / "app.py"
SERVICE = "python-api-test"
# Both passwords need percent-encoding in their URLs; neither may ever reach the log.
PG_APP = AppDatabase(name="python_api", owner="python_api", password="pg pw/with:@'\"\\chars")
REDIS_PASSWORD = "redis:pw@/#?x"
FAST_S = 2.0  # a degraded answer comes at once, not after a long connect timeout


# --- servers ---------------------------------------------------------------------------------


def _as_postgres_user(argv: list[str]) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *argv] if os.geteuid() == 0 else argv


class RestartableRedis:
    """A redis-server that can be stopped and started again on the same port."""

    def __init__(self, password: str) -> None:
        self.binary = require_tool("redis-server")
        self.password = password
        self.port = free_port()
        self.workdir = scratch_dir("redis-")
        self._running: contextlib.ExitStack | None = None

    def start(self) -> None:
        argv = [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                "--dir", str(self.workdir), "--requirepass", self.password]
        stack = contextlib.ExitStack()
        stack.enter_context(process(argv, port=self.port, log=self.workdir / "redis.log"))
        self._running = stack

    def stop(self) -> None:
        if self._running is not None:
            self._running.close()
            self._running = None

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.workdir, ignore_errors=True)


class PostgresControl:
    """Stop and start the cluster of `postgres_server()`; `pg_ctl restart` reuses the options
    it was started with (postmaster.opts), so it comes back on the same port."""

    def __init__(self, server: dict) -> None:
        psycopg = require_module("psycopg")
        with psycopg.connect(host=server["host"], port=server["port"], user=server["user"],
                             password=server["password"], dbname="postgres", connect_timeout=5) as conn:
            self.data = conn.execute("SHOW data_directory").fetchone()[0]
        self.pg_ctl = require_tool("pg_ctl")

    def _run(self, *args: str) -> None:
        subprocess.run(_as_postgres_user([self.pg_ctl, "-D", self.data, *args]), check=True, capture_output=True,
                       timeout=60)

    def stop(self) -> None:
        self._run("-m", "fast", "-w", "stop")

    def start(self) -> None:
        self._run("-w", "-t", "30", "-l", str(Path(self.data).parent / "pg-restart.log"), "restart")


def run_init_sql(server: dict, workdir: Path) -> None:
    script = workdir / "10-apps.sql"
    script.write_text(render_init_sql([PG_APP]))
    result = subprocess.run(
        [require_tool("psql"), "-v", "ON_ERROR_STOP=1", "--no-psqlrc", "-h", str(server["host"]),
         "-p", str(server["port"]), "-U", str(server["user"]), "--dbname", "postgres", "-f", str(script)],
        env={**os.environ, "PGPASSWORD": str(server["password"])}, capture_output=True, text=True, timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr


def app_env(port: int, pg_port: int, redis_port: int) -> dict[str, str]:
    return {
        "PORT": str(port),
        "SERVICE_NAME": SERVICE,
        "DATABASE_URL": f"postgresql://{PG_APP.owner}:{quote(PG_APP.password, safe='')}@127.0.0.1:{pg_port}/{PG_APP.name}",
        "REDIS_URL": f"redis://:{quote(REDIS_PASSWORD, safe='')}@127.0.0.1:{redis_port}/0",
    }


@contextlib.contextmanager
def run_app(env: dict[str, str], log: Path) -> Iterator[subprocess.Popen]:
    with process([sys.executable, str(APP)], port=int(env["PORT"]), env=env, log=log) as proc:
        yield proc


class Stack:
    def __init__(self, base: str, redis: RestartableRedis, postgres: PostgresControl, log: Path) -> None:
        self.base, self.redis, self.postgres, self.log = base, redis, postgres, log

    def get(self, path: str) -> tuple[int, dict, float]:
        started = time.monotonic()
        status, headers, body = http("GET", self.base + path, timeout=10)
        elapsed = time.monotonic() - started
        assert headers["content-type"].startswith("application/json"), headers
        return status, json.loads(body), elapsed


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    require_module("psycopg")
    require_module("redis")
    require_tool("psql")
    workdir = scratch_dir("pyapi-")
    redis = RestartableRedis(REDIS_PASSWORD)
    redis.start()
    try:
        with postgres_server() as server:
            run_init_sql(server, workdir)
            port = free_port()
            log = workdir / "app.log"
            with run_app(app_env(port, int(server["port"]), redis.port), log):
                yield Stack(f"http://127.0.0.1:{port}", redis, PostgresControl(server), log)
    finally:
        redis.remove()
        shutil.rmtree(workdir, ignore_errors=True)


def wait_until(check: Callable[[], bool], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"not true after {timeout}s")
        time.sleep(0.1)


def ready(stack: Stack) -> bool:
    return stack.get("/health/ready")[0] == 200


# --- metrics parsing ---------------------------------------------------------------------------

SAMPLE = re.compile(r"^(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(?P<labels>.*)\})? (?P<value>\S+)$")
LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def scrape(stack: Stack) -> tuple[dict[tuple[str, frozenset], float], str]:
    status, headers, body = http("GET", stack.base + "/metrics")
    assert status == 200 and headers["content-type"].startswith("text/plain")
    text = body.decode()
    samples = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        match = SAMPLE.match(line)
        assert match, f"not a Prometheus sample: {line!r}"
        labels = frozenset(LABEL.findall(match["labels"] or ""))
        samples[(match["name"], labels)] = float(match["value"])
    return samples, text


def sample(samples: dict, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


# --- healthy -----------------------------------------------------------------------------------


def test_index_counts_hits_and_queries_postgres(stack):
    answers = [stack.get("/") for _ in range(3)]
    for status, body, _ in answers:
        assert status == 200
        assert body["service"] == SERVICE and body["status"] == "ok"
        assert (body["postgres"], body["redis"]) == ("up", "up")
        assert body["database"]["database"] == PG_APP.name
        assert body["database"]["app_starts"] >= 1  # the row the app wrote into its own table
        datetime.fromisoformat(body["database"]["server_time"])
    hits = [body["hits"] for _, body, _ in answers]
    assert hits == [hits[0], hits[0] + 1, hits[0] + 2]


def test_health_and_ready(stack):
    assert stack.get("/health")[:2] == (200, {"status": "ok", "postgres": "up", "redis": "up"})
    assert stack.get("/health/ready")[:2] == (200, {"status": "ok", "postgres": "up", "redis": "up"})


def test_unknown_path_is_a_json_404(stack):
    status, body, _ = stack.get("/no/such/thing")
    assert status == 404 and body["error"] == "not found"


def test_metrics(stack):
    before, _ = scrape(stack)
    for _ in range(3):
        stack.get("/")
    stack.get("/nope")
    after, text = scrape(stack)

    assert "# TYPE http_request_duration_seconds histogram" in text
    assert "# TYPE http_requests_total counter" in text
    ok = {"method": "GET", "path": "/", "status": "200"}
    assert sample(after, "http_requests_total", **ok) - sample(before, "http_requests_total", **ok) == 3
    missing = {"method": "GET", "path": "other", "status": "404"}
    assert sample(after, "http_requests_total", **missing) - sample(before, "http_requests_total", **missing) == 1
    assert not any(('path', '/nope') in labels for _, labels in after)  # unknown paths share one label

    index = {"method": "GET", "path": "/"}
    buckets = sorted(
        (float(dict(labels)["le"]), value) for (name, labels), value in after.items()
        if name == "http_request_duration_seconds_bucket" and dict(labels).get("path") == "/"
    )
    assert len(buckets) > 5 and buckets[-1][0] == float("inf")
    assert [v for _, v in buckets] == sorted(v for _, v in buckets)  # cumulative
    count = sample(after, "http_request_duration_seconds_count", **index)
    assert buckets[-1][1] == count
    assert count - sample(before, "http_request_duration_seconds_count", **index) == 3
    assert sample(after, "http_request_duration_seconds_sum", **index) > 0

    assert sample(after, "dependency_up", dependency="postgres") == 1
    assert sample(after, "dependency_up", dependency="redis") == 1


# --- outages -----------------------------------------------------------------------------------


def test_redis_outage_and_recovery(stack):
    stack.redis.stop()
    try:
        status, body, elapsed = stack.get("/")
        assert status == 200 and elapsed < FAST_S
        assert (body["status"], body["redis"], body["postgres"]) == ("degraded", "down", "up")
        assert body["hits"] is None and body["database"]["database"] == PG_APP.name

        status, body, elapsed = stack.get("/health")
        assert status == 200 and elapsed < FAST_S
        assert body == {"status": "degraded", "postgres": "up", "redis": "down"}
        status, body, elapsed = stack.get("/health/ready")
        assert status == 503 and elapsed < FAST_S and body["redis"] == "down"

        samples, _ = scrape(stack)
        assert sample(samples, "dependency_up", dependency="redis") == 0
        assert sample(samples, "dependency_up", dependency="postgres") == 1
    finally:
        stack.redis.start()

    wait_until(lambda: ready(stack))
    status, body, _ = stack.get("/")
    assert status == 200 and body["status"] == "ok"
    assert body["hits"] == 1  # a real INCR on the new (empty) Redis


def test_postgres_outage_and_recovery(stack):
    stack.postgres.stop()
    try:
        status, body, elapsed = stack.get("/")
        assert status == 200 and elapsed < FAST_S
        assert (body["status"], body["postgres"], body["redis"]) == ("degraded", "down", "up")
        assert body["database"] is None and isinstance(body["hits"], int)

        status, body, elapsed = stack.get("/health")
        assert status == 200 and elapsed < FAST_S
        assert body == {"status": "degraded", "postgres": "down", "redis": "up"}
        status, body, elapsed = stack.get("/health/ready")
        assert status == 503 and elapsed < FAST_S and body["postgres"] == "down"

        samples, _ = scrape(stack)
        assert sample(samples, "dependency_up", dependency="postgres") == 0
    finally:
        stack.postgres.start()

    wait_until(lambda: ready(stack))
    status, body, _ = stack.get("/")
    assert status == 200 and body["status"] == "ok" and body["database"]["database"] == PG_APP.name


def test_log_is_json_without_passwords(stack):
    stack.get("/")
    lines = stack.log.read_text().splitlines()
    assert lines
    entries = [json.loads(line) for line in lines]
    assert any(e["msg"] == "listening" for e in entries)
    for secret in (PG_APP.password, REDIS_PASSWORD, quote(PG_APP.password, safe=""), quote(REDIS_PASSWORD, safe="")):
        assert secret not in stack.log.read_text()


# --- start without dependencies, stop on SIGTERM -------------------------------------------------


def test_starts_while_dependencies_are_down_and_recovers(tmp_path):
    require_module("psycopg")
    require_module("redis")
    port = free_port()
    redis = RestartableRedis(REDIS_PASSWORD)
    # nothing listens on either port yet
    with run_app(app_env(port, free_port(), redis.port), tmp_path / "app.log"):
        stack = Stack(f"http://127.0.0.1:{port}", redis, None, tmp_path / "app.log")  # type: ignore[arg-type]
        status, body, elapsed = stack.get("/health")
        assert status == 200 and elapsed < FAST_S
        assert body == {"status": "degraded", "postgres": "down", "redis": "down"}
        status, body, elapsed = stack.get("/")
        assert status == 200 and elapsed < FAST_S
        assert (body["status"], body["hits"], body["database"]) == ("degraded", None, None)
        assert stack.get("/health/ready")[0] == 503

        redis.start()
        try:
            wait_until(lambda: stack.get("/health")[1]["redis"] == "up")
            assert stack.get("/")[1]["hits"] == 1
        finally:
            redis.remove()
    log = (tmp_path / "app.log").read_text()
    assert "postgres is down" in log and "redis is up" in log
    assert PG_APP.password not in log and REDIS_PASSWORD not in log


def test_dependencies_that_accept_but_never_answer(tmp_path):
    """Hung servers (TCP accepted, no reply): /health still answers within the 3 s Docker
    gives its health check, and right after that at once."""
    require_module("psycopg")
    require_module("redis")
    with contextlib.ExitStack() as silent:
        ports = []
        for _ in range(2):
            sock = silent.enter_context(socket.socket())
            sock.bind(("127.0.0.1", 0))
            sock.listen(16)  # the kernel completes the handshakes; nobody ever reads
            ports.append(sock.getsockname()[1])
        port = free_port()
        with run_app(app_env(port, ports[0], ports[1]), tmp_path / "app.log"):
            stack = Stack(f"http://127.0.0.1:{port}", None, None, tmp_path / "app.log")  # type: ignore[arg-type]
            status, body, elapsed = stack.get("/health")
            assert status == 200 and elapsed < 3.0, elapsed
            assert body == {"status": "degraded", "postgres": "down", "redis": "down"}
            status, body, elapsed = stack.get("/")
            assert status == 200 and body["status"] == "degraded" and elapsed < 0.5, elapsed

            # Once the pause after the failure is over, one request tries again (and waits for
            # the timeout) while the others are still answered at once.
            time.sleep(1.2)
            with ThreadPoolExecutor(1) as prober:
                probing = prober.submit(stack.get, "/health")
                time.sleep(0.3)
                status, body, elapsed = stack.get("/health")
                assert status == 200 and body["postgres"] == "down" and elapsed < 0.5, elapsed
                assert probing.result()[2] > 1.0  # the one that did wait for the timeout


def test_sigterm_stops_cleanly(tmp_path):
    require_module("psycopg")
    require_module("redis")
    port = free_port()
    with run_app(app_env(port, free_port(), free_port()), tmp_path / "app.log") as proc:
        assert http("GET", f"http://127.0.0.1:{port}/health")[0] == 200
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=5) == 0
    log = (tmp_path / "app.log").read_text()
    assert "SIGTERM received" in log and '"stopped"' in log
