#!/usr/bin/env bash
# start-rig.sh - install (when missing) and start rbe-proof's loopback remote
# execution rig for Bazel: a BuildGrid 0.2.53 server (CAS, ByteStream,
# ActionCache, Execution, Operations, Bots; job database in SQLite) plus
# rig-bot.py, a bot that runs the leased actions on this host.  Everything
# listens on 127.0.0.1 only.  Prints the --remote_executor flag when ready.
#
# Usage: start-rig.sh [--no-install | --install-only]
#   --no-install    fail instead of installing anything that is missing
#   --install-only  install what is missing (apt: bazel-bootstrap,
#                   python3-venv; pip: buildgrid into $RIG_DIR/venv), start nothing
#
# Environment (all optional):
#   RIG_DIR            venv, state, logs, pid files  (default /tmp/rbe-proof-rig)
#   RIG_PORT           loopback TCP port of BuildGrid          (default 50051)
#   RIG_BOT_CAPACITY   actions the bot runs at the same time   (default 2)
#   RIG_START_TIMEOUT  seconds to wait for each component      (default 90)
#   BUILDGRID_VERSION  PyPI version (default 0.2.53; only 0.2.x works here,
#                      later versions need PostgreSQL)
#
# REAPI instances served: "" (Bazel's default) and "main"
# (--remote_instance_name=main); one bot serves both.
# On success $RIG_DIR/run/rig.env holds shell assignments for tests
# (RIG_REMOTE_EXECUTOR, RIG_INSTANCE_NAMES, RIG_BOT_JOURNAL, ...).
# Stop everything again with stop-rig.sh (same RIG_DIR).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
RIG_DIR="${RIG_DIR:-/tmp/rbe-proof-rig}"
RIG_PORT="${RIG_PORT:-50051}"
RIG_BOT_CAPACITY="${RIG_BOT_CAPACITY:-2}"
BUILDGRID_VERSION="${BUILDGRID_VERSION:-0.2.53}"
RIG_START_TIMEOUT="${RIG_START_TIMEOUT:-90}"
HOST=127.0.0.1
PYTHON=/usr/bin/python3

VENV="$RIG_DIR/venv"
STATE="$RIG_DIR/state"
RUN="$RIG_DIR/run"

MODE=start
INSTALL=1
for arg in "$@"; do
    case "$arg" in
        --no-install) INSTALL=0 ;;
        --install-only) MODE=install ;;
        -h|--help) sed -n '2,27p' "$0"; exit 0 ;;
        *) echo "start-rig: unknown argument: $arg" >&2; exit 2 ;;
    esac
done

say() { printf 'start-rig: %s\n' "$*" >&2; }
die() { say "ERROR: $*"; exit 1; }

case "$BUILDGRID_VERSION" in
    0.2.*) ;;
    *) die "BUILDGRID_VERSION=$BUILDGRID_VERSION: this rig supports BuildGrid 0.2.x (SQLite) only" ;;
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
    if [ "${#need_apt[@]}" -gt 0 ]; then
        say "apt-get install ${need_apt[*]}"
        mkdir -p "$RIG_DIR"
        as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
        as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
            "${need_apt[@]}" > "$RIG_DIR/apt.log" 2>&1 \
            || { cat "$RIG_DIR/apt.log" >&2; die "apt-get install failed"; }
    fi
    if [ "$(venv_version)" != "$BUILDGRID_VERSION" ]; then
        say "creating $VENV ($("$PYTHON" --version 2>&1)) with buildgrid==$BUILDGRID_VERSION"
        mkdir -p "$RIG_DIR"
        rm -rf "$VENV"
        "$PYTHON" -m venv "$VENV"
        "$VENV/bin/pip" install -q --disable-pip-version-check "buildgrid==$BUILDGRID_VERSION" \
            || die "pip could not install buildgrid==$BUILDGRID_VERSION"
    fi
fi
T1=$(date +%s)
[ -x "$VENV/bin/bgd" ] || die "no BuildGrid in $VENV (run without --no-install)"
INSTALLED="$(venv_version)"
[ "$INSTALLED" = "$BUILDGRID_VERSION" ] || die "$VENV has buildgrid '$INSTALLED', not $BUILDGRID_VERSION (run without --no-install)"
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
rm -f "$STATE"/jobs.sqlite3*
"$VENV/bin/python" - "$STATE/jobs.sqlite3" <<'PY'
import sys
from sqlalchemy import create_engine
from buildgrid.server.sql.models import Base
Base.metadata.create_all(create_engine("sqlite:///" + sys.argv[1]))
PY
sed -e "s#@LISTEN@#$HOST:$RIG_PORT#" -e "s#@STATE_DIR@#$STATE#g" \
    "$HERE/buildgrid.yml.in" > "$STATE/buildgrid.yml"

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
} > "$RUN/rig.env"
T2=$(date +%s)
say "install/check took $((T1 - T0))s, start took $((T2 - T1))s; logs in $RUN"
echo "--remote_executor=grpc://$HOST:$RIG_PORT"
