#!/usr/bin/env bash
# make-proofs.sh: regenerate examples/platform/{keys/proof.pub,proofs/,rejected/}
# and the proof records in config/rbe-target-eligibility.json from REAL Bazel
# runs of the example spoke on the loopback rig (tests/rig/).
#
#   bash examples/platform/make-proofs.sh            # from the repository root
#
# Every "spoke repo" of the example manifest is the same example spoke
# (examples/spoke), built under a different repo identity: Bazel's
# --build_metadata=REPO=<owner/name>, which `proof promote` reads as the
# artifact's repo (docs/manifest.md, "Which repo an artifact belongs to").
# Each run starts with `bazel clean` and uses --noremote_accept_cached, so
# every action really runs on the rig's executor (no cache hits).
#
# The proofs are signed by `proof serve --executor` (the platform's server,
# which asks the rig's executor what it ran for each invocation), not by
# the spoke: Bazel streams to the server, the server signs. The server runs
# without --tenants (Bazel 4.2.3 cannot send a bearer token to the BES), so
# the proofs are unauthenticated and the example manifest says so with
# "allow_unauthenticated_proofs": true.
#
# A fresh signing key is generated in $WORK on every run; only the public key
# is copied into the example.  Then every class of the manifest that is at
# executor-backed is reset to cache-first without proofs and promoted again,
# with `proof promote`, from the artifact of its repo's build or test run.
#
# PROMOTE_ONLY=1 skips the Bazel runs and re-promotes from the artifacts
# listed in $WORK/runs.tsv by an earlier run.
#
# Settings: PROOF (the proof binary; default target/debug/proof, built if
# missing), WORK (scratch directory, default /tmp/rbe-proof-platform).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"
EX="$ROOT/examples/platform"
MANIFEST="$EX/config/rbe-target-eligibility.json"
WORK="${WORK:-/tmp/rbe-proof-platform}"
PROOF="${PROOF:-$ROOT/target/debug/proof}"
[ -x "$PROOF" ] || cargo build -p proof-cli

if [ "${PROMOTE_ONLY:-0}" != 1 ]; then
rm -rf "$WORK"
mkdir -p "$WORK"
bash tests/rig/start-rig.sh
bash tests/rig/copy-spoke.sh "$WORK/ws" >/dev/null
# A second copy whose worker image is not pinned by digest (rejected on purpose).
bash tests/rig/copy-spoke.sh "$WORK/ws-unpinned" >/dev/null
sed -i 's|container-image=docker://example.invalid/worker@sha256:[0-9a-f]*|container-image=docker://example.invalid/worker:latest|' \
    "$WORK/ws-unpinned/proof.bazelrc"

