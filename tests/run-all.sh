#!/usr/bin/env bash
# tests/run-all.sh - rbe-proof's whole test suite, on a fresh Debian bookworm
# machine too:
#   1. tests/rig/install-deps.sh     apt + BuildGrid venv (only what is missing)
#   2. tests/rig/start-rig.sh        BuildGrid + bot on 127.0.0.1 ($RIG_PORT, 50051); BuildGrid
#                                    0.4.x keeps its jobs in a cluster of its own, $RIG_DIR/pg
#   3. cargo test --workspace --all-targets --no-fail-fast, then cargo test --workspace --doc
#   4. run_extras                    bounded fuzz runs (the benchmarks run as smoke runs in step 3)
#   5. tests/rig/stop-rig.sh         always (EXIT trap), if this script started the rig
# Next to the rig: tests/pg/start-pg.sh (a throwaway PostgreSQL cluster in $PG_DIR,
# default /tmp/rbe-proof-pg), stopped and removed by tests/pg/stop-pg.sh at exit.
# Exit code: cargo's (the first failing cargo command's), else run_extras'.
#
# The tests see (exported):
#   PROOF_RIG=1                      the rig is up: real-Bazel end-to-end tests run
#   RIG_DIR RIG_REMOTE_EXECUTOR RIG_INSTANCE_NAMES RIG_BOT_JOURNAL
#   RIG_BUILDGRID_VERSION            from $RIG_DIR/run/rig.env (0.3+: also
#   RIG_MAX_LIST_OPERATIONS_PAGE_SIZE  the server's ListOperations maximum, RIG_MAX_PAGE_SIZE)
#   PROOF_REPO_ROOT                  this checkout
#   PROOF_SPOKE_DIR                  examples/spoke (copy it, never build in place)
#   PROOF_BAZELRC                    bazel/proof.bazelrc
#   PROOF_COPY_SPOKE                 tests/rig/copy-spoke.sh DEST
#   PROOF_RUN_BAZEL                  tests/rig/run-bazel.sh WS [STARTUP...] -- ARGS...
#   RUN_BAZEL_MAX_IDLE               idle Bazel servers exit after this (60 s here)
#   PROOF_PG_URL PROOF_PG_DIR        the test PostgreSQL cluster, from $PG_DIR/pg.env
# Extra arguments are appended to both cargo test commands, e.g.
#   bash tests/run-all.sh -- --test-threads=1
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="$(pwd)"

say() { printf 'run-all: %s\n' "$*" >&2; }
export RIG_DIR="${RIG_DIR:-/tmp/rbe-proof-rig}"

# ----------------------------------------------------------------- install
bash tests/rig/install-deps.sh

# --------------------------------------------------------------- rig start
RIG_STARTED=0
stop_rig() {
    if [ "$RIG_STARTED" = 1 ]; then
        say "stopping the rig"
        bash tests/rig/stop-rig.sh || say "warning: stop-rig.sh failed"
        RIG_STARTED=0
    fi
}
PG_STARTED=0
stop_pg() {
    if [ "$PG_STARTED" = 1 ]; then
        bash tests/pg/stop-pg.sh || say "warning: stop-pg.sh failed"
        PG_STARTED=0
    fi
}
trap 'stop_rig; stop_pg' EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

start_log="$(mktemp -t run-all-start.XXXXXX)"
# A small ListOperations maximum (BuildGrid's max-list-operations-page-size):
# every real build's executor ledger then spans several pages, as on a
# deployment whose operator set it low (issue 25).
export RIG_MAX_PAGE_SIZE="${RIG_MAX_PAGE_SIZE:-5}"
RIG_STARTED=1   # from here on a partial start is cleaned up too
start_rc=0
bash tests/rig/start-rig.sh --no-install 2> "$start_log" || start_rc=$?
cat "$start_log" >&2
if grep -q "already running" "$start_log"; then
    say "using a rig that was already running (not stopping it afterwards)"
    RIG_STARTED=0
fi
if [ "$start_rc" != 0 ]; then
    rm -f "$start_log"
    say "ERROR: the rig did not start"
    exit 1
fi
rm -f "$start_log"
set -a
# shellcheck disable=SC1091
. "$RIG_DIR/run/rig.env"
set +a
export PROOF_RIG=1
export PROOF_REPO_ROOT="$ROOT"
export PROOF_SPOKE_DIR="$ROOT/examples/spoke"
export PROOF_BAZELRC="$ROOT/bazel/proof.bazelrc"
export PROOF_COPY_SPOKE="$ROOT/tests/rig/copy-spoke.sh"
export PROOF_RUN_BAZEL="$ROOT/tests/rig/run-bazel.sh"
export RUN_BAZEL_MAX_IDLE="${RUN_BAZEL_MAX_IDLE:-60}"

# ------------------------------------------------------------- PostgreSQL
export PG_DIR="${PG_DIR:-/tmp/rbe-proof-pg}"
PG_STARTED=1
bash tests/pg/start-pg.sh "$PG_DIR" > /dev/null || { say "ERROR: PostgreSQL did not start"; exit 1; }
set -a
# shellcheck disable=SC1091
. "$PG_DIR/pg.env"
set +a

# ------------------------------------------------------------------ extras
# The benchmarks already ran as smoke runs inside `cargo test --all-targets`
# (without `--bench` they pick small sizes; `cargo bench` runs them in full).
# Here: a bounded run of every fuzz target (FUZZ_SECONDS each, default 15;
# FUZZ_SECONDS=0 skips it, and says so).
run_extras() {
    local secs="${FUZZ_SECONDS:-15}"
    if [ "$secs" = 0 ]; then
        say "fuzz runs SKIPPED (FUZZ_SECONDS=0)"
        return 0
    fi
    local t0=$(date +%s)
    bash tests/fuzz/run.sh "$secs" || return $?
    say "fuzz runs finished in $(( $(date +%s) - t0 ))s"
}

# -------------------------------------------------------------------- tests
cargo_rc=0
t=$(date +%s)
test_log="$(mktemp -t run-all-tests.XXXXXX)"
say "cargo test --workspace --all-targets --no-fail-fast $*"
cargo test --workspace --all-targets --no-fail-fast "$@" 2>&1 | tee "$test_log" || cargo_rc=${PIPESTATUS[0]}
if [ "$cargo_rc" = 0 ]; then
    say "cargo test --workspace --doc $*"
    cargo test --workspace --doc "$@" 2>&1 | tee -a "$test_log" || cargo_rc=${PIPESTATUS[0]}
fi
say "cargo tests finished with exit code $cargo_rc in $(( $(date +%s) - t ))s"

extras_rc=0
run_extras || extras_rc=$?
[ "$extras_rc" = 0 ] || say "extras failed with exit code $extras_rc"

# One closing line for the whole suite: the sum of every `test result:` line.
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i; if ($(i+1) ~ /^ignored/) g += $i } }
     END { printf "tests: %d passed, %d failed, %d skipped\n", p, f, g }' "$test_log"
rm -f "$test_log"

if [ "$cargo_rc" != 0 ]; then exit "$cargo_rc"; fi
exit "$extras_rc"
