"""`coderz destroy NEW`: tear a stack down through the Automation API (`pulumi destroy`), and
with `--remove` also remove the stack and its file. Refuses stacks whose environment kind is
prod (read from the stack file's validated config), unknown stacks and invalid names."""

from __future__ import annotations

import argparse

from pulumi import automation as auto

from infra.cli import EXIT_FAILED, EXIT_OK, CliError, add_dir_argument
from infra.cli.clone import engine_error, has_engine
from infra.config import STACK_NAME, ConfigError
from infra.stackset import read_stack


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "destroy", help="tear a (cloned) stack down; never a prod one",
        description="Run `pulumi destroy` for STACK. Refuses (exit 2) stacks whose coderz:environment is prod, "
                    "unknown stacks and invalid names.",
    )
    parser.add_argument("stack", metavar="STACK", help="the stack to destroy")
    parser.add_argument("--remove", action="store_true", help="then remove the stack and its Pulumi.STACK.yaml")
    add_dir_argument(parser)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    root, name = args.dir.resolve(), args.stack
    if not STACK_NAME.fullmatch(name):
        raise CliError(f"{name!r} is not a valid stack name")
    path = root / f"Pulumi.{name}.yaml"
    if not path.is_file():
        raise CliError(f"no stack {name!r}: there is no {path.name} in {root}")
    try:
        config = read_stack(name, root).config
    except ConfigError as error:
        raise CliError(f"cannot tell what {name!r} is, refusing: {error}") from None
    if config.environment == "prod":
        raise CliError(f"{name!r} is a prod environment ({path.name}: coderz:environment): coderz never destroys prod")
    if not has_engine():
        raise CliError("the pulumi CLI is not on PATH", EXIT_FAILED)
    try:
        auto.select_stack(name, work_dir=str(root)).destroy(on_output=print, remove=args.remove)
    except auto.CommandError as error:
        raise CliError(f"pulumi destroy of {name} failed: {engine_error(error)}", EXIT_FAILED) from None
    if args.remove:
        path.unlink(missing_ok=True)  # `pulumi stack rm` removes it too; a leftover would look alive
        print(f"destroyed and removed stack {name}")
    else:
        print(f"destroyed stack {name} (its stack and {path.name} are kept; --remove drops them)")
    return EXIT_OK
