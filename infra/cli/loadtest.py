"""`coderz loadtest STACK [--script S]`: run a k6 script of loadtests/ in the stack's runner.

The script runs inside `coderz-<stack>-k6` through `docker exec` on the stack's Docker host (the
local socket, or `ssh://user@host` with the operator's SSH setup), against the gateway on the
stack network; its REST API answers on the runner's loopback port meanwhile, and its results go
to Prometheus (remote write) where the stack has monitoring. Exit 0: thresholds held; 1: a
threshold was crossed (k6's 99); 2: refused; 3: k6 or docker failed otherwise.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
from pathlib import Path

from components.k6.settings import run_argv, script_names
from infra.catalog import declare_services
from infra.cli import EXIT_FAILED, EXIT_FOUND, EXIT_OK, CliError, add_dir_argument
from infra.cli.engine import stack_file
from infra.config import PROJECT, REPO_ROOT, ConfigError, stack_file_config
from infra.loadtests import script_stack

THRESHOLDS_CROSSED = 99


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("loadtest", help="run a load test of loadtests/ in a stack's k6 runner",
                                   description=__doc__.splitlines()[0])
    parser.add_argument("stack", metavar="STACK")
    parser.add_argument("--script", default="smoke", help=f"one of: {', '.join(script_names())} (default smoke)")
    parser.add_argument("--env", action="append", default=[], metavar="KEY=VALUE",
                        help="a variable for the script (VUS=50, DURATION=5m, P95_MS=300), repeatable")
    add_dir_argument(parser)
    parser.set_defaults(handler=run)


def docker_command(stack: str, script: str, env: list[str], root: Path = REPO_ROOT) -> list[str]:
    """The `docker exec` that runs `script` in the stack's runner; refuses what cannot run."""
    stack_file(stack, root.resolve())
    try:
        config = stack_file_config(stack, root.resolve())
    except ConfigError as error:
        raise CliError(str(error)) from None
    if not config.k6.enabled:
        raise CliError(f"Pulumi.{stack}.yaml: {PROJECT}:k6.enabled is off: the stack has no k6 runner")
    pairs = {}
    for item in env:
        key, sep, value = item.partition("=")
        if not sep:
            raise CliError(f"--env {item!r}: expected KEY=VALUE")
        if key in pairs:
            raise CliError(f"--env {key} is given twice")
        pairs[key] = value
    catalog = declare_services(config)
    gateway = catalog.get("gateway")
    try:
        routes_of, keep = script_stack(stack, config)
        if keep is not None:
            pairs.setdefault("ROUTES", keep)
        argv = run_argv(script, stack=routes_of, base_url=f"http://{gateway.name}:{gateway.port}",
                        remote_write="prometheus" in catalog, extra_env=pairs)
    except ValueError as error:
        raise CliError(str(error)) from None
    target = config.target
    host = target.socket if target.kind == "local" else f"ssh://{target.user}@{target.host}:{target.port}"
    return ["docker", "-H", host, "exec", f"{PROJECT}-{stack}-k6", *argv]


def run(args: argparse.Namespace) -> int:
    argv = docker_command(args.stack, args.script, args.env, args.dir)
    docker = shutil.which("docker")
    if docker is None:
        raise CliError("docker (the CLI) is not installed here", EXIT_FAILED)
    code = subprocess.run([docker, *argv[1:]]).returncode
    if code == THRESHOLDS_CROSSED:
        raise CliError(f"{args.script}: a threshold was crossed (k6 exit {code})", EXIT_FOUND)
    if code != 0:
        raise CliError(f"{args.script}: k6 or docker failed (exit {code})", EXIT_FAILED)
    return EXIT_OK
