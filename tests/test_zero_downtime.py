"""Deploys without dropped requests, on real nginx with the rendered config (as in
test_gateway_nginx.py: Debian's nginx with its Lua module, a DNS stub in the role of Docker's
127.0.0.11, backends on 127.0.0.x) while a client loop keeps asking:

- a rolling replacement played in the engine's order: the new replica registered under the
  service's name and healthy, then the old one stopped (gracefully) and gone from DNS;
- gateway config changes through the real reload.sh, with `docker exec` replaced by a
  stand-in that runs the command here under busybox (the container's shell and tools): from
  the bootstrap config to the real one, a changed route, then configs nginx refuses (a bad
  directive, a Lua error, a port it cannot bind), which change nothing.
"""

from __future__ import annotations

import base64
import contextlib
import gzip
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from http.client import HTTPConnection, RemoteDisconnected
from pathlib import Path
from typing import Callable, Iterator

import pytest

from components.gateway.reload import ReloadFile, bootstrap_conf, config_archive, reload_command
from components.gateway.render import REDIS_PASSWORD_ENV, GatewayRender, lua_files, render_nginx_conf
from tests.servers import free_port, http, process, redis_server, require_tool, scratch_dir
from tests.test_gateway_nginx import REDIS_PASSWORD, Backend, DnsStub, gateway, nginx_binary, render_into, route

REPLICA = Path(__file__).resolve().parent / "replica_server.py"
DNS_TTL_S = 1


class ClientLoop:
    """Clients asking the gateway `paths()` over keepalive connections, a few ms apart, until
    stopped (or `limit` rounds each); every answer and every failure is kept."""

    def __init__(self, base_url: str, paths: Callable[[], list[str]], clients: int = 3, limit: int = 20_000):
        self.host, self.port = base_url.removeprefix("http://").split(":")
        self.paths, self.clients, self.limit = paths, clients, limit
        self.answers: list[tuple[str, int, dict]] = []
        self.failures: list[str] = []
        self.retried: list[str] = []
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self._run, daemon=True) for _ in range(clients)]

    def _run(self) -> None:
        conn, used = self._connect(), False
        for _ in range(self.limit):
            if self.stop.is_set():
                break
            time.sleep(0.005)
            for path in self.paths():
                try:
                    status, body = self._get(conn, path)
                except (ConnectionResetError, BrokenPipeError, RemoteDisconnected) as err:
                    conn.close()
                    conn, used_before, used = self._connect(), used, False
                    if not used_before:
                        with self.lock:
                            self.failures.append(f"{path}: {err!r} on a new connection")
                        continue
                    # A kept-alive connection the server closed while the request was on its
                    # way (nginx closes idle ones when its old workers leave on reload): no
                    # answer came, so a client retries a GET on a new connection, as browsers
                    # do (RFC 9112, 9.3.1). Counted, and the retry must succeed.
                    with self.lock:
                        self.retried.append(path)
                    try:
                        status, body = self._get(conn, path)
                    except OSError as retry_err:
                        with self.lock:
                            self.failures.append(f"{path}: {retry_err!r} on retry")
                        conn.close()
                        conn = self._connect()
                        continue
                except (OSError, ValueError) as err:
                    with self.lock:
                        self.failures.append(f"{path}: {err!r}")
                    conn.close()
                    conn, used = self._connect(), False
                    continue
                used = True
                answer = json.loads(body) if status == 200 else {}
                with self.lock:
                    self.answers.append((path, status, answer))
                    if status != 200:
                        self.failures.append(f"{path}: {status} {body[:200]!r}")
        conn.close()

    def _connect(self) -> HTTPConnection:
        return HTTPConnection(self.host, int(self.port), timeout=10)

    @staticmethod
    def _get(conn: HTTPConnection, path: str) -> tuple[int, bytes]:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, response.read()

    def __enter__(self) -> "ClientLoop":
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(15)

    def wait_for(self, condition: Callable[[], bool], timeout: float = 10) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            assert time.monotonic() < deadline, "the client loop did not get there"
            time.sleep(0.02)

    def count(self) -> int:
        with self.lock:
            return len(self.answers)


