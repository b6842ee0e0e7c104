"""`coderz backups STACK`: the backups in the stack's repository, newest first."""

from __future__ import annotations

import argparse
from datetime import datetime, timezone

from infra.cli import EXIT_OK, add_dir_argument
from infra.cli.backup import connect
from infra.cli.pgbackrest import DatabaseHost, human_age, human_size, parse_info


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "backups", help="list the stack's backups, newest first, with age and size",
        description="Read `pgbackrest info` in the stack's backup sidecar. Sizes are what each backup "
        "adds to the repository (compressed). Exit codes: 0 listed, 2 unknown stack, 3 pgBackRest failed.",
    )
    parser.add_argument("stack", metavar="STACK")
    add_dir_argument(parser)
    parser.set_defaults(handler=lambda args: handle(args, connect(args.stack, args.dir)))


def table(text: str, now: datetime) -> list[str]:
    backups, oldest_wal, newest_wal = parse_info(text)
    if not backups:
        return ["no backups yet"]
    rows = [("label", "type", "finished (UTC)", "age", "size")]
    rows += [(b.label, b.kind, b.finished.strftime("%Y-%m-%d %H:%M:%S"), human_age((now - b.finished).total_seconds()),
              human_size(b.size)) for b in backups]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in rows]
    oldest = backups[-1].finished.strftime("%Y-%m-%d %H:%M:%S")
    lines.append(f"restorable from {oldest} UTC on; WAL archived {oldest_wal} .. {newest_wal}")
    return lines


def handle(args: argparse.Namespace, host: DatabaseHost, now: datetime | None = None) -> int:
    for line in table(host.pgbackrest("--output=json", "info"), now or datetime.now(timezone.utc)):
        print(line)
    return EXIT_OK
