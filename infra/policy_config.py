"""The policy pack's config per stack (`policy/config/<stack>.json`), derived from the stack file.

Each file sets every policy's enforcement level (mandatory in qa and prod, advisory in dev) and
hands the pack the facts it cannot see in resources: the host ports the catalog declares and
whether the stack keeps its data. Run `python -m infra.policy_config --write` after changing a
stack file or the catalog; a test checks the files are current.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

from infra.catalog import declare_services
from infra.config import PROJECT, REPO_ROOT, STACKS, stack_file_config

POLICY_DIR = REPO_ROOT / "policy"
MANDATORY_IN = ("qa", "prod")


def policy_names() -> list[str]:
    spec = importlib.util.spec_from_file_location("coderz_guardrails", POLICY_DIR / "guardrails.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return [policy.name for policy in module.POLICIES]


def render(stack: str, root: Path = REPO_ROOT) -> dict:
    config = stack_file_config(stack, root)
    catalog = declare_services(config)
    level = "mandatory" if config.environment in MANDATORY_IN else "advisory"
    public = {str(p.host): s.name for s in catalog.services for p in s.public_ports}
    loopback = {str(s.host_port): s.name for s in catalog.services if s.host_port is not None}
    extra = {
        "coderz-published-ports": {"prefix": f"{PROJECT}-{stack}", "public": public, "loopback": loopback},
        "coderz-data-volumes-protected": {"keepData": config.keeps_data},
    }
    return {name: {"enforcementLevel": level, **extra.get(name, {})} for name in policy_names()}


def path_of(stack: str) -> Path:
    return POLICY_DIR / "config" / f"{stack}.json"


def text_of(stack: str, root: Path = REPO_ROOT) -> str:
    return json.dumps(render(stack, root), indent=2, sort_keys=True) + "\n"


def main(argv: list[str]) -> int:
    stale = [stack for stack in STACKS if not path_of(stack).exists() or path_of(stack).read_text() != text_of(stack)]
    if "--write" in argv:
        for stack in stale:
            path_of(stack).write_text(text_of(stack))
        return 0
    for stack in stale:
        print(f"{path_of(stack).relative_to(REPO_ROOT)} is stale: python -m infra.policy_config --write")
    return 1 if stale else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
