"""`coderz`: the operators' command line (installed as a console script with the project).

Each command lives in its own module under `infra/cli/` and exposes
`register(subparsers) -> None`, which adds its parser and sets `handler=<callable(args) -> int>`.
Exit codes scripts can rely on are the constants below; an expected failure is raised as
`CliError` and printed as one line on stderr.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import Sequence

# Exit codes: 0 ok; 1 the check ran and found something (drift, a change where none was
# expected); 2 usage or a refused request (bad name, existing stack, prod destroy); 3 the engine
# or a tool failed.
EXIT_OK, EXIT_FOUND, EXIT_REFUSED, EXIT_FAILED = 0, 1, 2, 3

# The modules that add commands, in the order `--help` lists them.
COMMAND_MODULES: tuple[str, ...] = ("drift", "preview", "render", "clone", "destroy", "backup", "backups", "restore",
                                   "loadtest")


class CliError(Exception):
    """An expected failure: printed as `coderz: <message>` and exits with `code`."""

    def __init__(self, message: str, code: int = EXIT_REFUSED):
        super().__init__(message)
        self.code = code


def add_dir_argument(parser: argparse.ArgumentParser) -> None:
    """`--dir`: the project folder whose stack files a command reads (default: this repository)."""
    from pathlib import Path

    from infra.config import REPO_ROOT

    parser.add_argument("--dir", type=Path, default=REPO_ROOT,
                        help="the project folder with the stack files (default: this repository)")


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(prog="coderz", description="Operate the coderz platform's stacks.")
    commands = root.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module in COMMAND_MODULES:
        importlib.import_module(f"infra.cli.{module}").register(commands)
    return root


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return int(args.handler(args))
    except CliError as error:
        print(f"coderz: {error}", file=sys.stderr)
        return error.code


if __name__ == "__main__":
    sys.exit(main())
