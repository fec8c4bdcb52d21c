#!/usr/bin/env bash
# bench/rig-build.sh [RUNS]
#
# What --config=proof (BES with --bes_upload_mode=wait_for_upload_complete,
# plus --execution_log_binary_file) adds to the wall time of a real Bazel
# build: examples/spoke built on the loopback rig (tests/rig/start-rig.sh)
#   proof:    --config=proof, BES to a `proof serve` started here
#   baseline: the same remote-execution flags of bazel/proof.bazelrc, without
#             the BES and execution-log lines
# RUNS builds of each (default 5), alternating, after one warm-up build of
# each; every build starts from `bazel clean` and uses
# --noremote_accept_cached, so every action runs on the executor in both.
# Prints the median wall time of each, the difference and the ratio.
#
# Needs: the rig (/tmp/rbe-proof-rig/run/rig.env, or RIG_ENV=FILE) and a
# release `proof` (PROOF_BIN, default target/release/proof, built if missing).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
RUNS="${1:-5}"
RIG_ENV="${RIG_ENV:-/tmp/rbe-proof-rig/run/rig.env}"
if [ ! -f "$RIG_ENV" ]; then
    echo "rig-build: $RIG_ENV not found: start the loopback rig first (tests/rig/start-rig.sh)" >&2
    exit 2
fi
set -a; . "$RIG_ENV"; set +a
TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
PROOF="${PROOF_BIN:-$TARGET_DIR/release/proof}"
if [ ! -x "$PROOF" ]; then
    (cd "$ROOT" && cargo build --release -p proof-cli >&2)
fi

WORK="$(mktemp -d "${TMPDIR:-/tmp}/rbe-proof-rig-bench.XXXXXX")"
SERVER_PID=""
cleanup() {
    "$ROOT/tests/rig/run-bazel.sh" "$WORK/ws" -- shutdown >/dev/null 2>&1 || true
    if [ -n "$SERVER_PID" ]; then kill "$SERVER_PID" 2>/dev/null || true; wait "$SERVER_PID" 2>/dev/null || true; fi
    rm -rf "$WORK"
}
trap cleanup EXIT

"$PROOF" serve --listen 127.0.0.1:0 --store "$WORK/store" >"$WORK/serve.log" 2>&1 &
SERVER_PID=$!
ADDR=""
for _ in $(seq 200); do
    ADDR="$(sed -n 's/.*BES listening on grpc:\/\/\([0-9.:]*\).*/\1/p' "$WORK/serve.log" | head -n1)"
    [ -n "$ADDR" ] && break
    sleep 0.05
done
[ -n "$ADDR" ] || { echo "rig-build: proof serve did not start:" >&2; cat "$WORK/serve.log" >&2; exit 1; }

"$ROOT/tests/rig/copy-spoke.sh" "$WORK/ws" >/dev/null
# The baseline: every build:proof flag except BES and the execution log.
proof_lines() { sed -n 's/^build:proof[[:space:]]\{1,\}//p' "$WORK/ws/proof.bazelrc"; }
mapfile -t BASE_FLAGS < <(proof_lines | grep -v -e '^--bes_' -e '^--execution_log')
mapfile -t EXECLOG_FLAGS < <(proof_lines | grep -e '^--execution_log')
mapfile -t BES_FLAGS < <(proof_lines | grep -e '^--bes_' | grep -v -e '^--bes_backend' -e '^--bes_results_url')
BES_FLAGS+=("--bes_backend=grpc://$ADDR" --bes_results_url=)
PROOF_FLAGS=(--config=proof "--bes_backend=grpc://$ADDR" --bes_results_url=)
COMMON=(--remote_executor="$RIG_REMOTE_EXECUTOR" --noremote_accept_cached)

bazel() { RUN_BAZEL_MAX_IDLE=600 "$ROOT/tests/rig/run-bazel.sh" "$WORK/ws" -- "$@"; }

# One clean build; prints its wall seconds.
build() {
    bazel clean >/dev/null 2>&1
    local t0 t1
    t0=$(date +%s.%N)
    if ! bazel build //... "${COMMON[@]}" "$@" >"$WORK/last.log" 2>&1; then
        echo "rig-build: the build failed:" >&2; tail -30 "$WORK/last.log" >&2; exit 1
    fi
    t1=$(date +%s.%N)
    awk -v a="$t0" -v b="$t1" 'BEGIN {printf "%.3f\n", b - a}'
}

median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }

build "${BASE_FLAGS[@]}" >/dev/null   # warm-up: Bazel server, analysis
build "${PROOF_FLAGS[@]}" >/dev/null
base=(); proof=(); bes=(); xlog=()
for _ in $(seq "$RUNS"); do
    base+=("$(build "${BASE_FLAGS[@]}")")
    proof+=("$(build "${PROOF_FLAGS[@]}")")
    bes+=("$(build "${BASE_FLAGS[@]}" "${BES_FLAGS[@]}")")
    xlog+=("$(build "${BASE_FLAGS[@]}" "${EXECLOG_FLAGS[@]}")")
done
kill "$SERVER_PID"; wait "$SERVER_PID" 2>/dev/null || true; SERVER_PID=""
stored=$("$PROOF" list --store "$WORK/store" --limit 1000 2>/dev/null | grep -c -E '[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-' || true)
mb=$(median "${base[@]}"); mp=$(median "${proof[@]}")
line() { # LABEL MEDIAN RUNS...
    local label="$1" m="$2"; shift 2
    awk -v l="$label" -v m="$m" -v b="$mb" -v r="$*" 'BEGIN {
        printf "  %-34s median %.3f s  %+.3f s = %+.1f%%  [%s]\n", l, m, m - b, (m - b) * 100 / b, r }'
}
printf 'rig build of examples/spoke, %s runs each (clean, --noremote_accept_cached); vs the baseline\n' "$RUNS"
line "baseline (no BES, no exec log):" "$mb" "${base[*]}"
line "--config=proof:" "$mp" "${proof[*]}"
line "  of which BES alone:" "$(median "${bes[@]}")" "${bes[*]}"
line "  of which the exec log alone:" "$(median "${xlog[@]}")" "${xlog[*]}"
echo "  goal: --config=proof adds <= 2% or <= 0.100 s; invocations the server stored: $stored (expected $((RUNS * 2 + 1)))"
