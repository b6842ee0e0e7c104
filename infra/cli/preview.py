"""`coderz preview STACK`: what the checked-out code would change on the stack."""

from __future__ import annotations

import argparse

from infra.cli import EXIT_FOUND, EXIT_OK
from infra.cli import stackrun


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "preview",
        help="preview what the working tree would change on the stack",
        description="Preview the checked-out code against the stack's state (pulumi preview --json, through "
        "the Automation API). Exit codes: 0 previewed (or no changes with --expect-no-changes), 1 changes "
        "with --expect-no-changes, 2 usage or unknown stack, 3 engine failure.",
    )
    stackrun.add_arguments(parser)
    parser.add_argument("--refresh", action="store_true", help="refresh the state from the host first")
    parser.add_argument("--expect-no-changes", action="store_true", help="exit 1 when the preview has changes")
    parser.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    _, report = stackrun.run(args, refresh=args.refresh, expect_no_changes=args.expect_no_changes, drift=False)
    return EXIT_FOUND if args.expect_no_changes and report.found else EXIT_OK
