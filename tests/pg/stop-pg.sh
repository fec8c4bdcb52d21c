#!/usr/bin/env bash
# stop-pg.sh [DIR] [--keep] - stops the test cluster that start-pg.sh started in DIR
# (default $PG_DIR or /tmp/rbe-proof-pg) and removes DIR, unless --keep (then
# start-pg.sh DIR starts it again, with its data, on the same port).
set -euo pipefail
DIR="${PG_DIR:-/tmp/rbe-proof-pg}"
KEEP=0
for a in "$@"; do
    case "$a" in
        --keep) KEEP=1 ;;
        *) DIR="$a" ;;
    esac
done
OS_USER="${PG_OS_USER:-nobody}"
say() { printf 'stop-pg: %s\n' "$*" >&2; }
BIN="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)"
as_pg() {
    if [ "$(id -u)" = 0 ]; then runuser -u "$OS_USER" -- "$@"; else "$@"; fi
}
if [ -s "$DIR/data/PG_VERSION" ] && [ -n "$BIN" ]; then
    if as_pg "$BIN/pg_ctl" -D "$DIR/data" status > /dev/null 2>&1; then
        as_pg "$BIN/pg_ctl" -D "$DIR/data" -m fast -w -t 60 stop > /dev/null
        say "stopped ($DIR)"
    fi
fi
if [ "$KEEP" = 0 ] && [ -d "$DIR" ]; then
    rm -rf "$DIR"
    say "removed $DIR"
fi
