"""Real servers for the tests, started on 127.0.0.1 from the machine's own binaries.

`require_tool` is the one place that decides what a missing binary means: a skip with the
reason when a person runs the tests by hand, a failure under CI (`CI=true`).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Iterator, NoReturn

import pytest

IN_CI = os.environ.get("CI", "").lower() == "true"
POSTGRES_BIN_DIRS = sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)


def require_tool(name: str) -> str:
    """The path of a binary the test needs; skip (by hand) or fail (in CI) without it."""
    found = shutil.which(name)
    if found is None:
        for folder in POSTGRES_BIN_DIRS:
            if (folder / name).exists():
                found = str(folder / name)
                break
    if found is None:
        missing(f"{name} is not installed (bash .ci/run installs it)")
    return found


def missing(message: str) -> NoReturn:
    """A tool the test needs is not there: a failure under CI, a skip with the reason by hand."""
    if IN_CI:
        pytest.fail(message + " -- a missing tool is a failure under CI=true")
    pytest.skip(message)


def require_module(name: str):
    """Import a Python module the test needs, on the same skip/fail rule as binaries."""
    try:
        return __import__(name)
    except ImportError:
        message = f"Python module {name} is not installed (pip install -e .[test])"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_port(port: int, timeout: float = 20.0, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before port {port} opened")
        with contextlib.suppress(OSError):
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout}s")


def http(method: str, url: str, *, headers: dict[str, str] | None = None, body: bytes | None = None,
         timeout: float = 10.0) -> tuple[int, dict[str, str], bytes]:
    """One HTTP request; returns (status, headers with lowercase names, body) for any status."""
    request = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, {k.lower(): v for k, v in response.headers.items()}, response.read()
    except urllib.error.HTTPError as err:
        return err.code, {k.lower(): v for k, v in err.headers.items()}, err.read()


def raw_request(port: int, head: bytes) -> tuple[int, dict[str, str], bytes]:
    """One HTTP/1.1 request line sent byte for byte to 127.0.0.1:`port` (no client library
    normalises the path), the connection closed after it; returns (status, headers with
    lowercase names, body)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as connection:
        connection.sendall(head + b"\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        answer = b""
        while chunk := connection.recv(65536):
            answer += chunk
    top, _, body = answer.partition(b"\r\n\r\n")
    status_line, *lines = top.decode("latin-1").split("\r\n")
    return int(status_line.split()[1]), {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines)}, body


def scratch_dir(prefix: str) -> Path:
    """A temp folder other users can enter (pytest's tmp_path is 0700, PostgreSQL runs as postgres)."""
    path = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    path.chmod(0o755)
    return path


@contextlib.contextmanager
def process(argv: list[str], *, port: int, cwd: Path | None = None, env: dict[str, str] | None = None,
            log: Path | None = None, timeout: float = 20.0) -> Iterator[subprocess.Popen]:
    """Start a server, wait until it listens on `port`, stop it afterwards."""
    out = open(log, "wb") if log else subprocess.DEVNULL
    proc = subprocess.Popen(argv, cwd=cwd, env={**os.environ, **(env or {})}, stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_for_port(port, timeout, proc)
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if log:
            out.close()


@contextlib.contextmanager
def redis_server(password: str | None = None) -> Iterator[int]:
    """A real redis-server on a free loopback port; yields the port."""
    binary = require_tool("redis-server")
    port = free_port()
    workdir = scratch_dir("redis-")
    argv = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
            "--dir", str(workdir)]
    if password:
        argv += ["--requirepass", password]
    try:
        with process(argv, port=port, log=workdir / "redis.log"):
            yield port
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _as_postgres_user(argv: list[str]) -> list[str]:
    # PostgreSQL refuses to run as root; CI runs as root, a developer usually does not.
    return ["runuser", "-u", "postgres", "--", *argv] if os.geteuid() == 0 else argv


@contextlib.contextmanager
def postgres_server() -> Iterator[dict[str, object]]:
    """A real PostgreSQL cluster on a free loopback port, superuser `postgres` with password
    auth over TCP; yields dict(host, port, user, password)."""
    initdb = require_tool("initdb")
    pg_ctl = require_tool("pg_ctl")
    port = free_port()
    workdir = scratch_dir("pg-")
    data = workdir / "data"
    pwfile = workdir / "pw"
    password = "test-superuser-pw"
    pwfile.write_text(password)
    if os.geteuid() == 0:
        shutil.chown(workdir, "postgres")
        shutil.chown(pwfile, "postgres")
    subprocess.run(
        _as_postgres_user([initdb, "-D", str(data), "-U", "postgres", "--pwfile", str(pwfile), "-A", "scram-sha-256",
                           "--no-sync"]),
        check=True, capture_output=True,
    )
    subprocess.run(
        _as_postgres_user([pg_ctl, "-D", str(data), "-l", str(workdir / "pg.log"), "-w", "start", "-o",
                           f"-p {port} -k {workdir} -c listen_addresses=127.0.0.1 -c fsync=off"]),
        check=True, capture_output=True,
    )
    try:
        wait_for_port(port)
        yield {"host": "127.0.0.1", "port": port, "user": "postgres", "password": password}
    finally:
        subprocess.run(_as_postgres_user([pg_ctl, "-D", str(data), "-m", "immediate", "stop"]), capture_output=True)
        shutil.rmtree(workdir, ignore_errors=True)


@contextlib.contextmanager
def python_api(redis_url: str, service: str = "python-api") -> Iterator[int]:
    """The reference API (apps/pyapi) on a free loopback port, PostgreSQL unreachable (it serves
    degraded), Redis at `redis_url`; yields the port."""
    import sys

    app = Path(__file__).resolve().parent.parent / "apps" / "pyapi" / "app.py"
    port = free_port()
    env = {"PORT": str(port), "DATABASE_URL": f"postgresql://api:pw@127.0.0.1:{free_port()}/api",
           "REDIS_URL": redis_url, "SERVICE_NAME": service}
    folder = scratch_dir("pyapi-")
    try:
        with process([sys.executable, str(app)], port=port, env=env, log=folder / "pyapi.log"):
            yield port
    finally:
        shutil.rmtree(folder, ignore_errors=True)
