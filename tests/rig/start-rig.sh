#!/usr/bin/env bash
# start-rig.sh - install (when missing) and start rbe-proof's loopback remote
# execution rig for Bazel: a BuildGrid 0.4.x server (CAS, ByteStream,
# ActionCache, Execution, Operations, Bots) whose scheduler keeps its jobs in
# a PostgreSQL cluster of its own ($RIG_DIR/pg, tests/pg/start-pg.sh), plus
# rig-bot.py, a bot that runs the leased actions on this host.  Everything
# listens on 127.0.0.1 only.  Prints the --remote_executor flag when ready.
#
# Usage: start-rig.sh [--no-install | --install-only]
#   --no-install    fail instead of installing anything that is missing
#   --install-only  install what is missing (apt: bazel-bootstrap,
#                   python3-venv, postgresql; pip: buildgrid and psycopg2-binary
#                   into $RIG_DIR/venv, plus securesystemslib and
#                   in-toto-attestation, with which the tests check proofs
#                   and verification summaries), start nothing
#
# Environment (all optional):
#   RIG_DIR            venv, state, logs, pid files  (default /tmp/rbe-proof-rig)
#   RIG_PORT           loopback TCP port of BuildGrid          (default 50051)
#   RIG_BOT_CAPACITY   actions the bot runs at the same time   (default 2)
#   RIG_START_TIMEOUT  seconds to wait for each component      (default 90)
#   RIG_MAX_PAGE_SIZE  max-list-operations-page-size of both instances
#                      (default 1000, BuildGrid's own default; 0.3+ only)
#   BUILDGRID_VERSION  PyPI version (default 0.4.4, tested; 0.3+/0.4.x run on
#                      PostgreSQL with buildgrid.yml.in; 0.2.x, e.g. 0.2.53,
#                      on SQLite with buildgrid-0.2.yml.in)
#
# REAPI instances served: "" (Bazel's default) and "main"
# (--remote_instance_name=main); one bot serves both.
# On success $RIG_DIR/run/rig.env holds shell assignments for tests
# (RIG_REMOTE_EXECUTOR, RIG_INSTANCE_NAMES, RIG_BOT_JOURNAL, ...).
# Stop everything again with stop-rig.sh (same RIG_DIR): bot, server and
# the PostgreSQL cluster in $RIG_DIR/pg (its data is kept; the scheduler's
# database is dropped and created again, empty, on every start).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
RIG_DIR="${RIG_DIR:-/tmp/rbe-proof-rig}"
RIG_PORT="${RIG_PORT:-50051}"
RIG_BOT_CAPACITY="${RIG_BOT_CAPACITY:-2}"
BUILDGRID_VERSION="${BUILDGRID_VERSION:-0.4.4}"
RIG_START_TIMEOUT="${RIG_START_TIMEOUT:-90}"
RIG_MAX_PAGE_SIZE="${RIG_MAX_PAGE_SIZE:-1000}"
HOST=127.0.0.1
PYTHON=/usr/bin/python3

VENV="$RIG_DIR/venv"
STATE="$RIG_DIR/state"
RUN="$RIG_DIR/run"
PG_DIR_RIG="$RIG_DIR/pg"        # the rig's own PostgreSQL cluster (0.3+)
PG_DB=buildgrid

MODE=start
INSTALL=1
for arg in "$@"; do
    case "$arg" in
        --no-install) INSTALL=0 ;;
        --install-only) MODE=install ;;
        -h|--help) sed -n '2,32p' "$0"; exit 0 ;;
        *) echo "start-rig: unknown argument: $arg" >&2; exit 2 ;;
    esac
done

say() { printf 'start-rig: %s\n' "$*" >&2; }
die() { say "ERROR: $*"; exit 1; }

# 0.2.x keeps its jobs in SQLite; 0.3.0 and later refuse SQLite and need
# PostgreSQL, through psycopg2 (not a dependency of the buildgrid package).
case "$BUILDGRID_VERSION" in
    0.2.*) DB=sqlite; CONFIG_IN="$HERE/buildgrid-0.2.yml.in"; PIP_EXTRA=() ;;
    0.[3-9].*) DB=postgresql; CONFIG_IN="$HERE/buildgrid.yml.in"; PIP_EXTRA=(psycopg2-binary) ;;
    *) die "BUILDGRID_VERSION=$BUILDGRID_VERSION: this rig knows BuildGrid 0.2.x (SQLite) and 0.3+/0.4.x (PostgreSQL); tested: 0.4.4, 0.2.53" ;;
