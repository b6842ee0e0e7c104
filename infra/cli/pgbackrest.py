"""What `coderz backup`, `backups` and `restore` share: the stack's database host, reached through
`docker` (on an SSH target, `docker -H ssh://...`), and pgBackRest's answers read into plain data.

`DatabaseHost` is the seam: `DockerHost` drives a deployed stack, the tests drive a local
PostgreSQL and pgBackRest through the same calls.
"""

from __future__ import annotations

import json
import subprocess
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Protocol, Sequence

from infra.cli import EXIT_FAILED, EXIT_REFUSED, CliError

STANZA = "main"


class ToolFailed(CliError):
    def __init__(self, what: str, detail: str):
        super().__init__(f"{what} failed: {detail.strip().splitlines()[-1] if detail.strip() else 'no output'}", EXIT_FAILED)
        self.detail = detail


class DatabaseHost(Protocol):
    """The operations a backup command needs from a stack."""

    def pgbackrest(self, *args: str) -> str:
        """Run `pgbackrest --stanza=main ARGS` beside the cluster; return stdout, raise ToolFailed."""

    def stop_database(self) -> None: ...

    def before_restore(self) -> None:
        """With the database stopped, make the repository to restore from reachable where
        PostgreSQL's recovery will fetch WAL from it (a clone adopts its source's)."""

    def after_restore(self) -> None:
        """Once the database has promoted, make its own repository take its archive and backups
        (a clone restored from its source's path in S3 starts its own stanza there)."""

    def start_database(self) -> None:
        """Start PostgreSQL and wait until recovery is over (`pg_is_in_recovery()` false): a
        server in recovery already accepts connections. Raise ToolFailed with the server's own
        last words when it stops instead (a recovery that cannot reach its target)."""

    def stop_apps(self) -> list[str]:
        """Stop the applications that use the database; return what was running."""

    def start_apps(self, names: Sequence[str]) -> None: ...


def run_tool(argv: Sequence[str], what: str, *, timeout: float = 6 * 3600, merged: bool = False) -> str:
    """Run a tool; its stdout, or with `merged` stdout and stderr as one stream in order (`docker
    logs` hands a container's stderr, where PostgreSQL logs, to its own stderr)."""
    try:
        done = subprocess.run(list(argv), stdout=subprocess.PIPE, stderr=subprocess.STDOUT if merged else subprocess.PIPE,
                              text=True, timeout=timeout, check=False)
    except FileNotFoundError:
        raise CliError(f"{argv[0]} is not installed", EXIT_FAILED) from None
    except subprocess.TimeoutExpired:
        raise ToolFailed(what, f"no answer after {timeout:.0f}s") from None
    if done.returncode != 0:
        raise ToolFailed(what, done.stderr or done.stdout)
    return done.stdout


# --- pgBackRest's answers ---------------------------------------------------------------------


@dataclass(frozen=True)
class Backup:
    label: str
    kind: str
    started: datetime
    finished: datetime
    size: int  # bytes in the repository (compressed)
    database_size: int


def parse_info(text: str) -> tuple[list[Backup], str | None, str | None]:
    """`pgbackrest info --output=json` -> (backups newest first, oldest WAL, newest WAL)."""
    try:
        document = json.loads(text)
    except json.JSONDecodeError:
        raise ToolFailed("pgbackrest info", "its answer is not JSON") from None
    stanza = next((s for s in document if s.get("name") == STANZA), None)
    if stanza is None:
        return [], None, None
    backups = []
    for entry in stanza.get("backup") or []:
        if entry.get("error"):
            continue  # a backup pgBackRest found damaged is not one to offer
        stamp = entry["timestamp"]
        backups.append(Backup(
            label=entry["label"], kind=entry["type"],
            started=datetime.fromtimestamp(stamp["start"], timezone.utc),
            finished=datetime.fromtimestamp(stamp["stop"], timezone.utc),
            size=int(entry["info"]["repository"]["delta"]), database_size=int(entry["info"]["size"]),
        ))
    backups.sort(key=lambda b: b.finished, reverse=True)
    archives = [a for a in stanza.get("archive") or [] if a.get("min")]
    oldest = min((a["min"] for a in archives), default=None)
    newest = max((a["max"] for a in archives), default=None)
    return backups, oldest, newest


def human_size(size: int) -> str:
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def human_age(seconds: float) -> str:
    seconds = max(0, int(seconds))
    days, rest = divmod(seconds, 86_400)
    hours, rest = divmod(rest, 3600)
    minutes = rest // 60
    if days:
        return f"{days}d {hours}h"
    if hours:
        return f"{hours}h {minutes}m"
    return f"{minutes}m {rest % 60}s"


def parse_time(text: str, now: datetime | None = None) -> datetime:
    """An ISO 8601 instant with its offset (`2026-11-30T14:05:00Z`), in the past."""
    try:
        value = datetime.fromisoformat(text.strip().replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise CliError(f"--time {text!r}: not an ISO 8601 time (e.g. 2026-11-30T14:05:00Z)", EXIT_REFUSED) from None
    if value.tzinfo is None:
        raise CliError(f"--time {text!r}: give the offset (Z or +01:00): a bare time is ambiguous", EXIT_REFUSED)
    if value > (now or datetime.now(timezone.utc)):
        raise CliError(f"--time {text!r} is in the future", EXIT_REFUSED)
    return value.astimezone(timezone.utc)


def pgbackrest_time(value: datetime) -> str:
    """A target time both pgBackRest (to pick the backup set) and PostgreSQL read the same way."""
    return value.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%S.%f") + "+00"


def wait_until(check, timeout: float, interval: float = 0.5) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(interval)
    return False
