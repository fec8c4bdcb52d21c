#!/usr/bin/env bash
# tests/fuzz/run.sh [SECONDS] - bounded cargo-fuzz run of every target
# (default 20 s each), seeded from the real Bazel fixtures: the 4.2.3 ones of
# tests/fixtures and the third-party streams of the shared folder beside the
# repository (<repo>/../shared/fixtures/real, or $PROOF_REAL_FIXTURES; a missing
# folder fails the run). Needs the nightly toolchain (rustup's "nightly") and
# cargo-fuzz, installed here if missing.
# Exits non-zero if any target finds a crash; the crash input is left in
# tests/fuzz/artifacts/<target>/.
set -euo pipefail
cd "$(dirname "$0")"
SECONDS_PER_TARGET="${1:-20}"
say() { printf 'fuzz: %s\n' "$*" >&2; }

# The real third-party streams are not in this repository (see SOURCES there).
ROOT="$(cd ../.. && pwd)"
REAL="${PROOF_REAL_FIXTURES:-../shared/fixtures/real}"
case "$REAL" in /*) ;; *) REAL="$ROOT/$REAL" ;; esac
if [ ! -f "$REAL/SOURCES" ]; then
    say "FAILED: the real Bazel streams are not at $REAL (no SOURCES there). They are" \
        "not committed to this repository: they live in the shared folder beside it," \
        "<repo>/../shared/fixtures/real, each as <directory>/<file> the way its entry in" \
        "SOURCES names it (e.g. bazel-9.0.0-build/bep.ndjson). Put a copy of shared/" \
        "beside the repository, or set PROOF_REAL_FIXTURES to the folder holding SOURCES."
    exit 1
fi

# cargo-fuzz needs nightly; this kind of machine ships one. Where none can
# be had, say so loudly and stop (FUZZ_REQUIRED=1 turns that into a failure).
if ! rustup toolchain list | grep -q '^nightly'; then
    say "installing the nightly toolchain"
    if ! rustup toolchain install nightly --profile minimal >&2; then
        say "SKIPPED: no nightly toolchain on this machine and none could be installed"
        [ "${FUZZ_REQUIRED:-0}" = 1 ] && exit 1
        exit 0
    fi
fi
command -v cargo-fuzz >/dev/null 2>&1 || { say "installing cargo-fuzz"; cargo install cargo-fuzz --locked; }

FIX=../fixtures/bazel-4.2.3
seed() {  # seed TARGET FILE...
    local dir="corpus/$1"; shift
    mkdir -p "$dir"
    for f in "$@"; do
        if [ -f "$f" ]; then cp "$f" "$dir/$(echo "$f" | tr '/' '_')"; fi
    done
}
for s in remote-build remote-test remote-cache-hit local-only failing-build; do
    seed bep_binary "$FIX/$s/bep.bin"
    seed bep_events "$FIX/$s/bep.bin"
    seed event_readers "$FIX/$s/bep.bin"
    seed bep_json "$FIX/$s/bep.json"
    seed execlog_binary "$FIX/$s/execution_log.bin"
    seed remote_grpc_log "$FIX/$s/remote_grpc.log"
done
# bep_json_paths: one seed per line of every JSON stream, the 4.2.3 ones and
# the real Bazel 7-9 ones (whole files as seeds make every run slow).
mkdir -p corpus/bep_json_paths
for f in "$FIX"/*/bep.json; do
    split -l 1 -d -a 5 "$f" "corpus/bep_json_paths/$(echo "$f" | tr '/.' '__')_"
done
for f in "$REAL"/*/bep.ndjson; do
    split -l 1 -d -a 5 "$f" "corpus/bep_json_paths/real_$(echo "${f#"$REAL"/}" | tr '/.' '__')_"
done
# verify: real artifacts signed by the target's key [1; 32] (written and
# checked by crates/artifact/tests/fuzz_seeds.rs), so mutations get past the
# signature.
seed verify seeds/verify/*.proof.tar
# event_readers: also single hostile events of the third review (oneof splits, a
# masked or second BuildStarted), cut from the 4.2.3 capture.
seed event_readers seeds/event_readers/*.bin

t0=$(date +%s)
cargo +nightly fuzz build -O >&2
say "built all targets in $(( $(date +%s) - t0 ))s"
failed=0
for target in $(cargo +nightly fuzz list); do
    mkdir -p "corpus/$target"
    if cargo +nightly fuzz run -O "$target" "corpus/$target" -- \
        -max_total_time="$SECONDS_PER_TARGET" -rss_limit_mb=4096 -print_final_stats=1 \
        > "/tmp/proof-fuzz-$target.log" 2>&1; then
        say "$target: $(grep -E 'stat::number_of_executed_units' "/tmp/proof-fuzz-$target.log" | awk '{print $2}') runs in ${SECONDS_PER_TARGET}s, no crash"
    else
        say "$target: FAILED (see /tmp/proof-fuzz-$target.log)"
        tail -40 "/tmp/proof-fuzz-$target.log" >&2
        failed=1
    fi
done
exit $failed