esac
case "$RIG_MAX_PAGE_SIZE" in
    ''|*[!0-9]*|0) die "RIG_MAX_PAGE_SIZE=$RIG_MAX_PAGE_SIZE: want a positive integer" ;;
esac

# Run as root directly, otherwise through sudo when there is one.
as_root() {
    if [ "$(id -u)" = 0 ]; then "$@"
    elif command -v sudo >/dev/null 2>&1; then sudo "$@"
    else die "need root for: $*"
    fi
}

# A pid file names a live process of ours only if the process exists, is not
# a zombie, and its command line still contains the expected marker.
alive() {
    local pidfile="$1" marker="$2" pid state
    [ -s "$pidfile" ] || return 1
    pid="$(cat "$pidfile")"
    [ -r "/proc/$pid/stat" ] || return 1
    state="$(sed -e 's/^.*) //' "/proc/$pid/stat" | cut -d' ' -f1)"
    [ "$state" != Z ] || return 1
    tr '\0' ' ' < "/proc/$pid/cmdline" | grep -qF -- "$marker"
}

# Start "$@" detached in a session of its own.  The process writes its own pid
# and then execs the command, so the pid file names exactly that process.
launch() {
    local name="$1"; shift
    rm -f "$RUN/$name.pid"
    setsid bash -c 'echo $$ > "$0"; exec "$@"' "$RUN/$name.pid" "$@" \
        > "$RUN/$name.log" 2>&1 < /dev/null &
    local i
    for i in $(seq 50); do [ -s "$RUN/$name.pid" ] && return 0; sleep 0.1; done
    die "$name did not start (see $RUN/$name.log)"
}

# wait_until NAME PIDFILE MARKER COMMAND... : poll COMMAND until it succeeds,
# giving up when the component dies or RIG_START_TIMEOUT passes.
wait_until() {
    local name="$1" pidfile="$2" marker="$3"; shift 3
    local deadline=$(( $(date +%s) + RIG_START_TIMEOUT ))
    until "$@" >/dev/null 2>&1; do
        alive "$pidfile" "$marker" || { tail -30 "$RUN/$name.log" >&2; die "$name exited"; }
        [ "$(date +%s)" -lt "$deadline" ] || die "$name not ready within ${RIG_START_TIMEOUT}s (see $RUN/$name.log)"
        sleep 0.2
    done
}

# A port is free when nothing accepts connections on it and it can be bound
# (SO_REUSEADDR, so that TIME-WAIT leftovers of a previous run don't count).
port_free() {
    "$PYTHON" - "$HOST" "$1" <<'PY'
import socket, sys
addr = (sys.argv[1], int(sys.argv[2]))
with socket.socket() as probe:
    probe.settimeout(1)
    if probe.connect_ex(addr) == 0:
        sys.exit(1)
with socket.socket() as s:
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        s.bind(addr)
    except OSError:
        sys.exit(1)
PY
}

# The PostgreSQL driver BuildGrid 0.3+ needs (psycopg2) imports in the venv.
venv_has_extras() {
    [ "$DB" = postgresql ] || return 0
    "$VENV/bin/python" -c 'import psycopg2' >/dev/null 2>&1
}

# What the tests import from the venv to check proofs with standard tools
# (tests/tests/vsa_rig.rs, tests/interop/check_attestation.py): DSSE with securesystemslib, in-toto Statements
# with the in-toto attestation bindings. Added to an existing venv in place.
TEST_PIP=(securesystemslib in-toto-attestation)
venv_has_test_pkgs() {
    "$VENV/bin/python" -c 'import securesystemslib, in_toto_attestation' >/dev/null 2>&1
}

venv_version() {
    [ -x "$VENV/bin/python" ] || return 0
    "$VENV/bin/python" -c 'import importlib.metadata as m; print(m.version("buildgrid"))' 2>/dev/null || true
}

