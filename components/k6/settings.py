"""The k6 runner's settings (`coderz:k6`) and the `k6 run` command line the CLI execs in it."""

from __future__ import annotations

import re
from pathlib import Path


from components.spec import Frozen, PinnedImage

API_PORT = 6565  # k6's REST API (status, pause, stop) while a test runs
SCRIPTS_DIR = "/loadtests"
SOURCE_DIR = Path(__file__).resolve().parent.parent.parent / "loadtests"
REMOTE_WRITE_OUTPUT = "experimental-prometheus-rw"
# Trend metrics as these gauges (k6_http_req_duration_p95 ...), which the dashboard charts.
TREND_STATS = "p(95),p(99),avg,max"
SCRIPT_NAME = re.compile(r"^[a-z][a-z0-9_-]{0,40}$")
# Set by `coderz loadtest` from the stack: never from the command line, or a run could be aimed
# at any URL (BASE_URL) or at another stack's routes (STACK).
SET_BY_RUNNER = ("STACK", "BASE_URL")


class K6Config(Frozen):
    """`coderz:k6`: a pinned grafana/k6 container that idles until `coderz loadtest` runs a
    script of loadtests/ in it; results go to Prometheus by remote write."""

    enabled: bool = False
    image: PinnedImage = "grafana/k6:1.1.0"


def scripts() -> dict[str, str]:
    """The files of loadtests/ the runner gets, name -> text (scripts, their library, routes)."""
    return {path.name: path.read_text() for path in sorted(SOURCE_DIR.iterdir())
            if path.suffix in (".js", ".json") and path.is_file()}


def script_names() -> tuple[str, ...]:
    """The runnable scripts: every .js of loadtests/ but the shared library."""
    return tuple(name.removesuffix(".js") for name in scripts() if name.endswith(".js") and name != "lib.js")


def script_variables() -> tuple[str, ...]:
    """The variables the scripts read (`__ENV.NAME`), read from the scripts themselves."""
    return tuple(sorted({name for file, text in scripts().items() if file.endswith(".js")
                         for name in re.findall(r"__ENV\.([A-Z][A-Z0-9_]*)", text)}))


def health_test() -> tuple[str, ...]:
    """The runner's Docker health check. Idle, k6 serves nothing (its REST API lives only while
    a test runs), so healthy means what the runner is for: this image's k6 compiles every script
    it holds (`k6 inspect` loads the script, its library and routes.json, and runs nothing)."""
    checks = " && ".join(f"k6 inspect {SCRIPTS_DIR}/{name}.js >/dev/null" for name in script_names())
    return ("CMD-SHELL", checks)


def run_argv(script: str, *, stack: str, base_url: str, remote_write: bool, extra_env: dict[str, str] | None = None) -> list[str]:
    """`k6 run` inside the runner: the REST API on its published port, results to Prometheus
    when the stack has it, the stack's routes against its gateway."""
    if script not in script_names():
        raise ValueError(f"no script {script!r} in loadtests/ (one of: {', '.join(script_names())})")
    argv = ["k6", "run", "--address", f"0.0.0.0:{API_PORT}", "--no-usage-report", "--tag", f"script={script}",
            "-e", f"STACK={stack}", "-e", f"BASE_URL={base_url}"]
    for key, value in (extra_env or {}).items():
        if not re.fullmatch(r"[A-Z][A-Z0-9_]{0,40}", key):
            raise ValueError(f"bad variable name {key!r}")
        if key in SET_BY_RUNNER:
            raise ValueError(f"{key} is set by coderz loadtest from the stack, not from --env")
        if key not in script_variables():
            known = ", ".join(k for k in script_variables() if k not in SET_BY_RUNNER)
            raise ValueError(f"no script reads {key!r} (typo?): the variables are {known}")
        argv += ["-e", f"{key}={value}"]
    if remote_write:
        argv += ["-o", REMOTE_WRITE_OUTPUT]
    return [*argv, f"{SCRIPTS_DIR}/{script}.js"]
