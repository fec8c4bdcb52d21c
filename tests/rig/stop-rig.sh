#!/usr/bin/env bash
# stop-rig.sh - stop the processes that start-rig.sh started, and only those:
# each is found through its pid file under $RIG_DIR/run and is signalled only
# if that pid still runs the command start-rig.sh launched.  Each component
# was started in a session of its own, so its process group is signalled too
# (that group holds nothing but the component and its children).  Never
# matches processes by name.
#
# Then the rig's own PostgreSQL cluster in $RIG_DIR/pg (BuildGrid 0.3+ only;
# start-rig.sh started it with tests/pg/start-pg.sh), through pg_ctl and that
# cluster's data directory; its data is kept for the next start
# (RIG_KEEP_PG=0 removes $RIG_DIR/pg as well).  Clusters elsewhere (the test
# suite's $PG_DIR) are never touched.
#
# Environment: RIG_DIR (default /tmp/rbe-proof-rig), RIG_STOP_TIMEOUT (default 15 s),
# RIG_KEEP_PG (default 1).
set -uo pipefail

RIG_DIR="${RIG_DIR:-/tmp/rbe-proof-rig}"
RIG_STOP_TIMEOUT="${RIG_STOP_TIMEOUT:-15}"
RUN="$RIG_DIR/run"
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

say() { printf 'stop-rig: %s\n' "$*" >&2; }

running() {  # pid marker -> true while the pid runs our command (zombies count as gone)
    local pid="$1" marker="$2" state
    [ -r "/proc/$pid/stat" ] || return 1
    state="$(sed -e 's/^.*) //' "/proc/$pid/stat" | cut -d' ' -f1)"
    [ "$state" != Z ] || return 1
    tr '\0' ' ' < "/proc/$pid/cmdline" 2>/dev/null | grep -qF -- "$marker"
}

# stop_one NAME MARKER [SIGNAL [GROUP]]: SIGNAL defaults to TERM; GROUP=yes
# (default) also signals the component's process group.
stop_one() {
    local name="$1" marker="$2" sig="${3:-TERM}" group="${4:-yes}" pidfile="$RUN/$1.pid" pid pgid i
    if [ ! -s "$pidfile" ]; then
        return 0
    fi
    pid="$(cat "$pidfile")"
    if ! running "$pid" "$marker"; then
        say "$name: pid $pid is not running (stale pid file removed)"
        rm -f "$pidfile"
        return 0
    fi
    pgid="$(sed -e 's/^.*) //' "/proc/$pid/stat" | cut -d' ' -f3)"  # state ppid pgrp
    say "$name: sending $sig to pid $pid"
    kill -"$sig" "$pid" 2>/dev/null
    # Only signal the group when the component leads it (setsid in start-rig.sh).
    [ "$group" = yes ] && [ "$pgid" = "$pid" ] && kill -"$sig" -- "-$pid" 2>/dev/null
    for i in $(seq $((RIG_STOP_TIMEOUT * 10))); do
        running "$pid" "$marker" || break
        sleep 0.1
    done
    if running "$pid" "$marker"; then
        say "$name: still running after ${RIG_STOP_TIMEOUT}s, sending KILL"
        kill -KILL "$pid" 2>/dev/null
        [ "$pgid" = "$pid" ] && kill -KILL -- "-$pid" 2>/dev/null
        sleep 0.5
    fi
    if running "$pid" "$marker"; then
        say "$name: pid $pid would not stop"
        return 1
    fi
    rm -f "$pidfile"
    say "$name: stopped"
}

rc=0
# Bot first, so it does not log reconnect errors while the server goes away.
stop_one bot "rig-bot.py" || rc=1
stop_one server "bgd server start" || rc=1
# The PostgreSQL cluster only once BuildGrid is gone (it holds connections).
if [ "$rc" = 0 ] && [ -s "$RIG_DIR/pg/data/PG_VERSION" ]; then
    if [ "${RIG_KEEP_PG:-1}" = 0 ]; then
        bash "$HERE/../pg/stop-pg.sh" "$RIG_DIR/pg" || rc=1
    else
        bash "$HERE/../pg/stop-pg.sh" "$RIG_DIR/pg" --keep || rc=1
    fi
fi
[ "$rc" != 0 ] || rm -f "$RUN/rig.env"
exit $rc
