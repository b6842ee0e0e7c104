"""`coderz drift STACK`: is the live host still what the deployed code says?"""

from __future__ import annotations

import argparse

from infra.cli import EXIT_FOUND, EXIT_OK
from infra.cli import stackrun


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "drift",
        help="refresh-preview the deployed stack; exit 1 when the host drifted",
        description="Refresh the stack's resources from the host and preview the checked-out code against "
        "them (pulumi preview --refresh --expect-no-changes, through the Automation API). Run it on the "
        "commit that is deployed: anything it finds is drift. Fields the Docker daemon fills in "
        "(components/drift_ignore.py) are reported as ignored, never as drift. "
        "Exit codes: 0 no drift, 1 drift, 2 usage or unknown stack, 3 engine failure.",
    )
    stackrun.add_arguments(parser)
    parser.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    _, report = stackrun.run(args, refresh=True, expect_no_changes=True, drift=True)
    return EXIT_FOUND if report.drift else EXIT_OK
