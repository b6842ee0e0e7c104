"""Abuse of the gateway by one client, on real nginx + Lua: half-sent requests, trickled bodies,
a pile of open requests, and fields that would make a log line too long to stay one line.

The gateway here runs with short timeouts (2 s) and a small connection budget, so every bound
is reached within seconds; the production values are the render defaults.
"""

from __future__ import annotations

import json
import select
import socket
import time
from typing import Iterator

import pytest

from components.gateway.render import GatewayRender, render_nginx_conf, workers_from_limits
from components.spec import Limits
from tests.gateway_backends import backend  # noqa: F401 (the fixture)
from tests.servers import redis_server
from tests.test_gateway_nginx import REDIS_PASSWORD, Gateway, gateway, route

TIMEOUT_S = 2
PER_CLIENT = 4


@pytest.fixture(scope="module")
def gw(backend) -> Iterator[Gateway]:
    routes = (route("plain-api", "127.0.0.1", backend.port, prefix="/p/"),
              route("cached-api", "127.0.0.1", backend.port, ttl=30, prefix="/c/"))
    with redis_server(REDIS_PASSWORD) as redis_port:
        with gateway(routes, redis_port=redis_port, resolver="127.0.0.1", worker_processes=1,
                     worker_connections=48, conn_per_client=PER_CLIENT, client_header_timeout_s=TIMEOUT_S,
                     client_body_timeout_s=TIMEOUT_S, send_timeout_s=TIMEOUT_S, keepalive_timeout_s=TIMEOUT_S,
                     client_max_body_mb=1, min_body_rate=1_048_576, large_header_buffer_kb=64) as running:
            yield running


def connect(gw: Gateway, source: str = "127.0.0.1") -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", gw.args.http_port), timeout=5, source_address=(source, 0))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def cut_off_after(sock: socket.socket, trickle: bytes | None, limit_s: float) -> float:
    """Send `trickle` every 0.5 s (or nothing) until the gateway answers or closes; the seconds
    that took. Fails after `limit_s`."""
    started = time.monotonic()
    sock.settimeout(0.5)
    while time.monotonic() - started < limit_s:
        try:
            if trickle:
                sock.sendall(trickle)
            data = sock.recv(4096)
            return time.monotonic() - started  # an answer (408) or the close (b"")
        except socket.timeout:
            continue
        except OSError:
            return time.monotonic() - started  # reset
    pytest.fail(f"the connection was still open after {limit_s} s")


def test_half_sent_request_headers_are_dropped_after_the_header_timeout(gw):
    with connect(gw) as sock:
        sock.sendall(b"GET /p/slowloris HTTP/1.1\r\nHost: x\r\nX-A: ")
        assert cut_off_after(sock, None, TIMEOUT_S + 4) < TIMEOUT_S + 2


@pytest.mark.parametrize("framing", ["content-length", "chunked"])
def test_a_body_trickled_faster_than_the_read_timeout_is_still_cut_off(gw, backend, framing):
    """One piece every 0.5 s never trips client_body_timeout (2 s between reads); the whole body
    has 2 s + its length at 1 MiB/s (the 1 MiB size limit for a chunked one: 3 s)."""
    if framing == "content-length":
        head, piece = b"Content-Length: 100000\r\n", b"x"
    else:
        head, piece = b"Transfer-Encoding: chunked\r\n", b"1\r\nx\r\n"
    with connect(gw) as sock:
        sock.sendall(b"POST /p/trickle HTTP/1.1\r\nHost: x\r\n" + head + b"\r\n")
        took = cut_off_after(sock, piece, 12)
    assert took < 5, took
    assert backend.hits["/trickle"] == 0


