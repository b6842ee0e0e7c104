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
from infra.config import STACKS, stack_file_config

LOADTESTS = Path(__file__).resolve().parent.parent / "loadtests"
ROUTES_FILE = LOADTESTS / "routes.json"
GATEWAY_HEALTH = {"name": "gateway", "path": "/health"}


def routes_document() -> str:
    stacks = {}
    for stack in STACKS:
        catalog = declare_services(stack_file_config(stack))
        stacks[stack] = [GATEWAY_HEALTH] + [{"name": s.name, "path": s.route.path_prefix}
                                            for s in catalog.routed if s.route is not None]
    return json.dumps({"generatedBy": "python -m infra.loadtests --write", "stacks": stacks}, indent=2) + "\n"


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
