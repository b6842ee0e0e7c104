"""`coderz clone SOURCE NEW`: a new stack from an existing one (infra/cloning.py plans it).

With the Pulumi CLI on PATH the new stack is created and SOURCE's secrets are re-encrypted
into it through the Automation API (`stack init`, then `config copy` per secret key); without
it, the exact `pulumi config set --secret` lines still needed are printed. `--with-data` then
brings NEW up (`pulumi up`) and copies every application database of SOURCE into it
(infra/datacopy.py). If the engine fails half-way, the new stack and its file are removed again.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

from pulumi import automation as auto

from infra.cli import EXIT_FAILED, EXIT_OK, CliError, add_dir_argument
from infra.cloning import ClonePlan, CloneRefused, plan_clone, write_new_file
from infra.config import PROJECT
from infra.datacopy import CopyError, DockerPostgres, copy_databases
from infra.stackset import read_stack


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "clone", help="make stack NEW from stack SOURCE (new host, domain and port block)",
        description="Write Pulumi.NEW.yaml from SOURCE's validated config and copy SOURCE's secrets into NEW. "
                    "Refuses (exit 2, nothing written) when NEW exists, SOURCE is unknown, a name is invalid or "
                    "the ports would clash with a stack on the same host.",
    )
    parser.add_argument("source", metavar="SOURCE", help="the stack to clone")
    parser.add_argument("new", metavar="NEW", help="the new stack's name (letters, digits, '-', '_', '.')")
    parser.add_argument("--host", help="the new stack's SSH host (default: SOURCE's host)")
    parser.add_argument("--port-base", type=int, metavar="N",
                        help="start of NEW's loopback port block (default: the next free block on its host)")
    parser.add_argument("--domain", help="the gateway's server name (default: SOURCE's)")
    parser.add_argument("--with-data", action="store_true",
                        help="bring NEW up, then copy every application database of SOURCE into it")
    parser.add_argument("--dry-run", action="store_true", help="print the file it would write; change nothing")
    add_dir_argument(parser)
    parser.set_defaults(handler=run)


def has_engine() -> bool:
    return shutil.which("pulumi") is not None


def workspace(root: Path) -> auto.LocalWorkspace:
    """The project's workspace, driving the `pulumi` found on PATH."""
    return auto.LocalWorkspace(work_dir=str(root))


def run(args: argparse.Namespace) -> int:
    root = args.dir.resolve()
    try:
        plan = plan_clone(root, args.source, args.new, host=args.host, port_base=args.port_base, domain=args.domain)
    except CloneRefused as refused:
        raise CliError(str(refused)) from None
    engine = has_engine()
    if args.with_data and not engine:
        raise CliError("--with-data brings NEW up and needs the pulumi CLI on PATH; nothing written")
    if args.with_data and plan.missing_secrets:
        raise CliError(f"--with-data brings NEW up, but {args.source}'s file holds no value for "
                       f"{', '.join(plan.missing_secrets)}; clone without it, set them, `pulumi up`, then copy")
    if args.dry_run:
        print(plan.text, end="")
        print(f"# would copy secrets from {plan.source}: {', '.join(plan.copied_secrets) or 'none'}")
        for line in plan.set_secret_lines(plan.missing_secrets):
            print(f"# still needed: {line}")
        if args.with_data:
            print(f"# then: pulumi up {plan.new}, and copy every application database of {plan.source} into it")
        return EXIT_OK
    ws = workspace(root) if engine else None
    if ws is not None and plan.new in {summary.name for summary in ws.list_stacks()}:
        raise CliError(f"stack {plan.new!r} exists already in the backend (without a {plan.path.name} here)")

    try:
        write_new_file(plan.path, plan.text)
    except CloneRefused as refused:
        raise CliError(str(refused)) from None
    print(f"wrote {plan.path.name} ({plan.config.environment} environment, loopback ports from "
          f"{plan.config.ports.base}, gateway port {plan.config.ports.http})")
    if ws is None:
        print("pulumi is not on PATH: create the stack and set its secrets (value on stdin) with:")
        print(f"pulumi stack init {plan.new}")
        for line in plan.set_secret_lines(plan.copied_secrets + plan.missing_secrets):
            print(line)
        return EXIT_OK
    _create(plan, ws, root)
    if plan.missing_secrets:
        print(f"{plan.source}'s file holds no value for these; set them (value on stdin) before `pulumi up`:")
        for line in plan.set_secret_lines(plan.missing_secrets):
            print(line)
    if args.with_data:
        _deploy_and_copy(plan, root)
    return EXIT_OK


def _create(plan: ClonePlan, ws: auto.LocalWorkspace, root: Path) -> None:
    """`pulumi stack init NEW`, then `pulumi config copy` of each secret: re-encrypted by Pulumi
    for NEW. On failure the stack and the file are removed: no half-made clone is left."""
    created = False
    try:
        ws.create_stack(plan.new)
        created = True
        for key in plan.copied_secrets:
            ws.cli_api.config_copy(key, stack=plan.source, dest=plan.new, cwd=str(root), additional_env=ws.env_vars)
    except auto.CommandError as error:
        left = ""
        if created:
            try:
                ws.remove_stack(plan.new)
            except auto.CommandError:
                left = f" (but the stack is left in the backend: pulumi stack rm {plan.new})"
        plan.path.unlink(missing_ok=True)
        raise CliError(f"the engine failed, {plan.new} removed again{left}: {engine_error(error)}",
                       EXIT_FAILED) from None
    print(f"created stack {plan.new}; secrets re-encrypted from {plan.source}: {', '.join(plan.copied_secrets) or 'none'}")


def postgres_of(stack: str, root: Path) -> DockerPostgres:
    """A stack's PostgreSQL container (`<prefix>-postgres`, infra/config.py Stack.prefix) on its host."""
    target = read_stack(stack, root).config.target
    return DockerPostgres(container=f"{PROJECT}-{stack}-postgres", docker_host=target.docker_host)


def _deploy_and_copy(plan: ClonePlan, root: Path) -> None:
    try:
        auto.select_stack(plan.new, work_dir=str(root)).up(on_output=print)
    except auto.CommandError as error:
        raise CliError(f"pulumi up of {plan.new} failed; no data copied: {engine_error(error)}", EXIT_FAILED) from None
    try:
        copies = copy_databases(postgres_of(plan.source, root), postgres_of(plan.new, root))
    except CopyError as error:
        raise CliError(f"data copy stopped: {error}", EXIT_FAILED) from None
    print(f"copied {len(copies)} databases from {plan.source} into {plan.new}:")
    for copy in copies:
        print(f"  {copy.summary()}")


def engine_error(error: Exception) -> str:
    """The engine's own last line of a failed command, for a one-line error."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[-1].removeprefix("stderr:").strip() if lines else type(error).__name__
