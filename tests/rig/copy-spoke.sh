#!/usr/bin/env bash
# copy-spoke.sh DEST - copy the example spoke (examples/spoke) into DEST
# (created; must not exist or be empty) together with the project's flag
# fragment bazel/proof.bazelrc as DEST/proof.bazelrc, which the spoke's
# .bazelrc try-imports.  Run Bazel there, e.g. with run-bazel.sh, never in
# examples/spoke itself (bazel-* symlinks would land in the checkout).
set -euo pipefail
[ $# -eq 1 ] || { echo "usage: $0 DEST" >&2; exit 2; }
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
DEST="$1"
if [ -e "$DEST" ] && [ -n "$(ls -A "$DEST")" ]; then
    echo "copy-spoke: $DEST exists and is not empty" >&2; exit 1
fi
mkdir -p "$DEST"
cp -R "$ROOT/examples/spoke/." "$DEST/"
rm -rf "$DEST"/bazel-*
cp "$ROOT/bazel/proof.bazelrc" "$DEST/proof.bazelrc"
echo "$DEST"
