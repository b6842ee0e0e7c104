"""The gateway's rendered nginx.conf and Lua, run in real nginx on 127.0.0.1.

Debian's nginx-extras with its Lua module stands in for the OpenResty container (the same
config, plus `load_module` lines). Everything else is real too: Redis with a password, a DNS
server stub answering A records (the role of Docker's 127.0.0.11), and stdlib HTTP backends
that count the requests they get.

Routing contract proven here: `/api/<name>/rest` reaches the service as `/rest` (the prefix is
stripped and sent in X-Forwarded-Prefix).
"""

from __future__ import annotations

import collections
import contextlib
import gzip
import json
import os
import shutil
import socket
import ssl
import struct
import subprocess
import sys
import threading
import time
import uuid
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from http.client import HTTPConnection, HTTPSConnection
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Iterator
from urllib.parse import parse_qs, urlsplit

import pytest

from components.gateway.render import (
    REDIS_PASSWORD_ENV,
    GatewayRender,
    GatewayRoute,
    content_security_policy,
    lua_files,
    render_nginx_conf,
    routes_from_catalog,
)
from tests.servers import (
    IN_CI,
    free_port,
    http,
    process,
    redis_server,
    require_module,
    require_tool,
    scratch_dir,
    wait_for_port,
)

REPO = Path(__file__).resolve().parent.parent
PYAPI = REPO / "apps" / "pyapi" / "app.py"
REDIS_PASSWORD = "gateway-test-redis-pw"
DEBIAN_LUA_MODULES = (
    "/usr/lib/nginx/modules/ndk_http_module.so",
    "/usr/lib/nginx/modules/ngx_http_lua_module.so",
)
SECURITY_HEADERS = ("x-frame-options", "x-content-type-options", "referrer-policy", "content-security-policy",
                    "x-xss-protection")


# --- real-server helpers of this file ------------------------------------------------------------


def nginx_binary() -> tuple[str, tuple[str, ...]]:
    """nginx and the module lines it needs for Lua (none for OpenResty)."""
    openresty = shutil.which("openresty")
    if openresty:
        return openresty, ()
    binary = require_tool("nginx")
    missing = [m for m in DEBIAN_LUA_MODULES if not Path(m).exists()]
    if missing:
        message = f"nginx Lua module missing ({', '.join(missing)}): apt-get install libnginx-mod-http-lua"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    return binary, DEBIAN_LUA_MODULES


class DnsStub:
    """A UDP DNS server on 127.0.0.1 answering A queries from `records`; NXDOMAIN otherwise."""

    def __init__(self) -> None:
        self.records: dict[str, list[str]] = {}
        self.queries: list[str] = []
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.address = f"127.0.0.1:{self.sock.getsockname()[1]}"
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                data, client = self.sock.recvfrom(512)
            except (socket.timeout, OSError):
                continue
            with contextlib.suppress(Exception):
                self.sock.sendto(self._answer(data), client)

    def _answer(self, query: bytes) -> bytes:
        ident, _flags, qdcount = struct.unpack("!HHH", query[:6])
        labels, offset = [], 12
        while query[offset]:
            length = query[offset]
            labels.append(query[offset + 1:offset + 1 + length].decode().lower())
            offset += 1 + length
        qtype, _qclass = struct.unpack("!HH", query[offset + 1:offset + 5])
        question = query[12:offset + 5]
        name = ".".join(labels)
        self.queries.append(name)
        ips = self.records.get(name)
        answers = b""
        if ips and qtype == 1:
            for ip in ips:
                answers += struct.pack("!HHHIH", 0xC00C, 1, 1, 1, 4) + socket.inet_aton(ip)
        rcode = 0 if ips is not None else 3
        count = len(ips) if ips and qtype == 1 else 0
        return struct.pack("!HHHHHH", ident, 0x8180 | rcode, qdcount, count, 0, 0) + question + answers

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self.sock.close()


