#!/usr/bin/env bash
# bench/run.sh [--quick]
#
# Every performance figure of rbe-proof beside its baseline, measured in the
# same run (docs/performance.md):
#   1. proof ingest (JSON, binary), proof verify, start-up, as whole
#      processes vs serde_json/IgnoredAny, zstd | sha256sum and `true`
#      (cargo bench -p proof-cli --bench perf);
#   2. live ingest over loopback gRPC, 1 and 32 streams, vs file ingest of
#      the same kind of events (cargo bench -p proof-server --bench ingest);
#   3. a real Bazel build on the loopback rig with --config=proof vs without
#      BES and exec log (bench/rig-build.sh; needs the rig running).
# --quick: small sizes (seconds instead of minutes) and 3 rig runs.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
quick=0
[ "${1:-}" = --quick ] && quick=1
if [ "$quick" = 1 ]; then
    export PERF_EVENTS="${PERF_EVENTS:-5000}" PERF_VERIFY_EVENTS="${PERF_VERIFY_EVENTS:-50000}"
    server_args=(-- --quick)
    runs=3
else
    server_args=()
    runs=5
fi

echo "== 1. proof ingest / verify / start-up vs baselines"
cargo bench -q -p proof-cli --bench perf
echo
echo "== 2. live ingest over loopback gRPC"
cargo bench -q -p proof-server --bench ingest ${server_args[@]+"${server_args[@]}"}
echo
echo "== 2b. transparency log: finalization -> proof written, with vs without the log"
cargo bench -q -p proof-server --bench tlog ${server_args[@]+"${server_args[@]}"}
echo
echo "== 3. real Bazel build on the rig: --config=proof vs without BES and exec log"
if [ -f "${RIG_ENV:-/tmp/rbe-proof-rig/run/rig.env}" ]; then
    cargo build -q --release -p proof-cli
    bash bench/rig-build.sh "$runs"
else
    echo "not measured: the loopback rig is not running (start it with tests/rig/start-rig.sh)"
fi