# ---------------------------------------------------------------- install
T0=$(date +%s)
if [ "$INSTALL" = 1 ]; then
    need_apt=()
    command -v bazel >/dev/null 2>&1 || need_apt+=(bazel-bootstrap)
    [ -x "$PYTHON" ] || need_apt+=(python3)
    "$PYTHON" -c 'import ensurepip, venv' >/dev/null 2>&1 || need_apt+=(python3-venv)
    if [ "$DB" = postgresql ] && ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
        need_apt+=(postgresql)
    fi
    if [ "${#need_apt[@]}" -gt 0 ]; then
        say "apt-get install ${need_apt[*]}"
        mkdir -p "$RIG_DIR"
        as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
        as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
            "${need_apt[@]}" > "$RIG_DIR/apt.log" 2>&1 \
            || { cat "$RIG_DIR/apt.log" >&2; die "apt-get install failed"; }
    fi
    if [ "$(venv_version)" != "$BUILDGRID_VERSION" ] || ! venv_has_extras; then
        # Never pull the venv from under a running rig of this RIG_DIR.
        if alive "$RUN/server.pid" "bgd server start"; then
            die "the rig in $RIG_DIR runs BuildGrid '$(venv_version)' (pid $(cat "$RUN/server.pid")) and BUILDGRID_VERSION=$BUILDGRID_VERSION needs a new venv: stop it first (RIG_DIR=$RIG_DIR $HERE/stop-rig.sh) or use another RIG_DIR"
        fi
        say "creating $VENV ($("$PYTHON" --version 2>&1)) with buildgrid==$BUILDGRID_VERSION${PIP_EXTRA[*]+ ${PIP_EXTRA[*]}}"
        mkdir -p "$RIG_DIR"
        rm -rf "$VENV"
        "$PYTHON" -m venv "$VENV"
        "$VENV/bin/pip" install -q --disable-pip-version-check "buildgrid==$BUILDGRID_VERSION" ${PIP_EXTRA[@]+"${PIP_EXTRA[@]}"} \
            || die "pip could not install buildgrid==$BUILDGRID_VERSION ${PIP_EXTRA[*]} (network? PyPI?)"
    fi
    if ! venv_has_test_pkgs; then
        say "adding ${TEST_PIP[*]} to $VENV"
        "$VENV/bin/pip" install -q --disable-pip-version-check "${TEST_PIP[@]}" \
            || die "pip could not install ${TEST_PIP[*]} (network? PyPI?)"
    fi
fi
T1=$(date +%s)
[ -x "$VENV/bin/bgd" ] || die "no BuildGrid in $VENV (run without --no-install)"
INSTALLED="$(venv_version)"
[ "$INSTALLED" = "$BUILDGRID_VERSION" ] || die "$VENV has buildgrid '$INSTALLED', not $BUILDGRID_VERSION (run without --no-install, or set BUILDGRID_VERSION=$INSTALLED)"
venv_has_extras || die "$VENV has no psycopg2 (pip psycopg2-binary), which BuildGrid $BUILDGRID_VERSION needs for PostgreSQL (run without --no-install)"
command -v bazel >/dev/null 2>&1 || say "warning: bazel is not installed"
if [ "$MODE" = install ]; then
    say "installed: bazel ($(command -v bazel || echo missing)), buildgrid $INSTALLED in $VENV (took $((T1 - T0))s)"
    exit 0
fi

# ------------------------------------------------------------------ start
mkdir -p "$STATE" "$RUN"
if alive "$RUN/server.pid" "bgd server start" && alive "$RUN/bot.pid" "rig-bot.py"; then
    say "already running (server pid $(cat "$RUN/server.pid"), bot pid $(cat "$RUN/bot.pid"))"
    cat "$RUN/rig.env" >&2 2>/dev/null || true
    grep '^RIG_REMOTE_EXECUTOR=' "$RUN/rig.env" 2>/dev/null | sed 's/^RIG_REMOTE_EXECUTOR=/--remote_executor=/' \
        || echo "--remote_executor=grpc://$HOST:$RIG_PORT"
    exit 0