"$PROOF" keygen --out "$WORK/proof"
cp "$WORK/proof.pub" "$EX/keys/proof.pub"
rm -f "$EX"/proofs/*.proof.tar "$EX"/rejected/*.proof.tar

set -a; . /tmp/rbe-proof-rig/run/rig.env; set +a
mkdir -p "$WORK/signed"
"$PROOF" serve --listen 127.0.0.1:0 --store "$WORK/store" --key "$WORK/proof.key" \
    --proofs "$WORK/signed" --executor "$RIG_REMOTE_EXECUTOR" >"$WORK/serve.out" 2>"$WORK/serve.log" &
SERVER_PID=$!
trap 'kill $SERVER_PID 2>/dev/null || true' EXIT
for _ in $(seq 1 100); do
    BES=$(grep -o 'grpc://[0-9.:]*' "$WORK/serve.out" | head -1 || true)
    [ -n "$BES" ] && break
    sleep 0.2
done
[ -n "$BES" ] || { echo "make-proofs: proof serve did not start" >&2; exit 1; }

# run NAME DEST REPO INSTANCE COMMAND [BAZEL_ARG...]: one real Bazel run in
# $WS (default $WORK/ws), recorded into DEST.
run() {
    local name=$1 dest=$2 repo=$3 instance=$4 cmd=$5 ws=${WS:-$WORK/ws}
    shift 5
    bash tests/rig/run-bazel.sh "$ws" -- clean >/dev/null 2>&1
    rm -f "$ws/bazel-proof-execlog.bin"
    bash tests/rig/run-bazel.sh "$ws" -- "$cmd" --config=proof --bes_backend="$BES" \
        --build_event_binary_file="$WORK/$name.bep.bin" \
        --build_metadata=REPO="$repo" --remote_instance_name="$instance" "$@" 2>&1 | tee "$WORK/$name.out"
    # The server signs once the stream is finalized and the executor answered.
    local id path
    id=$(grep -o 'invocations/[0-9a-f-]*' "$WORK/$name.out" | tail -1 | cut -d/ -f2)
    for _ in $(seq 1 300); do
        [ -f "$WORK/signed/$id.proof.tar" ] && break
        sleep 0.2
    done
    mkdir -p "$dest"
    mv "$WORK/signed/$id.proof.tar" "$dest/"
    path="$dest/$id.proof.tar"
    printf '%s\t%s\n' "$name" "$path" >>"$WORK/runs.tsv"
    echo "make-proofs: $name -> $path"
}

P="$EX/proofs"
run checkout-web-build  "$P" acme/checkout-web   main build --noremote_accept_cached //...
run checkout-web-test   "$P" acme/checkout-web   main test  --noremote_accept_cached //...
run payments-api-build  "$P" acme/payments-api   ""   build --noremote_accept_cached //...
run payments-api-test   "$P" acme/payments-api   ""   test  --noremote_accept_cached //...
run search-indexer-build "$P" acme/search-indexer main build --noremote_accept_cached //:greeter //:greeting
run infra-tools-build   "$P" acme/infra-tools    main build --noremote_accept_cached //...
run infra-tools-test    "$P" acme/infra-tools    main test  --noremote_accept_cached //...
# Rejected on purpose (used by the tests): an unpinned worker image, and a
# build served entirely from the remote cache (0 remote executions).
R="$EX/rejected"
WS="$WORK/ws-unpinned" run unpinned-image "$R" acme/checkout-web main build --noremote_accept_cached //...
run cache-hits-only     "$R" acme/checkout-web   main build //...
for ws in "$WORK/ws" "$WORK/ws-unpinned"; do
    bash tests/rig/run-bazel.sh "$ws" -- shutdown >/dev/null 2>&1 || true
done
fi

if [ "${SKIP_PROMOTE:-0}" = 1 ]; then exit 0; fi

# Re-promote: reset every executor-backed class, then promote it from the
# artifact of its repo's build (check/build/package classes) or test
# (test/smoke classes) run.
python3 - "$MANIFEST" <<'PY'
import json, sys
path = sys.argv[1]
m = json.load(open(path))
for cid, c in m["classes"].items():
    if c["mode"] != "cache-first":
        c["mode"] = "cache-first"
        c["proofs"] = []
        for g in c["gates"].values():
            g["status"] = "open"
            g["blocker"] = "no verified proof artifact recorded for this class yet"
            g["evidence"] = []
        c["promote_from"] = True
open(path, "w").write(json.dumps(m, indent=2) + "\n")
PY
python3 - "$MANIFEST" <<'PY' >"$WORK/promotions.tsv"
import json, sys
m = json.load(open(sys.argv[1]))
for cid, c in m["classes"].items():
    if c.pop("promote_from", False):
        kind = "test" if c["work_kind"] in ("test", "smoke") else "build"
        print(f'{cid}\t{c["repo"].split("/")[1]}-{kind}')
open(sys.argv[1], "w").write(json.dumps(m, indent=2) + "\n")
PY
while IFS=$'\t' read -r class run_name; do
    artifact=$(awk -F'\t' -v n="$run_name" '$1 == n {print $2}' "$WORK/runs.tsv")
    "$PROOF" promote "$artifact" --manifest "$MANIFEST" --class "$class" \
        --key "$EX/keys/proof.pub" --location "proofs/$(basename "$artifact")" >/dev/null
    echo "make-proofs: promoted $class with $(basename "$artifact")"
done <"$WORK/promotions.tsv"
"$PROOF" verify --manifest "$MANIFEST" --proofs "$EX/proofs" --key "$EX/keys/proof.pub"
