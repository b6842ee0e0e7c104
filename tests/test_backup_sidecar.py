"""The backup sidecar's script (components/backup/image/backup-loop.sh), for real beside a local
PostgreSQL: its schedule loop takes the first full backup, and serves the time of the newest
good backup over HTTP as the metric the monitoring tier's backup-age alert reads."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from datetime import datetime, timezone

from prometheus_client.parser import text_string_to_metric_families

from components.backup.render import LOOP_SCRIPT
from tests.backup_harness import as_postgres, cluster
from tests.servers import free_port, http, require_tool

METRIC = "coderz_backup_last_success_timestamp_seconds"


def newest_stop(node) -> float:
    return max(b["timestamp"]["stop"] for b in json.loads(node.pgbackrest("--output=json", "info"))[0]["backup"])


def metric_value(text: str) -> float:
    (family,) = [f for f in text_string_to_metric_families(text) if f.name == METRIC]
    (sample,) = family.samples
    assert sample.labels == {"stanza": "main"}
    return sample.value


def test_the_loop_takes_the_first_backup_and_serves_its_time_then_once_updates_it():
    for tool in ("jq", "busybox", "pg_isready"):
        require_tool(tool)
    with cluster() as node:
        metrics = node.workdir / "metrics"
        node.run(["mkdir", str(metrics)])
        # the postgres user may not traverse the checkout's folders (a clone under a 0700 mktemp -d)
        script = node.workdir / LOOP_SCRIPT.name
        shutil.copy(LOOP_SCRIPT, script)
        script.chmod(0o755)
        port = free_port()
        env = {**os.environ, **node.environment, "PGBACKREST_CONFIG": node.paths.config, "METRICS_DIR": str(metrics),
               "METRICS_PORT": str(port), "PGHOST": str(node.workdir), "PGPORT": str(node.port), "PGUSER": "postgres",
               # An hour that is not now: the loop only takes the first full backup.
               "FULL_DAY": "sun", "HOUR_UTC": str((datetime.now(timezone.utc).hour + 12) % 24)}
        loop = subprocess.Popen(as_postgres(["bash", str(script), "loop"]), env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        try:
            deadline, body = time.monotonic() + 60, b""
            while time.monotonic() < deadline and METRIC.encode() not in body:
                time.sleep(0.5)
                assert loop.poll() is None, loop.stdout.read().decode()
                try:
                    status, headers, body = http("GET", f"http://127.0.0.1:{port}/metrics.txt", timeout=2)
                except OSError:
                    continue
            assert metric_value(body.decode()) == newest_stop(node)
            assert headers["content-type"].startswith("text/plain")
        finally:
            loop.terminate()
            loop.wait(10)
        # SIGTERM (docker stop) ends the loop and its metrics server with it.
        assert loop.returncode in (0, -15)  # runuser (as root) re-raises the signal it forwarded
        try:
            http("GET", f"http://127.0.0.1:{port}/metrics.txt", timeout=2)
            raise AssertionError("the metrics server outlived the loop")
        except OSError:
            pass
        first = newest_stop(node)
        time.sleep(1.1)
        once = subprocess.run(as_postgres(["bash", str(script), "once", "diff"]), env=env,
                              capture_output=True, text=True, timeout=120)
        assert once.returncode == 0, once.stderr
        text = (metrics / "metrics.txt").read_text()
        assert metric_value(text) == newest_stop(node) > first
        # Prometheus' own linter accepts the exposition (HELP, TYPE, name, unit suffix).
        lint = subprocess.run([require_tool("promtool"), "check", "metrics"], input=text, capture_output=True, text=True)
        assert lint.returncode == 0, lint.stdout + lint.stderr
