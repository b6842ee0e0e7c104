"""`coderz render`: one Markdown text from a drift JSON and a preview JSON, drift first.

The pull-request workflow posts it as the stack's one comment, the daily drift workflow as the
stack's one issue; the hidden marker on its first line is how they find it again to edit it.
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

from infra.cli import EXIT_OK, CliError

MARKER = re.compile(r"[a-z][a-z0-9-]{0,40}")
# GitHub refuses comment and issue bodies over 65,536 characters.
BODY_LIMIT = 60_000


def marker_line(marker: str, stack: str) -> str:
    return f"<!-- {marker} stack={stack} -->"


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "render",
        help="render a drift JSON and a preview JSON as one Markdown comment",
        description="Render the JSON written by `coderz drift --json` and `coderz preview --json` as one "
        "Markdown text: drift of the deployed stack first, then the changes of the checked-out code. A "
        "missing file is reported as a failed check. Exit codes: 0 written, 2 usage.",
    )
    parser.add_argument("--stack", required=True, help="the stack both files are about")
    parser.add_argument("--drift", type=Path, metavar="FILE", help="JSON of `coderz drift --json`")
    parser.add_argument("--preview", type=Path, metavar="FILE", help="JSON of `coderz preview --json`")
    parser.add_argument("--base", default="", help="the commit the drift check ran on (shown)")
    parser.add_argument("--head", default="", help="the commit the preview ran on (shown)")
    parser.add_argument("--marker", default="coderz-pr", help="hidden marker name (default coderz-pr)")
    parser.add_argument("--output", type=Path, required=True, metavar="FILE", help="where to write the Markdown")
    parser.set_defaults(handler=handle)


def _load(path: Path | None) -> dict | None:
    if path is None or not path.is_file():
        return None
    try:
        digest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    return digest if isinstance(digest, dict) else None


def _at(commit: str) -> str:
    return f" at `{commit[:12]}`" if re.fullmatch(r"[0-9a-f]{7,40}", commit) else ""


def render(stack: str, marker: str, drift: dict | None, preview: dict | None, *, base: str = "", head: str = "",
           with_preview: bool = True) -> str:
    from infra.cli.report import analyse, section

    failed = "not available: the check failed (see the workflow run's log)\n"
    parts = [marker_line(marker, stack), f"## Pulumi stack `{stack}`", ""]
    title = f"Drift: deployed code{_at(base)} against the live host"
    parts.append(section(title, analyse(drift, all_drift=True), drift=True) if drift else f"### {title}\n\n{failed}")
    if with_preview:
        title = f"Changes this pull request makes{_at(head)}"
        parts.append("")
        parts.append(section(title, analyse(preview, all_drift=False), drift=False) if preview else f"### {title}\n\n{failed}")
    text = "\n".join(parts)
    if len(text) > BODY_LIMIT:
        text = text[:BODY_LIMIT].rsplit("\n", 1)[0] + "\n\n… cut to fit a GitHub comment: the full report is in the JSON files.\n"
    return text


def handle(args: argparse.Namespace) -> int:
    from infra.cli.engine import STACK_NAME

    if not STACK_NAME.fullmatch(args.stack):
        raise CliError(f"invalid stack name {args.stack!r}")
    if not MARKER.fullmatch(args.marker):
        raise CliError(f"invalid marker {args.marker!r}: lowercase letters, digits and '-'")
    if not args.output.parent.is_dir():
        raise CliError(f"--output {args.output}: folder {args.output.parent} does not exist")
    text = render(args.stack, args.marker, _load(args.drift), _load(args.preview), base=args.base, head=args.head,
                  with_preview=args.preview is not None)
    args.output.write_text(text, encoding="utf-8")
    return EXIT_OK
