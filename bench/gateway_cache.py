"""Throughput of the gateway's Redis cache: cache HITs against MISSes, on 127.0.0.1 only.

Real nginx (Debian nginx-extras + Lua, the rendered config) and a real Redis in front of a
backend that sleeps 20 ms per request. The same bounded client -- CONNECTIONS keep-alive
connections spread over a few processes, each phase stopped after DURATION_S seconds or
MAX_REQUESTS requests -- runs twice:

    HIT   a handful of warmed URLs, every request answered from Redis
    MISS  a new URL per request: Redis lookup, backend fetch, Redis store

Run from the repository root:  /tmp/venv/bin/python bench/gateway_cache.py
Target: HIT req/s at least 5x MISS req/s.
"""

from __future__ import annotations

import itertools
import multiprocessing
import statistics
import sys
import time
import uuid
from http.client import HTTPConnection
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.servers import redis_server  # noqa: E402
from tests.test_gateway_nginx import REDIS_PASSWORD, Backend, gateway, route  # noqa: E402

BACKEND_DELAY_S = 0.020
CONNECTIONS = 16
PROCESSES = 4
DURATION_S = 4.0
MAX_REQUESTS = 40_000
WARM_URLS = 16
TARGET_RATIO = 5.0


def _client(args: tuple[int, str, int, float, int, int]) -> tuple[int, int, list[float], dict[str, int]]:
    """One client process: `threads` keep-alive connections until the deadline or the quota."""
    import threading

    port, mode, threads, deadline, quota, seed = args
    lock = threading.Lock()
    done = {"ok": 0, "bad": 0}
    latencies: list[float] = []
    caches: dict[str, int] = {}
    counter = itertools.count()

    def worker(index: int) -> None:
        conn = HTTPConnection("127.0.0.1", port, timeout=10)
        local_latencies, local_caches, ok, bad = [], {}, 0, 0
        while time.time() < deadline:
            n = next(counter)
            if n >= quota:
                break
            if mode == "hit":
                path = f"/api/cached/warm-{(n + index) % WARM_URLS}"
            else:
                path = f"/api/cached/miss-{seed}-{index}-{n}-{uuid.uuid4().hex[:6]}"
            started = time.perf_counter()
            try:
                conn.request("GET", path)
                response = conn.getresponse()
                response.read()
            except OSError:
                bad += 1
                conn.close()
                conn = HTTPConnection("127.0.0.1", port, timeout=10)
                continue
            local_latencies.append(time.perf_counter() - started)
            cache = response.getheader("X-Cache", "-")
            local_caches[cache] = local_caches.get(cache, 0) + 1
            if response.status == 200:
                ok += 1
            else:
                bad += 1
        conn.close()
        with lock:
            done["ok"] += ok
            done["bad"] += bad
            latencies.extend(local_latencies)
            for key, value in local_caches.items():
                caches[key] = caches.get(key, 0) + value

    pool = [threading.Thread(target=worker, args=(i,)) for i in range(threads)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
    return done["ok"], done["bad"], latencies, caches


def run_phase(port: int, mode: str) -> dict[str, object]:
    per_process = CONNECTIONS // PROCESSES
    started = time.time()
    deadline = started + DURATION_S
    quota = MAX_REQUESTS // PROCESSES
    jobs = [(port, mode, per_process, deadline, quota, seed) for seed in range(PROCESSES)]
    with multiprocessing.get_context("fork").Pool(PROCESSES) as pool:
        results = pool.map(_client, jobs)
    elapsed = time.time() - started
    ok = sum(r[0] for r in results)
    bad = sum(r[1] for r in results)
    latencies = sorted(itertools.chain.from_iterable(r[2] for r in results))
    caches: dict[str, int] = {}
    for result in results:
        for key, value in result[3].items():
            caches[key] = caches.get(key, 0) + value
    return {
        "rps": ok / elapsed,
        "ok": ok,
        "bad": bad,
        "seconds": elapsed,
        "p50_ms": statistics.median(latencies) * 1000 if latencies else float("nan"),
        "p99_ms": latencies[int(len(latencies) * 0.99) - 1] * 1000 if latencies else float("nan"),
        "caches": caches,
    }


def main() -> int:
    backend = Backend("bench")
    backend.delay = BACKEND_DELAY_S
    backend.start()
    try:
        with redis_server(REDIS_PASSWORD) as redis_port:
            routes = (route("cached-api", "127.0.0.1", backend.port, ttl=300),)
            with gateway(routes, redis_port=redis_port, resolver="127.0.0.1", error_log_level="warn") as gw:
                for i in range(WARM_URLS):  # fill the cache for the HIT phase
                    conn = HTTPConnection("127.0.0.1", gw.args.http_port, timeout=10)
                    conn.request("GET", f"/api/cached/warm-{i}")
                    conn.getresponse().read()
                    conn.close()
                print(f"gateway on 127.0.0.1:{gw.args.http_port}, backend sleeps {BACKEND_DELAY_S * 1000:.0f} ms, "
                      f"{CONNECTIONS} keep-alive connections, {DURATION_S:.0f} s or {MAX_REQUESTS} requests a phase")
                figures = {}
                for mode in ("miss", "hit"):
                    figures[mode] = result = run_phase(gw.args.http_port, mode)
                    print(f"{mode.upper():4} {result['ok']:6d} ok {result['bad']:3d} failed"
                          f" in {result['seconds']:.1f} s  p50 {result['p50_ms']:.1f} ms"
                          f"  p99 {result['p99_ms']:.1f} ms  X-Cache {result['caches']}")
                hit, miss = figures["hit"]["rps"], figures["miss"]["rps"]
                ratio = hit / miss if miss else float("inf")
                print(f"HIT req/s  {hit:8.0f}")
                print(f"MISS req/s {miss:8.0f}")
                verdict = "met" if ratio >= TARGET_RATIO else "NOT met"
                print(f"ratio      {ratio:8.1f}x  (target >= {TARGET_RATIO:.0f}x: {verdict})")
                return 0 if ratio >= TARGET_RATIO else 1
    finally:
        backend.stop()


if __name__ == "__main__":
    sys.exit(main())
