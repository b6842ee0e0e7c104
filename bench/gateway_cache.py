"""Cache HIT throughput: the gateway (rendered config, Lua, first level + Redis) against a plain
nginx `proxy_cache` HIT on the same backend, both measured by `wrk` in the same run.

Both nginx run one worker on 127.0.0.1 in front of one stdlib backend and write an access log
(ours its JSON line, the plain one nginx's `combined`, both buffered as ours is); each cache is warmed with the URL
first, so every measured request is a HIT. Runs alternate (ours, theirs, ours...)
so a noisy neighbour hurts both alike. Printed: req/s min / median / max of each, and the ratio
of the medians.

Run from the repository root:  venv/bin/python bench/gateway_cache.py
Needs: nginx with the Lua module (libnginx-mod-http-lua), redis-server, wrk (apt install wrk).
Target: our HIT at least 0.8x the proxy_cache HIT.
"""

from __future__ import annotations

import re
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.gateway_backends import Answer, Scripted  # noqa: E402
from tests.servers import free_port, http, process, redis_server, scratch_dir  # noqa: E402
from tests.test_gateway_nginx import REDIS_PASSWORD, gateway, nginx_binary, route  # noqa: E402

RUNS = 7
SECONDS = 3
CONNECTIONS = 16
THREADS = 1
TARGET = 0.8
PATH = "/api/bench/item?id=42"
BODY = b'{"id": 42, "name": "item", "tags": ["a", "b", "c"], "pad": "' + b"x" * 400 + b'"}'

PLAIN_CONF = """
worker_processes 1;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log {prefix}/access.log combined buffer=4k flush=1s;
    proxy_temp_path {prefix}/proxy-temp;
    client_body_temp_path {prefix}/body-temp;
    proxy_cache_path {prefix}/cache keys_zone=bench:10m max_size=100m;
    upstream backend {{ server 127.0.0.1:{backend}; keepalive 16; }}
    server {{
        listen 127.0.0.1:{port};
        location /api/bench/ {{
            proxy_cache bench;
            proxy_cache_valid 200 10m;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_pass http://backend/;
            add_header X-Cache $upstream_cache_status;
        }}
    }}
}}
"""


def wrk(port: int) -> float:
    out = subprocess.run(["wrk", f"-t{THREADS}", f"-c{CONNECTIONS}", f"-d{SECONDS}s", f"http://127.0.0.1:{port}{PATH}"],
                         capture_output=True, text=True, check=True).stdout
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if errors:
        raise SystemExit(f"wrk saw {errors.group(1)} failed answers:\n{out}")
    return float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))


def warm(port: int) -> None:
    for expected in ("MISS", "HIT"):
        status, headers, _ = http("GET", f"http://127.0.0.1:{port}{PATH}")
        assert status == 200 and headers.get("x-cache") == expected, (port, status, headers)


def summary(name: str, figures: list[float]) -> str:
    return (f"{name:28} min {min(figures):9.0f}  median {statistics.median(figures):9.0f}"
            f"  max {max(figures):9.0f} req/s")


def main() -> int:
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed: apt-get install wrk")
    binary, _ = nginx_binary()
    backend = Scripted()
    backend.answers["/item"] = Answer(body=BODY, headers={"Content-Type": "application/json",
                                                          "Cache-Control": "public, max-age=600"})
    plain_prefix = scratch_dir("bench-plain-")
    try:
        plain_port = free_port()
        conf = plain_prefix / "nginx.conf"
        conf.write_text(PLAIN_CONF.format(prefix=plain_prefix, backend=backend.port, port=plain_port))
        with redis_server(REDIS_PASSWORD) as redis_port, \
                process([binary, "-p", str(plain_prefix), "-c", str(conf), "-g", "daemon off;"], port=plain_port,
                        log=plain_prefix / "stdout.log"), \
                gateway((route("bench-api", "127.0.0.1", backend.port, ttl=600),), redis_port=redis_port,
                        resolver="127.0.0.1", worker_processes=1, error_log_level="warn") as gw:
            ours_port = gw.args.http_port
            warm(ours_port)
            warm(plain_port)
            ours, theirs = [], []
            for _ in range(RUNS):
                ours.append(wrk(ours_port))
                theirs.append(wrk(plain_port))
            print(f"wrk -t{THREADS} -c{CONNECTIONS} -d{SECONDS}s, {RUNS} runs each, one nginx worker each, "
                  f"{len(BODY)} byte JSON answer")
            print(summary("gateway HIT (Lua, L1+Redis)", ours))
            print(summary("nginx proxy_cache HIT", theirs))
            ratio = statistics.median(ours) / statistics.median(theirs)
            verdict = "met" if ratio >= TARGET else "NOT met"
            print(f"ratio of medians {ratio:.2f}x  (target >= {TARGET}x: {verdict})")
            print(f"backend requests: {backend.hits['/item']} (one fill per cache)")
            return 0 if ratio >= TARGET else 1
    finally:
        backend.stop()
        shutil.rmtree(plain_prefix, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
