#!/bin/bash
# The backup sidecar's schedule (components/backup): a full backup weekly on $FULL_DAY, a
# differential one every other day, both at $HOUR_UTC; after each, the Unix time of the
# newest good backup in the repository is written to $METRICS_DIR/metrics.txt, which busybox
# httpd serves to Prometheus on $METRICS_PORT (the monitoring tier's backup-age alert).
# Usage: backup-loop.sh [loop | once full|diff | metric]
set -euo pipefail

STANZA=${STANZA:-main}
METRIC_FILE=${METRICS_DIR:?METRICS_DIR is required}/metrics.txt
METRIC=coderz_backup_last_success_timestamp_seconds

log() { printf '%s backup: %s\n' "$(date -u +%FT%TZ)" "$*" >&2; }

# The newest good backup, from the repository itself (not from this script's memory): a
# sidecar restart, or a backup taken by `coderz backup`, is reported the same way.
write_metric() {
  local info last tmp
  info=$(pgbackrest --stanza="$STANZA" --output=json info) || return 1
  last=$(jq -r '[.[0].backup[]? | select((.error // false) | not) | .timestamp.stop] | max // empty' <<<"$info")
  [ -n "$last" ] || { log "no backup in the repository yet"; return 0; }
  tmp="$METRIC_FILE.$$"
  {
    echo "# HELP $METRIC Unix time the newest good backup in the repository finished."
    echo "# TYPE $METRIC gauge"
    echo "$METRIC{stanza=\"$STANZA\"} $last"
  } >"$tmp"
  mv "$tmp" "$METRIC_FILE"
}

# pgBackRest expires what falls out of the retention window after every successful backup.
run_backup() {
  log "starting a $1 backup"
  pgbackrest --stanza="$STANZA" --type="$1" backup
  write_metric
  log "$1 backup done"
}

has_backup() {
  pgbackrest --stanza="$STANZA" --output=json info | jq -e '(.[0].backup // []) | length > 0' >/dev/null
}

case "${1:-loop}" in
  once)
    run_backup "${2:-full}"
    ;;
  metric)
    write_metric
    ;;
  loop)
    : "${FULL_DAY:?}" "${HOUR_UTC:?}" "${METRICS_PORT:?}"
    # An empty exposition until the first backup: the scrape works, the metric is absent.
    [ -f "$METRIC_FILE" ] || : >"$METRIC_FILE"
    busybox httpd -f -p "$METRICS_PORT" -h "$METRICS_DIR" &
    httpd=$!
    # docker stop: stop the server and leave at once (sleep runs in the background for that).
    trap 'kill "$httpd" 2>/dev/null; exit 0' TERM INT
    trap 'kill "$httpd" 2>/dev/null' EXIT
    until pg_isready -q; do sleep 2 & wait $!; done
    # Idempotent: creates the stanza once, checks it matches the cluster afterwards.
    pgbackrest --stanza="$STANZA" stanza-create
    has_backup || run_backup full || log "first full backup FAILED"
    write_metric || log "cannot read the repository"
    done_on=""
    while true; do
      today=$(date -u +%F)
      if [ "$((10#$(date -u +%H)))" -eq "$HOUR_UTC" ] && [ "$today" != "$done_on" ]; then
        kind="diff"
        [ "$(date -u +%a | tr '[:upper:]' '[:lower:]')" = "$FULL_DAY" ] && kind=full
        # A failed run is retried next minute within the hour; the age alert covers the rest.
        if run_backup "$kind"; then done_on=$today; else log "$kind backup FAILED"; fi
      fi
      sleep 60 &
      wait $!
    done
    ;;
  *)
    echo "usage: $0 [loop | once full|diff | metric]" >&2
    exit 2
    ;;
esac
