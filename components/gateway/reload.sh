#!/bin/sh
# gateway-reload ROOT PIDFILE NGINX [ARG...]
#
# Installs the gateway's config files into the running nginx without restarting it. Standard
# input is the base64 text of a gzipped tar whose paths are relative to ROOT (components/
# gateway/reload.py writes it). The files are put in place, then `NGINX [ARG...] -t` checks
# the whole config as nginx will load it:
#   - it fails: every file is put back as it was, nginx's message goes to stderr, exit 1. The
#     running nginx never read the candidate (it reads files on start and reload only).
#   - it passes: `NGINX [ARG...] -s reload`; the master starts workers on the new files while
#     the old workers finish the requests they hold, so no request is dropped. A master that
#     cannot apply a config `-t` passed (a port it cannot bind; a Lua error: `nginx -t` does not
#     run init_by_lua) keeps the old one and starts
#     no worker: the script waits (GATEWAY_RELOAD_WAIT_S, 10 s) for a new worker of the master
#     in PIDFILE; without one it puts the old files back too, and exits 1.
# Run inside the gateway container by `docker exec -i`; POSIX sh, busybox tools.
set -eu

root=${1:?usage: gateway-reload ROOT PIDFILE NGINX [ARG...]}
pidfile=${2:?usage: gateway-reload ROOT PIDFILE NGINX [ARG...]}
shift 2
if [ "$#" -eq 0 ]; then
  echo "gateway-reload: no nginx command" >&2
  exit 2
fi

work=$(mktemp -d "$root/.gateway-reload.XXXXXX")
state=unpacking

# Put back what was there before (or remove what was not), file by file.
restore() {
  while IFS= read -r file; do
    if [ -f "$work/old/$file" ]; then
      cp -p "$work/old/$file" "$root/$file.gateway-reload"
      mv -f "$root/$file.gateway-reload" "$root/$file"
    else
      rm -f "$root/$file"
    fi
  done < "$work/files"
}

# The pids of the master's children (its workers), one a line.
workers() {
  cat /proc/[0-9]*/stat 2>/dev/null | awk -v master="$1" '$4 == master { print $1 }' | sort
}

finish() {
  status=$?
  # Stopped halfway through installing (a full disk, a lost session): nothing half-done stays.
  if [ "$state" = installing ]; then
    restore || status=3
  fi
  rm -rf "$work"
  exit "$status"
}
trap finish EXIT

mkdir "$work/new" "$work/old"
base64 -d | tar -xzf - -C "$work/new"
if [ -n "$(cd "$work/new" && find . ! -type f ! -type d)" ]; then
  echo "gateway-reload: the archive holds something other than files and folders" >&2
  exit 2
fi
(cd "$work/new" && find . -type f | sed 's|^\./||' | sort) > "$work/files"
if [ ! -s "$work/files" ]; then
  echo "gateway-reload: no files on stdin" >&2
  exit 2
fi

while IFS= read -r file; do
  if [ -f "$root/$file" ]; then
    mkdir -p "$(dirname "$work/old/$file")"
    cp -p "$root/$file" "$work/old/$file"
  fi
done < "$work/files"

state=installing
while IFS= read -r file; do
  mkdir -p "$(dirname "$root/$file")"
  # a copy beside the target, then a rename: nginx never opens a half-written file
  cp -p "$work/new/$file" "$root/$file.gateway-reload"
  mv -f "$root/$file.gateway-reload" "$root/$file"
done < "$work/files"

if ! check=$("$@" -t 2>&1); then
  restore
  state=restored
  printf '%s\n' "$check" >&2
  echo "gateway-reload: the new config fails nginx -t; the running gateway keeps its config" >&2
  exit 1
fi
master=$(cat "$pidfile")
workers "$master" > "$work/workers"
"$@" -s reload
tries=$((${GATEWAY_RELOAD_WAIT_S:-10} * 10))
until workers "$master" | grep -qvxF -f "$work/workers"; do
  tries=$((tries - 1))
  if [ "$tries" -le 0 ]; then
    echo "gateway-reload: nginx could not apply the new config (see its error log);" \
      "the running gateway keeps its config" >&2
    exit 1
  fi
  sleep 0.1
done
state=installed
echo "gateway-reload: $(wc -l < "$work/files") files installed, config checked, nginx reloaded"