@contextlib.contextmanager
def replica(name: str, host: str, port: int, start_delay_s: float = 0) -> Iterator[subprocess.Popen]:
    """A replica process on host:port (killed at the end if the test did not stop it)."""
    proc = subprocess.Popen([sys.executable, str(REPLICA), host, str(port), name, str(start_delay_s)])
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)


def wait_healthy(host: str, port: int, timeout: float = 10) -> None:
    """What the engine waits for before it moves on: the replica answers."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError):
            with socket.create_connection((host, port), timeout=0.5):
                if http("GET", f"http://{host}:{port}/health", timeout=2)[0] == 200:
                    return
        time.sleep(0.05)
    raise TimeoutError(f"{host}:{port} never turned healthy")


def test_a_rolling_replacement_drops_no_request():
    port = free_port()  # one port, two addresses: two containers of one service
    dns = DnsStub()
    try:
        with contextlib.ExitStack() as replicas:  # outlives the client loop: no kill while it asks
            redis_port = replicas.enter_context(redis_server(REDIS_PASSWORD))
            old = replicas.enter_context(replica("old", "127.0.0.2", port))
            wait_healthy("127.0.0.2", port)
            dns.records["python-api"] = ["127.0.0.2"]
            routes = (route("python-api", "python-api", port),)
            gw = replicas.enter_context(gateway(routes, redis_port=redis_port, resolver=dns.address,
                                                dns_ttl_s=DNS_TTL_S))
            with ClientLoop(gw.url, lambda: ["/api/python/work?sleep=0.02"]) as loop:
                loop.wait_for(lambda: loop.count() >= 30)
                # 1. the engine creates the replacement; Docker adds it to the service's name
                #    as it starts, before it listens (those connections are refused, retried)
                dns.records["python-api"] = ["127.0.0.2", "127.0.0.3"]
                new = replicas.enter_context(replica("new", "127.0.0.3", port, start_delay_s=0.5))
                # 2. it turns healthy; that takes a health interval, longer than the gateway's
                #    DNS TTL (tests/test_rollout.py checks the catalog): the gateway knows it
                wait_healthy("127.0.0.3", port)
                time.sleep(DNS_TTL_S + 0.5)
                both = loop.count()
                # 3. only then the old one goes: `docker stop` (SIGTERM, requests in flight
                #    answered), then the container and its DNS entry are removed
                old.terminate()
                assert old.wait(15) == 0
                dns.records["python-api"] = ["127.0.0.3"]
                gone = loop.count()
                time.sleep(DNS_TTL_S + 0.5)
                loop.wait_for(lambda: loop.count() >= gone + 100)
                assert new.poll() is None
            errors = [line for line in (gw.prefix / "error.log").read_text().splitlines() if "[error]" in line]
            assert loop.failures == [], (loop.failures[:3], errors[-5:])
            assert loop.retried == []  # no reload here: nothing closes a client's connection
            print(f"rolling replacement: {len(loop.answers)} answers, 0 failed")
            served = [answer["replica"] for _, _, answer in loop.answers]
            assert set(served[:30]) == {"old"}
            assert served.count("new") >= 100 and "new" in served[:both]  # both served meanwhile
            assert set(served[gone + 10:]) == {"new"}  # once removed, the old one is never asked
    finally:
        dns.close()


# What reload.sh runs, taken from busybox as in the Alpine-based OpenResty container.
BUSYBOX_APPLETS = ("sh", "awk", "base64", "cat", "cp", "dirname", "find", "grep", "mkdir", "mktemp", "mv", "rm",
                   "sed", "sleep", "sort", "tar", "wc")


def standin_docker(folder: Path) -> dict[str, str]:
    """An environment whose `docker exec -i CONTAINER CMD...` runs CMD here (and notes CONTAINER),
    with busybox's tools first on the PATH, as inside the gateway container."""
    bin_dir = folder / "bin"
    bin_dir.mkdir()
    busybox = require_tool("busybox")
    for applet in BUSYBOX_APPLETS:
        (bin_dir / applet).symlink_to(busybox)
    script = bin_dir / "docker"
    script.write_text('#!/bin/sh\n[ "$1" = exec ] && [ "$2" = -i ] || exit 97\n'
                      f'echo "$3" >> {folder}/containers\nshift 3\nexec "$@"\n')
    script.chmod(0o755)
    return {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", REDIS_PASSWORD_ENV: REDIS_PASSWORD,
            "GATEWAY_RELOAD_WAIT_S": "4"}  # nginx gives up binding a port after 2.5 s