class Backend:
    """A stdlib HTTP/1.1 backend; its answer says who answered and how often this path was hit.

    Query parameters: sleep=<s>, status=<code>, cookie=1 (Set-Cookie), size=<n> (padding).
    """

    def __init__(self, name: str, host: str = "127.0.0.1", port: int | None = None) -> None:
        self.name, self.host = name, host
        self.port = port or free_port()
        self.hits: collections.Counter[str] = collections.Counter()
        self.client_ports: list[int] = []
        self.headers: dict[str, dict[str, str]] = {}
        self.delay = 0.0
        self.lock = threading.Lock()
        self.server: ThreadingHTTPServer | None = None

    @property
    def total(self) -> int:
        return sum(self.hits.values())

    def start(self) -> "Backend":
        backend = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # headers and body are two writes: no 40 ms stall

            def handle_any(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body_in = self.rfile.read(length) if length else b""
                query = {k: v[0] for k, v in parse_qs(urlsplit(self.path).query).items()}
                with backend.lock:
                    backend.hits[self.path] += 1
                    hit = backend.hits[self.path]
                    backend.client_ports.append(self.client_address[1])
                    backend.headers[self.path] = {k.lower(): v for k, v in self.headers.items()}
                time.sleep(float(query.get("sleep", backend.delay)))
                payload = {"backend": backend.name, "path": self.path, "method": self.command, "hit": hit,
                           "body": body_in.decode(errors="replace"), "pad": "x" * int(query.get("size", 0))}
                body = json.dumps(payload).encode()
                self.send_response(int(query.get("status", 200)))
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                if query.get("cookie"):
                    self.send_header("Set-Cookie", "session=abc; HttpOnly")
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = do_PUT = do_DELETE = handle_any

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer((self.host, self.port), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        return self

    def stop(self) -> None:
        if self.server:
            self.server.shutdown()
            self.server.server_close()
            self.server = None


@dataclass
class Gateway:
    args: GatewayRender
    prefix: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.args.http_port}"

    def get(self, path: str, **kwargs) -> tuple[int, dict[str, str], bytes]:
        return http(kwargs.pop("method", "GET"), self.url + path, **kwargs)

    def metrics(self) -> str:
        status, _, body = http("GET", f"http://127.0.0.1:{self.args.metrics_port}/metrics")
        assert status == 200
        return body.decode()

    def errors(self) -> str:
        path = self.prefix / "error.log"
        return path.read_text()[-3000:] if path.exists() else ""


def render_into(prefix: Path, routes: tuple[GatewayRoute, ...], **overrides) -> tuple[GatewayRender, Path]:
    """Render nginx.conf and the Lua files under `prefix`, with test ports and paths."""
    _, modules = nginx_binary()
    (prefix / "lua").mkdir(exist_ok=True)
    for name, text in lua_files().items():
        (prefix / "lua" / name).write_text(text)
    fields = dict(
        routes=routes, redis_host="127.0.0.1", listen_address="127.0.0.1",
        http_port=free_port(), https_port=free_port(), metrics_port=free_port(),
        lua_dir=str(prefix / "lua"), access_log=str(prefix / "access.log"), error_log=str(prefix / "error.log"),
        pid_path=str(prefix / "nginx.pid"), temp_dir=str(prefix), load_modules=modules, worker_processes=2,
        rate_limit_rps=100_000, rate_limit_burst=100_000, error_log_level="info",
    )
    fields["public_https_port"] = fields["https_port"]
    fields.update(overrides)
    args = GatewayRender(**fields)
    conf = prefix / "nginx.conf"
    conf.write_text(render_nginx_conf(args))
    return args, conf


def nginx_test(prefix: Path, conf: Path) -> subprocess.CompletedProcess:
    binary, _ = nginx_binary()
    return subprocess.run([binary, "-t", "-p", str(prefix), "-c", str(conf)], capture_output=True, text=True,
                          env={**os.environ, REDIS_PASSWORD_ENV: REDIS_PASSWORD})


@contextlib.contextmanager
def gateway(routes: tuple[GatewayRoute, ...], *, wrap: tuple[str, ...] = (), **overrides) -> Iterator[Gateway]:
    """Real nginx in the foreground on free loopback ports, everything under a temp prefix;
    `wrap` is a command prefix that execs nginx (e.g. one that joins a cgroup first)."""
    binary, _ = nginx_binary()
    prefix = scratch_dir("gateway-")
    try:
        args, conf = render_into(prefix, routes, **overrides)
        checked = nginx_test(prefix, conf)
        assert checked.returncode == 0, checked.stderr
        argv = [*wrap, binary, "-p", str(prefix), "-c", str(conf), "-g", "daemon off;"]
        with process(argv, port=args.http_port, env={REDIS_PASSWORD_ENV: REDIS_PASSWORD},
                     log=prefix / "stdout.log"):
            wait_for_port(args.metrics_port)
            yield Gateway(args, prefix)
    finally:
        shutil.rmtree(prefix, ignore_errors=True)


def route(name: str, host: str, port: int, ttl: int = 0, prefix: str | None = None, **extra) -> GatewayRoute:
    return GatewayRoute(name=name, host=host, port=port, path_prefix=prefix or f"/api/{name.removesuffix('-api')}/",
                        cache_ttl_s=ttl, **extra)


def unique(path: str = "") -> str:
    return f"{path}{uuid.uuid4().hex[:12]}"


def self_signed(folder: Path) -> tuple[Path, Path]:
    openssl = require_tool("openssl")
    cert, key = folder / "gateway.crt", folder / "gateway.key"
    subprocess.run([openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                    "-keyout", str(key), "-out", str(cert), "-days", "1", "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"], check=True, capture_output=True)
    return cert, key


# --- fixtures: one gateway for most tests --------------------------------------------------------


@pytest.fixture(scope="module")
def redis_port() -> Iterator[int]:
    with redis_server(REDIS_PASSWORD) as port:
        yield port


@pytest.fixture(scope="module")
def dns() -> Iterator[DnsStub]:
    stub = DnsStub()
    yield stub
    stub.close()


@pytest.fixture(scope="module")
def backends() -> Iterator[dict[str, Backend]]:
    shared_port = free_port()  # two replicas: same port, two addresses, like two containers
    started = {
        "python": Backend("python").start(),
        "dotnet": Backend("dotnet").start(),
        "replica-a": Backend("replica-a", "127.0.0.2", shared_port).start(),
        "replica-b": Backend("replica-b", "127.0.0.3", shared_port).start(),
    }
    yield started
    for backend in started.values():
        backend.stop()


@pytest.fixture(scope="module")
def late_port() -> int:
    return free_port()


@pytest.fixture(scope="module")
def gw(redis_port, dns, backends, late_port) -> Iterator[Gateway]:
    dns.records.update({"python-api": ["127.0.0.1"], "dotnet-api": ["127.0.0.1"],
                        "multi-api": ["127.0.0.2", "127.0.0.3"], "failover-api": ["127.0.0.2", "127.0.0.4"]})
    py = backends["python"].port
    routes = (
        route("python-api", "python-api", py, ttl=30),
        route("dotnet-api", "dotnet-api", backends["dotnet"].port, ttl=30),
        route("short-api", "python-api", py, ttl=1),
        route("literal-api", "127.0.0.1", py),  # an IP literal needs no DNS
        route("multi-api", "multi-api", backends["replica-a"].port),
        route("failover-api", "failover-api", backends["replica-a"].port),  # 127.0.0.4 has no listener
        route("down-api", "127.0.0.1", free_port()),  # nothing listens there
        route("ghost-api", "ghost-api", py),  # the name never resolves
        route("slow-api", "python-api", py, read_timeout_s=1),
        route("late-api", "late-api", late_port),
        route("grafana", "python-api", py, prefix="/grafana/", strip_prefix=False),  # serves from its sub-path
        route("kept-api", "python-api", py, ttl=30, prefix="/kept/", strip_prefix=False),
        # its own CSP; named like nginx's map keyword, which the rendered map must not take it for
        route("default", "python-api", py, ttl=30, data_images=True),
    )
    with gateway(routes, redis_port=redis_port, resolver=dns.address) as running:
        yield running


# --- config --------------------------------------------------------------------------------------


def catalog_routes() -> tuple[GatewayRoute, ...]:
    from infra.catalog import declare_services
    from infra.config import StackConfig

    config = StackConfig.model_validate({"environment": "dev", "target": {"kind": "local"}, "ports": {"base": 5200}})
    return routes_from_catalog(declare_services(config))


def test_routes_come_from_the_catalog():
    routes = {r.name: r for r in catalog_routes()}
    assert set(routes) == {"python-api", "dotnet-api", "grafana", "prefect-server"}
    assert routes["grafana"].path_prefix == "/grafana/" and not routes["grafana"].strip_prefix
    assert routes["prefect-server"].path_prefix == "/prefect/" and not routes["prefect-server"].strip_prefix
    assert (routes["python-api"].host, routes["python-api"].port, routes["python-api"].path_prefix) == (
        "python-api", 8000, "/api/python/")
    assert (routes["dotnet-api"].host, routes["dotnet-api"].port, routes["dotnet-api"].path_prefix) == (
        "dotnet-api", 8080, "/api/dotnet/")
    assert routes["python-api"].cache_ttl_s == 30

    conf = render_nginx_conf(GatewayRender(routes=tuple(routes.values())))
    assert f"env {REDIS_PASSWORD_ENV};" in conf
    assert "listen 8080 default_server;" in conf and "listen 9145;" in conf
    assert "resolver 127.0.0.11:53" in conf and "load_module" not in conf
    assert "ssl_certificate" not in conf and 'add_header Strict-Transport-Security' not in conf
    # no upstream names nginx would have to resolve at start
    assert "proxy_pass http://gw_backend/;" in conf and "server python-api" not in conf
    assert "proxy_pass http://gw_backend/grafana/;" in conf


def test_rendered_config_passes_nginx_t_plain_and_tls():
    prefix = scratch_dir("gateway-t-")
    try:
        # The catalog's service names do not resolve here: nginx -t must not care.
        _, conf = render_into(prefix, catalog_routes(), resolver="127.0.0.11")
        checked = nginx_test(prefix, conf)
        assert checked.returncode == 0, checked.stderr

        cert, key = self_signed(prefix)
        _, conf = render_into(prefix, catalog_routes(), tls_cert_path=str(cert), tls_key_path=str(key),
                              domain="coderz.example.com")
        text = conf.read_text()
        assert "ssl_protocols TLSv1.2 TLSv1.3;" in text and "Strict-Transport-Security" in text
        checked = nginx_test(prefix, conf)
        assert checked.returncode == 0, checked.stderr
    finally:
        shutil.rmtree(prefix, ignore_errors=True)


def test_render_rejects_half_tls_and_directive_injection():
    with pytest.raises(ValueError):
        GatewayRender(routes=(), tls_cert_path="/x.crt")
    with pytest.raises(ValueError):
        GatewayRender(routes=(), access_log="/dev/stdout; evil")


# --- routing -------------------------------------------------------------------------------------


def test_both_prefixes_route_with_the_prefix_stripped(gw, backends):
    path = unique("/items-")
    status, headers, body = gw.get(f"/api/python{path}?a=1")
    assert status == 200, gw.errors()
    answer = json.loads(body)
    assert answer["backend"] == "python" and answer["path"] == f"{path}?a=1"
    seen = backends["python"].headers[f"{path}?a=1"]
    assert seen["x-forwarded-prefix"] == "/api/python" and seen["x-request-id"] == headers["x-request-id"]
    assert "accept-encoding" not in seen or seen["accept-encoding"] == ""

    status, _, body = gw.get("/api/python/odd%3Fname%20x?b=%2F")  # escapes survive both ways
    assert status == 200 and json.loads(body)["path"] == "/odd%3Fname%20x?b=%2F"

    status, _, body = gw.get("/api/dotnet/things")
    assert status == 200 and json.loads(body)["backend"] == "dotnet"
    assert json.loads(body)["path"] == "/things"

    status, _, body = gw.get("/api/literal/by-ip")  # host given as an IP literal
    assert status == 200 and json.loads(body)["path"] == "/by-ip"

    status, _, body = gw.get("/nowhere")
    assert status == 404 and json.loads(body) == {"error": "no route"}

    conn = HTTPConnection("127.0.0.1", gw.args.http_port, timeout=5)
    conn.request("GET", "/api/python")
    response = conn.getresponse()
    assert response.status == 301 and response.getheader("Location").endswith("/api/python/")
    conn.close()


def test_a_route_that_keeps_its_prefix_passes_the_whole_path(gw, backends):
    path = unique("/d/")
    status, _, body = gw.get(f"/grafana{path}?x=1")
    assert status == 200, gw.errors()
    assert json.loads(body)["path"] == f"/grafana{path}?x=1"
    assert "x-forwarded-prefix" not in backends["python"].headers[f"/grafana{path}?x=1"]
    # A cached route that keeps its prefix fetches misses with the prefix too.
    status, headers, body = gw.get(f"/kept{path}")
    assert (status, headers["x-cache"], json.loads(body)["path"]) == (200, "MISS", f"/kept{path}")
    assert gw.get(f"/kept{path}")[1]["x-cache"] == "HIT"


def test_health_answers_without_rate_limit_or_backends(gw):
    status, headers, body = gw.get("/health")
    assert status == 200 and json.loads(body) == {"status": "ok"}
    assert headers["content-type"] == "application/json"


def test_runtime_resolution_follows_a_service_that_appears_later(gw, dns, late_port):
    # nginx is up although late-api neither resolves nor listens
    status, _, _ = gw.get("/api/late/x")
    assert status == 503
    dns.records["late-api"] = ["127.0.0.1"]
    deadline = time.monotonic() + 5
    while (status := gw.get("/api/late/x")[0]) == 503 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert status == 502  # resolves now, but nothing listens yet
    late = Backend("late", port=late_port).start()
    try:
        status, headers, body = gw.get("/api/late/x")
        assert status == 200 and json.loads(body)["backend"] == "late"
        assert headers["x-cache"] == "BYPASS"  # a route with TTL 0
    finally:
        late.stop()


def test_backend_errors_are_502_503_504(gw):
    assert gw.get("/api/down/x")[0] == 502  # connection refused
    assert gw.get("/api/ghost/x")[0] == 503  # name does not resolve
    started = time.monotonic()
    assert gw.get("/api/slow/x?sleep=3")[0] == 504  # read timeout of 1 s
    assert time.monotonic() - started < 2.5


# --- cache ---------------------------------------------------------------------------------------


def test_get_is_a_miss_then_a_hit(gw, backends):
    python = backends["python"]
    path = unique("/cached-")
    status, headers, first = gw.get(f"/api/python{path}")
    assert (status, headers["x-cache"]) == (200, "MISS")
    status, headers, second = gw.get(f"/api/python{path}")
    assert (status, headers["x-cache"]) == (200, "HIT"), gw.errors()
    assert second == first and headers["content-type"] == "application/json"
    assert python.hits[path] == 1  # the HIT never reached the backend

    # the key includes the query string and the host
    assert gw.get(f"/api/python{path}?v=2")[1]["x-cache"] == "MISS"
    assert gw.get(f"/api/python{path}", headers={"Host": "other.example"})[1]["x-cache"] == "MISS"
    assert gw.get(f"/api/python{path}", headers={"Host": "other.example"})[1]["x-cache"] == "HIT"
    assert python.hits[path] == 2 and python.hits[f"{path}?v=2"] == 1


def test_cached_answer_expires_after_the_route_ttl(gw, backends):
    path = unique("/ttl-")
    assert gw.get(f"/api/short{path}")[1]["x-cache"] == "MISS"
    assert gw.get(f"/api/short{path}")[1]["x-cache"] == "HIT"
    time.sleep(1.2)  # short-api caches for 1 s
    assert gw.get(f"/api/short{path}")[1]["x-cache"] == "MISS"
    assert backends["python"].hits[path] == 2


@pytest.mark.parametrize("case", ["post", "authorization", "set-cookie", "error-500"])
def test_what_is_never_cached(gw, backends, case):
    path = unique(f"/{case}-")
    request: dict = {}
    expected_status, expected_cache = 200, "BYPASS"
    if case == "post":
        request = {"method": "POST", "body": b'{"a":1}', "headers": {"Content-Type": "application/json"}}
    elif case == "authorization":
        request = {"headers": {"Authorization": "Bearer token"}}
    elif case == "set-cookie":
        path += "?cookie=1"
    else:
        path += "?status=500"
        expected_status, expected_cache = 500, "MISS"  # looked up, fetched, not stored
    for _ in range(2):
        status, headers, body = gw.get(f"/api/python{path}", **request)
        assert (status, headers["x-cache"]) == (expected_status, expected_cache)
    assert backends["python"].hits[path] == 2
    if case == "post":
        assert json.loads(body)["body"] == '{"a":1}'
    if case == "set-cookie":
        assert headers["set-cookie"].startswith("session=abc")


def test_redis_down_still_serves_and_health_holds_while_every_backend_is_down(dns):
    """A gateway started before anything exists: Redis dead, backends dead, then one appears."""
    port = free_port()
    dns.records["ghost-python"] = ["127.0.0.1"]
    routes = (route("python-api", "ghost-python", port, ttl=30), route("dotnet-api", "dotnet-nowhere", free_port()))
    with gateway(routes, redis_port=free_port(), resolver=dns.address) as degraded:
        assert degraded.get("/health")[0] == 200
        assert degraded.get("/api/python/x")[0] == 502
        assert degraded.get("/api/dotnet/x")[0] == 503
        backend = Backend("late-python", port=port).start()
        try:
            for _ in range(2):
                status, headers, body = degraded.get("/api/python/x")
                assert (status, headers["x-cache"]) == (200, "MISS"), degraded.errors()
            assert backend.hits["/x"] == 2
        finally:
            backend.stop()
        assert degraded.get("/health")[0] == 200


def test_redis_stopping_while_running_fails_open(backends):
    routes = (route("python-api", "127.0.0.1", backends["python"].port, ttl=30),)
    path = unique("/redis-stops-")
    with contextlib.ExitStack() as nginx_stack:
        with redis_server(REDIS_PASSWORD) as port:
            running = nginx_stack.enter_context(gateway(routes, redis_port=port, resolver="127.0.0.1",
                                                        cache_l1_ttl_s=1))
            assert [running.get(f"/api/python{path}")[1]["x-cache"] for _ in range(2)] == ["MISS", "HIT"]
        time.sleep(1.1)  # the first level may answer for a second more; then only Redis could
        # Redis is gone; nginx still holds pooled connections to it
        for _ in range(3):
            status, headers, _ = running.get(f"/api/python{path}")
            assert (status, headers["x-cache"]) == (200, "MISS"), running.errors()
    assert backends["python"].hits[path] == 4


# --- headers, gzip, rate limit, TLS --------------------------------------------------------------


def test_security_headers_gzip_and_no_version(gw):
    path = unique("/big-") + "?size=4000"
    for expected in ("MISS", "HIT"):
        status, headers, body = gw.get(f"/api/python{path}", headers={"Accept-Encoding": "gzip"})
        assert (status, headers["x-cache"], headers.get("content-encoding")) == (200, expected, "gzip")
        assert len(json.loads(gzip.decompress(body))["pad"]) == 4000
        for name in SECURITY_HEADERS:
            assert name in headers, name
        assert headers["x-frame-options"] == "DENY" and headers["x-content-type-options"] == "nosniff"
        assert headers["server"] == "nginx"  # server_tokens off: no version
        assert "strict-transport-security" not in headers  # HSTS only with TLS
    status, headers, body = gw.get(f"/api/python{path}")  # a client without gzip gets plain JSON
    assert headers["x-cache"] == "HIT" and "content-encoding" not in headers and json.loads(body)
    status, headers, _ = gw.get("/nowhere")
    assert status == 404 and all(name in headers for name in SECURITY_HEADERS)


def test_csp_is_the_platforms_on_every_answer_but_a_data_images_routes(gw):
    strict, own = content_security_policy(), content_security_policy(route("default", "h", 1, data_images=True))
    assert own == strict + "; img-src 'self' data:"
    path = unique("/api/default/csp-")
    for expected in ("MISS", "HIT"):  # a cached answer too
        status, headers, _ = gw.get(path)
        assert (status, headers["x-cache"], headers["content-security-policy"]) == (200, expected, own)
    for path in ("/api/python/csp", "/nowhere", "/health", "/api/defaults/x"):
        _, headers, _ = gw.get(path)
        assert headers["content-security-policy"] == strict, path
    # an answer nginx gives before any route is chosen (two Host headers: 400)
    with socket.create_connection(("127.0.0.1", gw.args.http_port), timeout=5) as conn:
        conn.sendall(b"GET /api/default/x HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n")
        answer = conn.recv(65536).decode("latin-1")
    assert answer.startswith("HTTP/1.1 400") and f"Content-Security-Policy: {strict}\r\n" in answer, answer


def test_rate_limit_answers_429(redis_port, backends):
    routes = (route("python-api", "127.0.0.1", backends["python"].port),)
    with gateway(routes, redis_port=redis_port, resolver="127.0.0.1", rate_limit_rps=2, rate_limit_burst=1) as limited:
        statuses = [limited.get("/api/python/limited")[0] for _ in range(8)]
        assert statuses[0] == 200 and statuses.count(429) >= 5, statuses
        assert all(limited.get("/health")[0] == 200 for _ in range(5))  # health is not limited


def test_tls_handshake_hsts_and_redirect(redis_port, backends):
    folder = scratch_dir("gateway-tls-")
    try:
        cert, key = self_signed(folder)
        routes = (route("python-api", "127.0.0.1", backends["python"].port, ttl=30),)
        with gateway(routes, redis_port=redis_port, resolver="127.0.0.1", tls_cert_path=str(cert),
                     tls_key_path=str(key)) as tls:
            https_port = tls.args.https_port
            wait_for_port(https_port)
            context = ssl.create_default_context(cafile=str(cert))
            conn = HTTPSConnection("127.0.0.1", https_port, context=context, timeout=5)
            conn.request("GET", "/api/python/secure")
            response = conn.getresponse()
            assert response.status == 200 and json.loads(response.read())["path"] == "/secure"
            assert response.getheader("Strict-Transport-Security").startswith("max-age=31536000")
            assert conn.sock.version() in ("TLSv1.2", "TLSv1.3")
            conn.close()

            for version in (ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3):
                context = ssl.create_default_context(cafile=str(cert))
                context.minimum_version = context.maximum_version = version
                with socket.create_connection(("127.0.0.1", https_port), timeout=5) as raw:
                    with context.wrap_socket(raw, server_hostname="localhost") as tls_sock:
                        assert tls_sock.version() == version.name.replace("_", ".")
            old = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            old.check_hostname, old.verify_mode = False, ssl.CERT_NONE
            with warnings.catch_warnings():  # this client offers TLS 1.1 only; the server must refuse
                warnings.simplefilter("ignore", DeprecationWarning)
                old.set_ciphers("ALL:@SECLEVEL=0")
                old.minimum_version = old.maximum_version = ssl.TLSVersion.TLSv1_1
            with pytest.raises((ssl.SSLError, OSError)):
                with socket.create_connection(("127.0.0.1", https_port), timeout=5) as raw:
                    old.wrap_socket(raw)

            plain = HTTPConnection("127.0.0.1", tls.args.http_port, timeout=5)
            plain.request("GET", "/api/python/secure?x=1")
            response = plain.getresponse()
            assert response.status == 301
            assert response.getheader("Location") == f"https://127.0.0.1:{https_port}/api/python/secure?x=1"
            response.read()
            plain.request("GET", "/health")  # the health check stays on plain HTTP
            response = plain.getresponse()
            assert response.status == 200 and json.loads(response.read()) == {"status": "ok"}
            plain.close()
    finally:
        shutil.rmtree(folder, ignore_errors=True)


# --- balancing -----------------------------------------------------------------------------------


def test_upstream_connections_are_kept_alive(gw, backends):
    python = backends["python"]
    before = len(python.client_ports)
    for _ in range(8):
        assert gw.get("/api/literal/keepalive")[0] == 200
    ports = python.client_ports[before:]
    assert len(ports) == 8
    assert len(set(ports)) <= gw.args.worker_processes, ports  # one connection per worker, reused


def test_replicas_share_load_and_least_connections_favours_the_idle_one(gw, backends):
    a, b = backends["replica-a"], backends["replica-b"]
    for _ in range(10):
        assert gw.get("/api/multi/spread")[0] == 200
    assert a.hits["/spread"] >= 3 and b.hits["/spread"] >= 3  # both replicas get traffic

    a.delay = 0.8  # replica A turns slow: requests pile up there, B is free
    try:
        started = time.monotonic()
        with ThreadPoolExecutor(4) as pool:
            statuses = list(pool.map(lambda _: gw.get("/api/multi/busy")[0], range(24)))
        elapsed = time.monotonic() - started
    finally:
        a.delay = 0.0
    assert statuses == [200] * 24
    assert a.hits["/busy"] <= 4 and b.hits["/busy"] >= 20, (a.hits["/busy"], b.hits["/busy"])
    assert elapsed < 4  # round robin would send 12 requests to A: about 2.4 s per thread


def test_a_dead_replica_is_skipped_by_a_retry(gw, backends):
    before = backends["replica-a"].hits["/failover"]
    for _ in range(6):
        status, headers, _ = gw.get("/api/failover/failover")
        assert status == 200, gw.errors()
    assert backends["replica-a"].hits["/failover"] - before == 6


# --- logs and metrics ----------------------------------------------------------------------------


def test_metrics_endpoint_counts_requests(gw):
    require_module("prometheus_client")
    from prometheus_client import parser

    def samples() -> dict[tuple, float]:
        found = {}
        families = {f.name: f for f in parser.text_string_to_metric_families(gw.metrics())}
        assert families["nginx_http_requests"].type == "counter"
        assert families["nginx_http_request_duration_seconds"].type == "histogram"
        assert families["nginx_cache_requests"].type == "counter"
        for family in families.values():
            for sample in family.samples:
                found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
        return found

    def value(found, name, **labels) -> float:
        return found.get((name, tuple(sorted(labels.items()))), 0.0)

    before = samples()
    path = unique("/metrics-")
    for _ in range(3):
        assert gw.get(f"/api/dotnet{path}")[0] == 200
    gw.get("/nowhere")

    def delta(name, **labels) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    # every worker moves its counts to the shared dict twice a second
    deadline = time.monotonic() + 3
    while True:
        after = samples()
        counted = (delta("nginx_http_requests_total", route="dotnet-api", status="200"),
                   delta("nginx_http_requests_total", route="none", status="404"))
        if counted == (3, 1) or time.monotonic() > deadline:
            break
        time.sleep(0.1)

    assert delta("nginx_http_requests_total", route="dotnet-api", status="200") == 3
    assert delta("nginx_http_requests_total", route="none", status="404") == 1
    assert delta("nginx_cache_requests_total", route="dotnet-api", result="miss") == 1
    assert delta("nginx_cache_requests_total", route="dotnet-api", result="hit") == 2
    assert delta("nginx_http_request_duration_seconds_count", route="dotnet-api") == 3
    buckets = sorted(((float(dict(labels)["le"]), v) for (name, labels), v in after.items()
                      if name == "nginx_http_request_duration_seconds_bucket" and ("route", "dotnet-api") in labels))
    counts = [v for _, v in buckets]
    assert counts == sorted(counts) and buckets[-1] == (float("inf"),
                                                        value(after, "nginx_http_request_duration_seconds_count",
                                                              route="dotnet-api"))


def test_access_log_is_one_json_object_a_line(gw):
    path = unique("/logged-")
    gw.get(f"/api/python{path}?q=1")
    gw.get(f"/api/python{path}?q=1")
    deadline = time.monotonic() + 3
    entries: list[dict] = []
    while time.monotonic() < deadline:
        lines = (gw.prefix / "access.log").read_text().splitlines()
        entries = [json.loads(line) for line in lines]  # every line parses
        entries = [e for e in entries if e["uri"] == f"/api/python{path}"]
        if len(entries) == 2:
            break
        time.sleep(0.05)
    # each worker writes its own buffer: the file is in order per worker, not across them
    miss, hit = sorted(entries, key=lambda e: e["cache"] != "MISS")
    for field in ("time", "remote_addr", "method", "uri", "status", "request_time", "upstream_response_time",
                  "upstream_addr", "cache", "route", "request_id"):
        assert field in miss, field
    assert (miss["cache"], hit["cache"]) == ("MISS", "HIT")
    assert miss["route"] == "python-api" and miss["status"] == 200 and miss["method"] == "GET"
    assert miss["args"] == "q=1" and miss["upstream_addr"].startswith("127.0.0.1:")
    assert hit["upstream_addr"] == ""  # a HIT never reaches a backend
    assert isinstance(miss["request_time"], float)


# --- the real reference API ----------------------------------------------------------------------


def test_routes_to_the_real_python_api(redis_port, dns):
    if not PYAPI.exists():
        message = f"{PYAPI.relative_to(REPO)} is not there"
        if IN_CI:
            pytest.fail(message + " -- required under CI=true")
        pytest.skip(message)
    port = free_port()
    env = {"PORT": str(port), "DATABASE_URL": f"postgresql://api:pw@127.0.0.1:{free_port()}/api",
           "REDIS_URL": f"redis://:{REDIS_PASSWORD}@127.0.0.1:{redis_port}/1", "SERVICE_NAME": "python-api"}
    folder = scratch_dir("pyapi-")
    try:
        with process([sys.executable, str(PYAPI)], port=port, env=env, log=folder / "pyapi.log"):
            dns.records["pyapi-real"] = ["127.0.0.1"]
            routes = (route("python-api", "pyapi-real", port, ttl=30),)
            with gateway(routes, redis_port=redis_port, resolver=dns.address) as gw_real:
                status, headers, body = gw_real.get("/api/python/")
                assert (status, headers["x-cache"]) == (200, "MISS"), body
                first = json.loads(body)
                assert first["service"] == "python-api"
                status, headers, body = gw_real.get("/api/python/")
                assert (status, headers["x-cache"]) == (200, "HIT")
                assert json.loads(body) == first  # same hit count: the API was not asked again

                status, headers, body = gw_real.get("/api/python/health")
                assert status == 200 and headers["x-cache"] == "BYPASS"  # the API says no-store
                assert json.loads(body)["postgres"] == "down"  # degraded, still serving
                status, _, body = gw_real.get("/api/python/metrics")
                assert status == 200 and b"# TYPE" in body
    finally:
        shutil.rmtree(folder, ignore_errors=True)
