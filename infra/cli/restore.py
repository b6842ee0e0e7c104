"""`coderz restore STACK [--time T] [--into NEW]`: bring the stack's database back to the end of
its archive, or to the instant T, in the stack itself or in a clone made by `coderz clone`."""

from __future__ import annotations

import argparse
from datetime import datetime, timedelta

from infra.cli import EXIT_FAILED, EXIT_OK, EXIT_REFUSED, CliError, add_dir_argument
from infra.cli.backup import connect
from infra.cli.pgbackrest import DatabaseHost, ToolFailed, parse_info, parse_time, pgbackrest_time


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "restore", help="restore the stack's PostgreSQL (point in time with --time)",
        description="Stop the applications and PostgreSQL, restore with pgBackRest (--delta), start "
        "PostgreSQL and wait until recovery has reached the target, then start the applications again. "
        "When recovery cannot reach the target (a missing or damaged WAL segment), PostgreSQL refuses "
        "to open the database: everything stays stopped and the command fails. "
        "Exit codes: 0 restored, 2 refused (bad time, no backup before it), 3 restore failed.",
    )
    parser.add_argument("stack", metavar="STACK")
    parser.add_argument("--time", metavar="T", help="ISO 8601 instant with offset, e.g. 2026-11-30T14:05:00Z")
    parser.add_argument("--into", metavar="NEW", help="restore into the clone NEW (made by coderz clone) instead; "
                        "NEW's repository becomes a copy of STACK's, or in S3 NEW reads STACK's path and starts its own "
                        "again (NEW's own earlier backups are dropped)")
    add_dir_argument(parser)
    parser.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    from infra.cli.dockerdb import DockerDatabaseHost

    from infra.cli.engine import stack_file

    source = connect(args.stack, args.dir)
    if args.into is not None:
        stack_file(args.into, args.dir.resolve())  # NEW is a stack name with its file, never a path
    target = DockerDatabaseHost(args.into, source=args.stack, root=args.dir.resolve()) if args.into is not None else source
    return restore(args.stack, source, target, parse_time(args.time) if args.time else None)


def restore(stack: str, source: DatabaseHost, target: DatabaseHost, when: datetime | None) -> int:
    backups, _, newest_wal = parse_info(source.pgbackrest("--output=json", "info"))
    if not backups:
        raise CliError(f"{stack} has no backup to restore from", EXIT_REFUSED)
    # pgBackRest keeps backup times to the second; a target in the second a backup ended is too soon.
    first = min(b.finished for b in backups) + timedelta(seconds=1)
    if when is not None and when < first:
        raise CliError(f"--time {when:%Y-%m-%d %H:%M:%S} UTC is before the oldest backup finished "
                       f"({first - timedelta(seconds=1):%Y-%m-%d %H:%M:%S} UTC): outside the window", EXIT_REFUSED)
    options = ["--delta"]
    if when is not None:
        options += ["--type=time", f"--target={pgbackrest_time(when)}", "--target-action=promote"]
    apps = target.stop_apps()
    target.stop_database()
    target.before_restore()
    target.pgbackrest(*options, "restore")
    try:
        target.start_database()
    except ToolFailed as error:
        lines = error.detail.strip().splitlines() or ["no log"]
        reason = next((line for line in reversed(lines) if "FATAL" in line), lines[-1])  # the last attempt's
        hint = ("a WAL segment before the target is missing or damaged; pick an earlier --time, or restore "
                "without --time. " if "recovery target" in reason else "")
        stopped = f" ({', '.join(apps)}; start them once the database is back)" if apps else ""
        raise CliError(
            f"PostgreSQL did not finish recovery ({reason.strip()}): {hint}The database and the applications"
            f"{stopped} stay stopped: nothing was opened half-restored.",
            EXIT_FAILED,
        ) from None
    target.start_apps(apps)
    point = f"{when:%Y-%m-%d %H:%M:%S} UTC" if when is not None else f"the end of the archive ({newest_wal})"
    print(f"{stack}: restored to {point}; applications started again: {', '.join(apps) or 'none were running'}")
    try:
        target.after_restore()
    except ToolFailed as error:
        raise CliError(f"the database is restored and running, but its own repository did not take over ({error}): "
                       "WAL stays on its disk until `pgbackrest stanza-create` and a full backup succeed in its "
                       "backup sidecar", EXIT_FAILED) from None
    return EXIT_OK