def config_files(args: GatewayRender, prefix: Path, conf: str | None = None,
                 lua: dict[str, str] | None = None) -> list[ReloadFile]:
    """The files the Gateway component installs, at this test's paths."""
    files = [ReloadFile(str(prefix / "nginx.conf"), conf if conf is not None else render_nginx_conf(args))]
    files += [ReloadFile(f"{args.lua_dir}/{name}", text) for name, text in (lua or lua_files()).items()]
    return files


def test_config_changes_reach_the_running_gateway_checked_and_without_a_dropped_request():
    binary, _ = nginx_binary()
    prefix = scratch_dir("gateway-reload-")
    dns = DnsStub()
    python, dotnet = Backend("python").start(), Backend("dotnet").start()
    try:
        dns.records.update({"python-api": ["127.0.0.1"], "dotnet-api": ["127.0.0.1"]})
        with redis_server(REDIS_PASSWORD) as redis_port:
            v1_routes = (route("python-api", "python-api", python.port),)
            args, conf = render_into(prefix, v1_routes, redis_port=redis_port, resolver=dns.address)
            # A new gateway container starts from the bootstrap config ...
            conf.write_text(bootstrap_conf(args))
            for stale in (prefix / "lua").iterdir():
                stale.unlink()
            nginx = (binary, "-p", str(prefix), "-c", str(conf))
            env = standin_docker(prefix)

            def install(files: list[ReloadFile]) -> subprocess.CompletedProcess:
                command = reload_command("coderz-test-gateway", root=str(prefix), pid_file=args.pid_path, nginx=nginx)
                return subprocess.run(["sh", "-c", command], input=config_archive(files, root=str(prefix)),
                                      env=env, capture_output=True, text=True, timeout=60)

            def serves(path: str, backend: str) -> bool:
                status, _, body = http("GET", f"http://127.0.0.1:{args.http_port}{path}")
                return status == 200 and json.loads(body)["backend"] == backend

            with process([*nginx, "-g", "daemon off;"], port=args.http_port, env={REDIS_PASSWORD_ENV: REDIS_PASSWORD},
                         log=prefix / "stdout.log"):
                assert http("GET", f"http://127.0.0.1:{args.http_port}/health")[0] == 200
                assert http("GET", f"http://127.0.0.1:{args.http_port}/api/python/x")[0] == 503
                # ... and the deploy installs the real one into it
                bootstrap_workers = workers(args.pid_path)
                first = install(config_files(args, prefix))
                assert first.returncode == 0, first.stderr
                wait_until(lambda: serves("/api/python/x", "python"))
                # A bootstrap worker may still take a connection until it has handled the
                # master's QUIT (a wide window on a loaded machine) and answer it with 503:
                # the clients start once that generation is gone.
                wait_until(lambda: not workers(args.pid_path) & bootstrap_workers)

                paths = ["/api/python/a"]
                with ClientLoop(f"http://127.0.0.1:{args.http_port}", lambda: list(paths)) as loop:
                    loop.wait_for(lambda: loop.count() >= 30)
                    # a changed route: /api/dotnet/ appears, reloaded while the loop runs
                    v2 = args.model_copy(update={"routes": (*v1_routes, route("dotnet-api", "dotnet-api", dotnet.port))})
                    second = install(config_files(v2, prefix))
                    assert second.returncode == 0, second.stderr
                    assert "nginx reloaded" in second.stdout
                    wait_until(lambda: serves("/api/dotnet/b", "dotnet"))
                    paths.append("/api/dotnet/b")
                    loop.wait_for(lambda: loop.count() >= 150)

                    # configs that must not replace v2: a bad directive, a Lua syntax error ...
                    v2_files = {f.path: f.content for f in config_files(v2, prefix)}
                    bad_conf = config_files(v2, prefix, conf=render_nginx_conf(v2) + "\nnot_a_directive on;\n")
                    bad_lua = config_files(v2, prefix, lua={**lua_files(), "gateway.lua": "local M = {\n"})
                    # ... and one that passes -t but that the master cannot apply: its port is taken
                    taken = socket.create_server(("127.0.0.1", 0))
                    bad_port = config_files(v2.model_copy(update={"metrics_port": taken.getsockname()[1]}), prefix)
                    # (`nginx -t` does not run init_by_lua: a Lua error shows when the master reloads)
                    for bad, why in ((bad_conf, "fails nginx -t"), (bad_lua, "could not apply"),
                                     (bad_port, "could not apply")):
                        failed = install(bad)
                        assert failed.returncode == 1, failed.stdout
                        assert why in failed.stderr and "the running gateway keeps its config" in failed.stderr
                        # every file is as it was, and nothing of the attempt is left behind
                        assert {p: Path(p).read_text() for p in v2_files} == v2_files
                        assert not list(prefix.rglob("*gateway-reload*"))
                    # a later restart or reload reads the files on disk: still v2
                    subprocess.run([*nginx, "-s", "reload"], check=True, capture_output=True, env=env)
                    count = loop.count()
                    loop.wait_for(lambda: loop.count() >= count + 100)
                    taken.close()
                assert loop.failures == [], (loop.failures[:5], (prefix / "error.log").read_text()[-2000:])
                print(f"reloads: {len(loop.answers)} answers, 0 failed, {len(loop.retried)} GETs retried on a "
                      "new connection after nginx closed an idle kept-alive one")
                served = {(path, answer["backend"]) for path, _, answer in loop.answers}
                assert served == {("/api/python/a", "python"), ("/api/dotnet/b", "dotnet")}
            assert (prefix / "containers").read_text().split() == ["coderz-test-gateway"] * 5
    finally:
        python.stop()
        dotnet.stop()
        dns.close()
        shutil.rmtree(prefix, ignore_errors=True)


def workers(pid_file: str) -> set[int]:
    """The pids of the nginx master's children (its workers, of every generation alive)."""
    master = int(Path(pid_file).read_text())
    return {int(pid) for pid in Path(f"/proc/{master}/task/{master}/children").read_text().split()}


def wait_until(condition: Callable[[], bool], timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_nothing_to_install_is_refused(tmp_path):
    env = standin_docker(tmp_path)
    empty = subprocess.run(["sh", "-c", reload_command("g", root=str(tmp_path), pid_file="/nowhere", nginx=("true",))],
                           input=base64.b64encode(gzip.compress(b"\0" * 1024)).decode(),  # an empty tar
                           env=env, capture_output=True, text=True, timeout=30)
    assert empty.returncode == 2 and "no files on stdin" in empty.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bin", "containers"]  # no staging folder left
    for outside in ("/etc/passwd", f"{tmp_path}/../x", f"{tmp_path}"):
        with pytest.raises(ValueError):
            config_archive([ReloadFile(outside, "x")], root=str(tmp_path))
    with pytest.raises(ValueError):
        config_archive([], root=str(tmp_path))
