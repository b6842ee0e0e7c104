"""The gateway routes the load tests request, derived from the service declarations.

`python -m infra.loadtests --write` writes `loadtests/routes.json`, which the k6 scripts read
(`tests/test_loadtests.py` fails when it is out of date): per stack, the gateway's own health
and one request per routed service, at the route's prefix.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from infra.catalog import declare_services
from infra.config import STACKS, StackConfig, stack_file_config

LOADTESTS = Path(__file__).resolve().parent.parent / "loadtests"
ROUTES_FILE = LOADTESTS / "routes.json"
GATEWAY_HEALTH = {"name": "gateway", "path": "/health"}


def stack_routes(config: StackConfig) -> list[dict[str, str]]:
    """What the scripts request on a stack with this config: the gateway's health, then one
    request per routed service."""
    catalog = declare_services(config)
    return [GATEWAY_HEALTH] + [{"name": s.name, "path": s.route.path_prefix} for s in catalog.routed if s.route is not None]


def routes_document() -> str:
    stacks = {stack: stack_routes(stack_file_config(stack)) for stack in STACKS}
    return json.dumps({"generatedBy": "python -m infra.loadtests --write", "stacks": stacks}, indent=2) + "\n"


def script_stack(stack: str, config: StackConfig) -> tuple[str, str | None]:
    """The STACK the scripts read routes.json by, and the ROUTES to keep. A stack of the file
    is itself; another (a clone made by `coderz clone`) is its kind's entry, kept to its own
    route names, once every route it has is there with the same path; else refused."""
    document = json.loads(ROUTES_FILE.read_text())["stacks"]
    if stack in document:
        return stack, None
    own, kind = stack_routes(config), document.get(config.environment, [])
    missing = [route for route in own if route not in kind]
    if missing:
        names = ", ".join(f"{r['name']} at {r['path']}" for r in missing)
        raise ValueError(f"{stack} routes what loadtests/routes.json has not for {config.environment} ({names}): "
                         "the scripts cannot request it")
    return config.environment, ",".join(route["name"] for route in own)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true", help=f"rewrite {ROUTES_FILE.name}")
    args = parser.parse_args(argv)
    document = routes_document()
    if args.write:
        ROUTES_FILE.write_text(document)
    else:
        sys.stdout.write(document)
    return 0


if __name__ == "__main__":
    sys.exit(main())
