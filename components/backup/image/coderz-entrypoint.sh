#!/bin/sh
# Runs before the official image's docker-entrypoint.sh. A data folder made by an alpine-based
# PostgreSQL image (its postgres user is uid 70; Debian's is 999) must not be started here: the
# official entrypoint would hand it to uid 999 and start it, and PostgreSQL would then read text
# indexes sorted by musl's collation with glibc's, which silently breaks them. Moving a cluster
# from the alpine image to this one is a dump and a restore (README, Backups).
set -eu
if [ "${1:-}" = postgres ] && [ -s "${PGDATA:-/nonexistent}/PG_VERSION" ] \
    && [ "$(stat -c %u "$PGDATA")" = 70 ]; then
  echo "coderz: $PGDATA holds a cluster made by an alpine PostgreSQL image (owner uid 70): refusing to" \
    "start it on this Debian-based image (musl and glibc sort text differently, so its indexes would" \
    "be wrong). Dump it with the alpine image and restore the dump into a fresh volume." >&2
  exit 64
fi
exec docker-entrypoint.sh "$@"
