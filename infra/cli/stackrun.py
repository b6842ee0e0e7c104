"""What `coderz drift` and `coderz preview` share: their arguments, the checks made before the
engine is called, the engine run, and the files they write."""

from __future__ import annotations

import argparse
from pathlib import Path

from typing import TYPE_CHECKING

from infra.cli import EXIT_FAILED, CliError

if TYPE_CHECKING:
    from infra.cli.engine import Preview
    from infra.cli.report import Report


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("stack", metavar="STACK", help="stack name: Pulumi.STACK.yaml must exist")
    parser.add_argument("--work-dir", type=Path, default=None,
                        help="the project folder (default: the nearest folder holding Pulumi.yaml)")
    parser.add_argument("--json", type=Path, metavar="FILE", help="write the engine's preview JSON here")
    parser.add_argument("--markdown", type=Path, metavar="FILE", help="write the Markdown report here")


def _writable(path: Path | None, option: str) -> None:
    if path is not None and not path.parent.is_dir():
        raise CliError(f"{option} {path}: folder {path.parent} does not exist")


def run(args: argparse.Namespace, *, refresh: bool, expect_no_changes: bool, drift: bool) -> tuple[Preview, Report]:
    """Check everything, preview, then write the JSON and the report; nothing is written on a refusal."""
    # imported here: `coderz --help` should not pay for the engine and the program's models
    from infra.cli import engine
    from infra.cli.report import analyse, section, summary_line

    work_dir = (args.work_dir or engine.find_project(Path.cwd())).resolve()
    engine.stack_file(args.stack, work_dir)
    _writable(args.json, "--json")
    _writable(args.markdown, "--markdown")
    result = engine.preview(args.stack, work_dir, refresh=refresh, expect_no_changes=expect_no_changes)
    report = analyse(result.digest, all_drift=drift)
    try:
        if args.json:
            args.json.write_text(result.text + "\n", encoding="utf-8")
        if args.markdown:
            title = f"Drift on `{args.stack}`" if drift else f"Changes to `{args.stack}`"
            args.markdown.write_text(section(title, report, drift=drift), encoding="utf-8")
    except OSError as error:
        raise CliError(f"could not write the report: {error}", EXIT_FAILED) from None
    found = report.drift if drift else report.found
    verdict = ("drift found" if drift else "changes") if found else ("no drift" if drift else "no changes")
    if result.changes_found and not found:
        verdict += " (the engine's differences are all in ignored daemon-filled fields)"
    print(f"{args.stack}: {verdict} ({summary_line(report)})")
    return result, report
