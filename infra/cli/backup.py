"""`coderz backup STACK`: take a backup now, beside the scheduled ones."""

from __future__ import annotations

import argparse
from pathlib import Path

from infra.cli import EXIT_OK, add_dir_argument
from infra.cli.pgbackrest import DatabaseHost, human_size, parse_info


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "backup", help="take a pgBackRest backup of the stack's PostgreSQL now",
        description="Run pgBackRest in the stack's backup sidecar (docker exec on the stack's host). "
        "Expired backups are removed afterwards, as after every scheduled backup. "
        "Exit codes: 0 done, 2 unknown stack or backups off, 3 pgBackRest failed.",
    )
    parser.add_argument("stack", metavar="STACK")
    parser.add_argument("--type", choices=("full", "diff", "incr"), default="full",
                        help="full (default), differential (since the last full) or incremental")
    add_dir_argument(parser)
    parser.set_defaults(handler=lambda args: handle(args, connect(args.stack, args.dir)))


def connect(stack: str, root: Path) -> DatabaseHost:
    """The stack's database host, once its name is a stack name and its file exists (a name
    with a `/` would otherwise reach the file system as a path)."""
    from infra.cli.dockerdb import DockerDatabaseHost
    from infra.cli.engine import stack_file

    stack_file(stack, root.resolve())
    return DockerDatabaseHost(stack, root=root.resolve())


def handle(args: argparse.Namespace, host: DatabaseHost) -> int:
    host.pgbackrest(f"--type={args.type}", "backup")
    backups, _, _ = parse_info(host.pgbackrest("--output=json", "info"))
    newest = backups[0]
    print(f"{args.stack}: {newest.kind} backup {newest.label} done "
          f"({human_size(newest.size)} in the repository, database {human_size(newest.database_size)})")
    return EXIT_OK
