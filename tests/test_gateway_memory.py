"""A cache fill never holds more than the cache's size cap: a 100 MiB answer on a cached route,
served by real nginx inside a real memory cgroup limited to prod's gateway limit, reaches the
client whole, uncached, and nobody is OOM-killed.

The tests run as root (CI does); cgroup v2 (`memory.max`, `memory.events`) is used where it is
mounted with the memory controller, else cgroup v1's memory hierarchy (`memory.limit_in_bytes`,
`memory.oom_control`). The child group is made under the test process's own group.
"""

from __future__ import annotations

import contextlib
import os
import re
import time
from http.client import HTTPConnection
from pathlib import Path
from typing import Iterator

import pytest

from tests.gateway_backends import Answer, Scripted
from tests.servers import IN_CI, redis_server
from tests.test_gateway_nginx import REDIS_PASSWORD, gateway, route

ANSWER_BYTES = 100 * 1_048_576
ROOT = Path("/sys/fs/cgroup")


def prod_gateway_memory_bytes() -> int:
    from infra.catalog import declare_services
    from infra.config import stack_file_config

    return declare_services(stack_file_config("prod")).get("gateway").limits.memory_bytes


class MemoryGroup:
    """A child memory cgroup with a hard limit; `oom_kills()` reads its OOM-kill counter."""

    def __init__(self, name: str, limit: int) -> None:
        v2 = ROOT / "cgroup.controllers"
        if v2.exists() and "memory" in v2.read_text().split():
            own = next(line.split(":", 2)[2] for line in Path("/proc/self/cgroup").read_text().splitlines()
                       if line.startswith("0::"))
            self.v2, parent = True, ROOT / own.lstrip("/")
        else:
            own = next(line.split(":", 2)[2] for line in Path("/proc/self/cgroup").read_text().splitlines()
                       if ":memory:" in line)
            self.v2, parent = False, ROOT / "memory" / own.lstrip("/")
        self.path = parent / name
        self.path.mkdir()
        (self.path / ("memory.max" if self.v2 else "memory.limit_in_bytes")).write_text(str(limit))
        if not self.v2:
            with contextlib.suppress(OSError):  # no swap to hide behind, where swap accounting exists
                (self.path / "memory.memsw.limit_in_bytes").write_text(str(limit))

    @property
    def procs(self) -> Path:
        return self.path / "cgroup.procs"

    def limit(self) -> int:
        text = (self.path / ("memory.max" if self.v2 else "memory.limit_in_bytes")).read_text().strip()
        return int(text)

    def oom_kills(self) -> int:
        text = (self.path / ("memory.events" if self.v2 else "memory.oom_control")).read_text()
        found = re.search(r"^oom_kill (\d+)$", text, re.M)
        return int(found.group(1)) if found else 0

    def remove(self) -> None:
        deadline = time.monotonic() + 5
        while self.procs.read_text().strip() and time.monotonic() < deadline:
            time.sleep(0.05)
        with contextlib.suppress(OSError):
            self.path.rmdir()


@contextlib.contextmanager
def memory_group(limit: int) -> Iterator[MemoryGroup]:
    try:
        group = MemoryGroup(f"coderz-gateway-test-{os.getpid()}", limit)
    except (OSError, StopIteration) as err:
        message = f"no writable memory cgroup here ({err}); the tests run as root on cgroup v1 or v2"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    try:
        yield group
    finally:
        group.remove()


def peak_rss_kib(master: int) -> dict[int, int]:
    """VmHWM (peak resident set) of the nginx master and its workers."""
    children = Path(f"/proc/{master}/task/{master}/children").read_text().split()
    peaks = {}
    for pid in [master, *map(int, children)]:
        status = Path(f"/proc/{pid}/status").read_text()
        peaks[pid] = int(re.search(r"^VmHWM:\s+(\d+) kB", status, re.M).group(1))
    return peaks


def fetch_counting(port: int, path: str) -> tuple[int, str, int]:
    """GET, reading the body in pieces: (status, X-Cache, bytes received)."""
    conn = HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        received = 0
        while piece := response.read(1_048_576):
            received += len(piece)
        return response.status, response.getheader("X-Cache", ""), received
    finally:
        conn.close()


def test_a_100_mib_answer_streams_through_uncached_under_the_prod_memory_limit():
    limit = prod_gateway_memory_bytes()
    assert limit == 256 * 1_048_576  # prod's gateway limit, as the stack file declares it
    backend = Scripted()
    backend.answers["/huge"] = Answer(size=ANSWER_BYTES, headers={"Content-Type": "application/octet-stream"})
    try:
        with redis_server(REDIS_PASSWORD) as redis_port, memory_group(limit) as group:
            wrap = ("sh", "-c", f'echo $$ > {group.procs} && exec "$0" "$@"')
            routes = (route("files-api", "127.0.0.1", backend.port, ttl=30, prefix="/files/"),)
            with gateway(routes, wrap=wrap, redis_port=redis_port, resolver="127.0.0.1",
                         worker_processes=1, error_log_level="warn") as gw:
                master = int((gw.prefix / "nginx.pid").read_text())
                assert str(master) in group.procs.read_text().split()
                assert group.limit() == limit
                for expected in ("MISS", "MISS"):  # too big to store: the second one is no HIT
                    status, cache, received = fetch_counting(gw.args.http_port, "/files/huge")
                    assert (status, cache, received) == (200, expected, ANSWER_BYTES), gw.errors()
                assert backend.hits["/huge"] == 2
                assert group.oom_kills() == 0
                peaks = peak_rss_kib(master)
                # never near the answer's size: nothing held it whole
                assert max(peaks.values()) < 64 * 1024, peaks
                assert "exited on signal" not in gw.errors()  # no worker died on the way
    finally:
        backend.stop()
