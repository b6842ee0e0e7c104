"""A clone restored from its source's path in an S3 bucket: the steps around the restore that let
the clone go on archiving and backing up into its own path once it has promoted.

The clone's own path holds the stanza of the clone's earlier cluster (another system identifier):
after promotion its archive-push would fail forever. So, with the clone's PostgreSQL stopped, that
stanza is deleted (its backups are of the database the restore replaces, as a clone on a volume
drops them too); the restore reads the source's path (`--repo1-path` on the command line, which
pgBackRest also writes into restore_command, so recovery fetches the source's WAL); once the clone
has promoted, a new stanza is created on its own path and a full backup makes it restorable.

`DockerDatabaseHost` and the local test harness both run these steps through `S3CloneSteps`,
with their own way of running pgBackRest against the clone's own configuration.
"""

from __future__ import annotations

from typing import Callable

OwnPgbackrest = Callable[..., str]  # pgbackrest --stanza=main ARGS with the clone's own config


class S3CloneSteps:
    def __init__(self, own: OwnPgbackrest, source_path: str):
        self.own, self.source_path = own, source_path

    def from_source(self, *args: str) -> tuple[str, ...]:
        """The arguments of a pgBackRest command that reads the source's path instead."""
        return (f"--repo1-path={self.source_path}", *args)

    def before_restore(self) -> None:
        # stanza-delete asks for `pgbackrest stop` first (no archive-push or backup may run on
        # the stanza meanwhile); --force: a PostgreSQL that crashed may have left its pid file.
        self.own("stop")
        try:
            self.own("--force", "stanza-delete")
        finally:
            self.own("start")

    def after_restore(self) -> None:
        self.own("stanza-create")
        self.own("--type=full", "backup")