def test_one_client_holding_requests_open_cannot_exhaust_the_worker_for_others(gw, backend):
    """60 requests from one address, each waiting for its body (more than the worker's 48
    connections): past PER_CLIENT their connections are closed at once, so the slots are free
    again and another client is served."""
    held: list[socket.socket] = []
    refused = 0
    try:
        for _ in range(60):
            sock = connect(gw)
            sock.sendall(b"POST /p/held HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n")
            held.append(sock)
        waiting, deadline = list(held), time.monotonic() + 5
        while waiting and refused < 60 - PER_CLIENT and time.monotonic() < deadline:
            readable, _, _ = select.select(waiting, [], [], 0.2)
            for sock in readable:
                waiting.remove(sock)
                try:
                    refused += sock.recv(4096) == b""  # closed without an answer
                except ConnectionResetError:  # closed with the request unread
                    refused += 1
        assert refused >= 60 - PER_CLIENT, refused
        started = time.monotonic()
        with connect(gw, "127.0.0.2") as other:
            other.sendall(b"GET /p/other HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            other.settimeout(3)
            assert other.recv(4096).startswith(b"HTTP/1.1 200"), gw.errors()
        assert time.monotonic() - started < 1
    finally:
        for sock in held:
            sock.close()


def test_workers_and_connections_follow_the_container_limits():
    assert workers_from_limits(Limits(memory_mb=256, cpus=1)) == {"worker_processes": 1, "worker_connections": 2048}
    assert workers_from_limits(Limits(memory_mb=128, cpus=0.5)) == {"worker_processes": 1, "worker_connections": 1024}
    assert workers_from_limits(Limits(memory_mb=1024, cpus=2)) == {"worker_processes": 2, "worker_connections": 4096}
    assert workers_from_limits(Limits(memory_mb=16, cpus=0.1))["worker_connections"] == 256  # a floor
    conf = render_nginx_conf(GatewayRender(routes=(), **workers_from_limits(Limits(memory_mb=256, cpus=1))))
    assert "worker_processes 1;" in conf and "worker_connections 2048;" in conf
    assert "worker_rlimit_nofile 4096;" in conf
    for directive in ("client_header_timeout 10s;", "client_body_timeout 10s;", "send_timeout 10s;",
                      "keepalive_timeout 15s;", "limit_conn gw_conn_per_ip 64;"):
        assert directive in conf, directive


def test_the_gateway_component_sizes_nginx_from_the_stack_limits(provider):
    from components.container import Placement
    from components.gateway.component import GatewayArgs, gateway_render
    from components.host import HostShell
    from infra.catalog import declare_services
    from infra.config import stack_file_config

    placement = Placement(prefix="coderz-prod", network_name="coderz-prod-net", provider=provider)
    render = gateway_render(GatewayArgs(catalog=declare_services(stack_file_config("prod")), placement=placement,
                                        redis_password="pw", shell=HostShell(docker_host="unix:///var/run/docker.sock")))
    assert (render.worker_processes, render.worker_connections) == (1, 2048)  # prod: 1 CPU, 256 MiB


def test_an_oversized_user_agent_and_path_log_one_json_line_under_16_kib(gw):
    ua = ("\x01" * 1000 + "A" * 60_000).encode()  # control bytes take 6 characters escaped
    path = "/p/" + "%01" * 1000 + "b" * 57_000
    with connect(gw) as sock:
        sock.sendall(b"GET " + path.encode() + b"?" + b"q" * 2000 + b" HTTP/1.1\r\nHost: x\r\nUser-Agent: " + ua
                     + b"\r\nReferer: " + ua + b"\r\nConnection: close\r\n\r\n")
        sock.settimeout(5)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 200"), answer[:200]
    deadline = time.monotonic() + 3
    lines: list[bytes] = []
    while time.monotonic() < deadline and not lines:
        lines = [line for line in (gw.prefix / "access.log").read_bytes().splitlines() if b"\"args\":\"qqqq" in line]
        time.sleep(0.05)
    assert len(lines) == 1, (gw.prefix / "access.log").read_bytes()[-3000:]
    assert len(lines[0]) < 16 * 1024, len(lines[0])
    entry = json.loads(lines[0])
    assert entry["user_agent"].startswith("\x01") and entry["uri"].startswith("/p/\x01")
    assert entry["status"] == 200 and entry["route"] == "plain-api"
    assert (len(entry["user_agent"]), len(entry["uri"]), len(entry["args"])) == (256, 512, 512)
