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
# Prints the median wall time of each, the difference and the ratio; then
# the same for the part of each build's wall time outside Bazel's own
# "Elapsed time" line: client start-up and everything after the build
# (waiting for the BES upload, finishing the execution log, exit). Remote
# execution on a loaded loopback rig makes whole builds vary by seconds;
# that part does not vary with it, so it shows the end-of-build cost that
# wait_for_upload_complete adds within milliseconds.
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

# One clean build; prints its wall seconds and the part of them outside Bazel's own
# "Elapsed time" (client start-up, then what follows the build: waiting for the BES
# upload, finishing the execution log, exit).
build() {
    bazel clean >/dev/null 2>&1
    local t0 t1 elapsed
    t0=$(date +%s.%N)
    if ! bazel build //... "${COMMON[@]}" "$@" >"$WORK/last.log" 2>&1; then
        echo "rig-build: the build failed:" >&2; tail -30 "$WORK/last.log" >&2; exit 1
    fi
    t1=$(date +%s.%N)
    elapsed=$(sed -n 's/.*INFO: Elapsed time: \([0-9.]*\)s.*/\1/p' "$WORK/last.log" | tail -n1)
    [ -n "$elapsed" ] || { echo "rig-build: no 'Elapsed time' in Bazel's output" >&2; exit 1; }
    awk -v a="$t0" -v b="$t1" -v e="$elapsed" 'BEGIN {printf "%.3f %.3f\n", b - a, b - a - e}'
}

median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }

build "${BASE_FLAGS[@]}" >/dev/null   # warm-up: Bazel server, analysis
build "${PROOF_FLAGS[@]}" >/dev/null
declare -A wall tail
run() { # NAME FLAGS...: one build, its figures appended to wall[NAME] and tail[NAME]
    local name="$1" w t; shift
    read -r w t < <(build "$@")
    wall[$name]+="$w "; tail[$name]+="$t "
}
for _ in $(seq "$RUNS"); do
    run base "${BASE_FLAGS[@]}"
    run proof "${PROOF_FLAGS[@]}"
    run bes "${BASE_FLAGS[@]}" "${BES_FLAGS[@]}"
    run xlog "${BASE_FLAGS[@]}" "${EXECLOG_FLAGS[@]}"
done
kill "$SERVER_PID"; wait "$SERVER_PID" 2>/dev/null || true; SERVER_PID=""
stored=$("$PROOF" list --store "$WORK/store" --limit 1000 2>/dev/null | grep -c -E '[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-' || true)
# shellcheck disable=SC2086 # the lists are space-separated numbers
block() { # TITLE ARRAY: the median of each configuration against the baseline's
    local title="$1" mb
    local -n arr="$2"
    mb=$(median ${arr[base]})
    echo "$title"
    for k in base proof bes xlog; do
        local label
        case $k in
            base) label="baseline (no BES, no exec log):" ;;
            proof) label="--config=proof:" ;;
            bes) label="  of which BES alone:" ;;
            xlog) label="  of which the exec log alone:" ;;
        esac
        awk -v l="$label" -v m="$(median ${arr[$k]})" -v b="$mb" -v r="${arr[$k]% }" 'BEGIN {
            printf "  %-34s median %.3f s  %+.3f s", l, m, m - b
            if (b > 0) printf " = %+.1f%%", (m - b) * 100 / b
            printf "  [%s]\n", r }'
    done
}
printf 'rig build of examples/spoke, %s runs each (clean, --noremote_accept_cached), alternating\n' "$RUNS"
block "wall time of the build, vs the baseline:" wall
block "of it, outside Bazel's own 'Elapsed time' (start-up, BES upload wait, exec log finish, exit):" tail
mb=$(median ${wall[base]}); mp=$(median ${wall[proof]})
tb=$(median ${tail[base]}); tp=$(median ${tail[proof]})
awk -v mb="$mb" -v mp="$mp" -v tb="$tb" -v tp="$tp" -v s="$stored" -v n="$((RUNS * 2 + 1))" 'BEGIN {
    printf "  goal: --config=proof adds <= 2%% (%.3f s here) or <= 0.100 s: %+.3f s in all (noisy: remote execution), %+.3f s after the build\n", mb * 0.02, mp - mb, tp - tb
    printf "  invocations the server stored: %s (expected %s)\n", s, n }'
