"""The one place that drives the Pulumi engine, always through the Automation API.

`pulumi.automation` runs the `pulumi` binary itself (`pulumi version`, `pulumi stack select`,
`pulumi preview ... --json --event-log ...`); nothing here builds a command line by hand.
Stack names and stack files are checked before the engine is called, so a typo costs nothing.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pulumi import automation as auto

from infra.cli import EXIT_FAILED, CliError
from infra.config import PROJECT, SECRET_KEYS

# Pulumi's rule for a stack name: letters, digits, `-`, `_`, `.`, at most 100 characters. A
# qualified `org/project/stack` is refused: the stack file of a stack is `Pulumi.<name>.yaml`.
STACK_NAME = re.compile(r"[A-Za-z0-9_.-]{1,100}")
PROJECT_FILE = "Pulumi.yaml"
# The CLI's own words when `--expect-no-changes` fails: older CLIs say "no changes were expected
# but changes were proposed", newer ones (NoChangesExpectedError) may name the operation.
NO_CHANGES_EXPECTED = re.compile(r"no changes were expected (for \S+ )?but changes were proposed")


@dataclass(frozen=True)
class Preview:
    """One preview: the engine's JSON (`pulumi preview --json`: steps, changeSummary,
    diagnostics), as text and parsed, and whether `--expect-no-changes` tripped."""

    stack: str
    text: str
    digest: dict[str, Any]
    changes_found: bool


def stack_file(stack: str, work_dir: Path) -> Path:
    """The stack's `Pulumi.<stack>.yaml`, after checking the name and that the project is there."""
    if not STACK_NAME.fullmatch(stack) or stack in (".", ".."):
        raise CliError(f"invalid stack name {stack!r}: use letters, digits, '-', '_' or '.' (at most 100)")
    if not (work_dir / PROJECT_FILE).is_file():
        raise CliError(f"{work_dir}: no {PROJECT_FILE} (run from the project, or pass --work-dir)")
    path = work_dir / f"Pulumi.{stack}.yaml"
    if not path.is_file():
        known = sorted(p.name[len("Pulumi."):-len(".yaml")] for p in work_dir.glob("Pulumi.*.yaml"))
        raise CliError(f"unknown stack {stack!r}: no {path.name} in {work_dir} (known: {', '.join(known) or 'none'})")
    return path


def find_project(start: Path) -> Path:
    """The nearest folder at or above `start` that holds `Pulumi.yaml` (else `start` itself)."""
    start = start.resolve()
    for folder in (start, *start.parents):
        if (folder / PROJECT_FILE).is_file():
            return folder
    return start


def _select(stack: str, work_dir: Path) -> auto.Stack:
    try:
        return auto.select_stack(
            stack_name=stack,
            work_dir=str(work_dir),
            opts=auto.LocalWorkspaceOptions(env_vars={"PULUMI_SKIP_UPDATE_CHECK": "true"}),
        )
    except auto.StackNotFoundError:
        raise CliError(f"unknown stack {stack!r}: the backend has none (check PULUMI_BACKEND_URL)") from None
    except FileNotFoundError:
        raise CliError("the pulumi CLI is not on PATH", EXIT_FAILED) from None
    except (auto.CommandError, auto.InvalidVersionError, subprocess.CalledProcessError, OSError) as error:
        raise CliError(f"could not select stack {stack!r}: {_first_line(str(error))}", EXIT_FAILED) from None


def secret_env_name(key: str) -> str:
    """`sshPrivateKey` -> `CODERZ_SSH_PRIVATE_KEY`: where CI hands a config secret to coderz."""
    return "CODERZ_" + re.sub(r"(?<!^)(?=[A-Z])", "_", key).upper()


def _set_secrets_from_env(selected: auto.Stack) -> None:
    """Config secrets given in the environment (CI: repository secrets) are set on the stack,
    encrypted by Pulumi's own `config set-all --secret`, before the engine runs the program."""
    values = {key: os.environ[secret_env_name(key)] for key in SECRET_KEYS if os.environ.get(secret_env_name(key))}
    if not values:
        return
    try:
        selected.set_all_config({f"{PROJECT}:{key}": auto.ConfigValue(value, secret=True) for key, value in values.items()})
    except auto.CommandError as error:
        raise CliError(f"could not set the stack's secrets ({', '.join(sorted(values))}): {_first_line(str(error))}",
                       EXIT_FAILED) from None