fi
if ls "$RUN"/*.pid >/dev/null 2>&1; then
    say "stale or partial rig found; stopping it first"
    RIG_DIR="$RIG_DIR" "$HERE/stop-rig.sh"
fi
port_free "$RIG_PORT" || die "$HOST:$RIG_PORT is already in use (set RIG_PORT)"

# The bot runs from a copy under $RIG_DIR/bin, so that nothing a build
# records (process command lines) names where this checkout lives.
mkdir -p "$RIG_DIR/bin"
cp "$HERE/rig-bot.py" "$RIG_DIR/bin/"

# A fresh, empty job database on every start; CAS blobs are kept.
if [ "$DB" = sqlite ]; then
    DB_URL="sqlite:///$STATE/jobs.sqlite3"
    rm -f "$STATE"/jobs.sqlite3*
    "$VENV/bin/python" - "$STATE/jobs.sqlite3" <<'PY'
import sys
from sqlalchemy import create_engine
from buildgrid.server.sql.models import Base
Base.metadata.create_all(create_engine("sqlite:///" + sys.argv[1]))
PY
else
    # The rig's own cluster (started here, stopped by stop-rig.sh), independent
    # of any cluster the test suite runs for itself (tests/run-all.sh, $PG_DIR).
    t=$(date +%s)
    bash "$HERE/../pg/start-pg.sh" "$PG_DIR_RIG" > /dev/null 2> "$RUN/pg-start.log" \
        || { cat "$RUN/pg-start.log" >&2; die "the rig's PostgreSQL ($PG_DIR_RIG) did not start (see $PG_DIR_RIG/postgres.log)"; }
    PG_PORT="$(cat "$PG_DIR_RIG/port")"
    PG_BIN="$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)"
    psql_rig() { "$PG_BIN/psql" -X -q -v ON_ERROR_STOP=1 -h "$HOST" -p "$PG_PORT" -U proof -d postgres "$@"; }
    psql_rig -c "DROP DATABASE IF EXISTS $PG_DB WITH (FORCE)" -c "CREATE DATABASE $PG_DB" \
        > "$RUN/pg-schema.log" 2>&1 \
        || { cat "$RUN/pg-schema.log" >&2; die "could not create database $PG_DB on $HOST:$PG_PORT"; }
    DB_URL="postgresql+psycopg2://proof@$HOST:$PG_PORT/$PG_DB"
    "$VENV/bin/bgd" migrate apply "$DB_URL" >> "$RUN/pg-schema.log" 2>&1 \
        || { cat "$RUN/pg-schema.log" >&2; die "bgd migrate apply $DB_URL failed"; }
    say "PostgreSQL $HOST:$PG_PORT ($PG_DIR_RIG): fresh database $PG_DB, schema migrated ($(( $(date +%s) - t ))s)"
fi
sed -e "s#@LISTEN@#$HOST:$RIG_PORT#" -e "s#@STATE_DIR@#$STATE#g" \
    -e "s#@DB_URL@#$DB_URL#g" -e "s#@MAX_PAGE_SIZE@#$RIG_MAX_PAGE_SIZE#g" \
    "$CONFIG_IN" > "$STATE/buildgrid.yml"

launch server "$VENV/bin/bgd" server start -v "$STATE/buildgrid.yml"
# Ready once GetCapabilities answers for both instance names.
capabilities_ok() {
    "$VENV/bin/python" - "$HOST:$RIG_PORT" <<'PY'
import sys, grpc
from buildgrid._protos.build.bazel.remote.execution.v2 import remote_execution_pb2 as re_pb2
from buildgrid._protos.build.bazel.remote.execution.v2 import remote_execution_pb2_grpc as re_grpc
with grpc.insecure_channel(sys.argv[1]) as channel:
    for name in ("", "main"):
        caps = re_grpc.CapabilitiesStub(channel).GetCapabilities(
            re_pb2.GetCapabilitiesRequest(instance_name=name), timeout=2)
        assert caps.execution_capabilities.exec_enabled, name
PY
}
wait_until server "$RUN/server.pid" "bgd server start" capabilities_ok
say "BuildGrid $BUILDGRID_VERSION answers on $HOST:$RIG_PORT, instances \"\" and \"main\" (pid $(cat "$RUN/server.pid"))"

launch bot "$VENV/bin/python" "$RIG_DIR/bin/rig-bot.py" \
    --remote "$HOST:$RIG_PORT" --capacity "$RIG_BOT_CAPACITY" \
    --scratch "$STATE/bot-scratch" --journal "$RUN/bot-journal.jsonl"
wait_until bot "$RUN/bot.pid" "rig-bot.py" grep -q "bot session .* created" "$RUN/bot.log"
say "bot registered (pid $(cat "$RUN/bot.pid"))"

{
    echo "RIG_DIR=$RIG_DIR"
    echo "RIG_REMOTE_EXECUTOR=grpc://$HOST:$RIG_PORT"
    echo "RIG_INSTANCE_NAMES=,main"
    echo "RIG_BOT_JOURNAL=$RUN/bot-journal.jsonl"
    echo "RIG_BUILDGRID_VERSION=$BUILDGRID_VERSION"
    [ "$DB" = sqlite ] || echo "RIG_MAX_LIST_OPERATIONS_PAGE_SIZE=$RIG_MAX_PAGE_SIZE"
} > "$RUN/rig.env"
T2=$(date +%s)
say "install/check took $((T1 - T0))s, start took $((T2 - T1))s; logs in $RUN"
echo "--remote_executor=grpc://$HOST:$RIG_PORT"