def policy_pack_args(stack: str, work_dir: Path) -> dict[str, list[str]]:
    """The guardrails pack (policy/) runs with every preview and drift check; the stack's own
    pack config (mandatory in qa and prod, advisory in dev) where `infra.policy_config` wrote one,
    else the pack's default (mandatory)."""
    pack = work_dir / "policy"
    if not (pack / "PulumiPolicy.yaml").is_file():
        return {}
    config = pack / "config" / f"{stack}.json"
    if not config.is_file() and (work_dir / f"Pulumi.{stack}.yaml").is_file():
        config = _rendered_pack_config(stack, work_dir)
    return {"policy_packs": [str(pack)], **({"policy_pack_configs": [str(config)]} if config.is_file() else {})}


def _rendered_pack_config(stack: str, work_dir: Path) -> Path:
    """A stack without a committed pack config (a clone made by `coderz clone`, a PR's preview
    stack) gets one rendered from its own file, as the committed ones are: its prefix and ports,
    mandatory for its kind. Without it the pack would judge the clone by no port plan at all."""
    import atexit
    import shutil
    import tempfile

    from infra.policy_config import text_of

    folder = Path(tempfile.mkdtemp(prefix="coderz-policy-"))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    path = folder / f"{stack}.json"
    path.write_text(text_of(stack, work_dir))
    return path


def preview(stack: str, work_dir: Path, *, refresh: bool, expect_no_changes: bool) -> Preview:
    """`pulumi preview --json` of `stack` in `work_dir`, optionally refreshing first.

    With `expect_no_changes`, a preview that finds changes is returned (`changes_found`), not
    raised: it is the answer, not a failure. Anything else the engine refuses raises
    `CliError(EXIT_FAILED)`."""
    stack_file(stack, work_dir)
    selected = _select(stack, work_dir)
    _set_secrets_from_env(selected)
    stdout: list[str] = []
    stderr: list[str] = []
    try:
        selected.preview(
            refresh=refresh,
            expect_no_changes=expect_no_changes,
            json=True,
            **policy_pack_args(stack, work_dir),
            on_output=stdout.append,
            on_error=stderr.append,
        )
        failed = None
    except auto.CommandError as error:
        failed = error
    except RuntimeError as error:  # the SDK's "summary event never found": the engine died early
        raise CliError(f"pulumi preview failed: {error}", EXIT_FAILED) from None
    text = "\n".join(stdout)
    digest = _digest(text)
    if failed is None:
        if digest is None:
            raise CliError("pulumi preview printed no JSON preview", EXIT_FAILED)
        return Preview(stack, text, digest, changes_found=False)
    if expect_no_changes and digest is not None and _only_expectation_failed(digest, "\n".join(stderr)):
        return Preview(stack, text, digest, changes_found=True)
    raise CliError(f"pulumi preview failed: {_error_line(stderr) or _first_line(str(failed))}", EXIT_FAILED)


def _digest(text: str) -> dict[str, Any] | None:
    """The preview document in the CLI's stdout: one indented JSON object, printed last."""
    lines = text.splitlines()
    for index, line in enumerate(lines):
        if line.startswith("{"):
            try:
                value, _ = json.JSONDecoder().raw_decode("\n".join(lines[index:]))
            except json.JSONDecodeError:
                continue
            if isinstance(value, dict) and "changeSummary" in value:
                return value
    return None


def _only_expectation_failed(digest: dict[str, Any], stderr: str) -> bool:
    errors = [d for d in digest.get("diagnostics") or [] if d.get("severity") == "error"]
    changed = any(count for op, count in (digest.get("changeSummary") or {}).items() if op != "same")
    return bool(NO_CHANGES_EXPECTED.search(stderr)) and not errors and changed


def _error_line(stderr: list[str]) -> str:
    for line in stderr:
        if line.strip().lower().startswith("error:"):
            return line.strip()[len("error:"):].strip()
    return next((line.strip() for line in stderr if line.strip()), "")


def _first_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    for line in lines:
        if line.lower().startswith("error:"):
            return line
    return lines[0] if lines else "unknown error"
