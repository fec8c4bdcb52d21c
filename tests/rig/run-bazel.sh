#!/usr/bin/env bash
# run-bazel.sh WORKSPACE_DIR [STARTUP_OPTION...] -- ARG...
#
# Run Bazel in WORKSPACE_DIR (a temporary copy, see copy-spoke.sh) with a
# fixed, small environment, so that nothing of the caller's environment ends
# up in the Build Event Protocol (Bazel records the whole client environment):
#   env -i HOME=<root>/home USER=<user> LANG=C.UTF-8 TERM=dumb PATH=<system path>
# and with a per-workspace --output_user_root (<root>/out), so that tests
# running side by side never share a Bazel server or output base.
#
# <root> is $RUN_BAZEL_ROOT when set, otherwise
# ${TMPDIR:-/tmp}/rbe-proof-bazel/<16 hex of sha256(absolute WORKSPACE_DIR)>.
# The Bazel server exits after $RUN_BAZEL_MAX_IDLE seconds idle (default 300);
# stop it at once with:  run-bazel.sh WORKSPACE_DIR -- shutdown
# STARTUP_OPTIONs go before the command (e.g. --batch).  ~/.bazelrc is never
# read (--nohome_rc); /etc/bazel/bazelrc (Debian's) and the workspace's
# .bazelrc are.  Exits with Bazel's exit code.
#
# Example:
#   tests/rig/copy-spoke.sh /tmp/ws
#   tests/rig/run-bazel.sh /tmp/ws -- build --config=proof //... --bes_backend=
set -euo pipefail

usage() { echo "usage: $0 WORKSPACE_DIR [STARTUP_OPTION...] -- ARG..." >&2; exit 2; }
[ $# -ge 2 ] || usage
WS="$(cd "$1" && pwd)"; shift
startup=()
while [ $# -gt 0 ] && [ "$1" != -- ]; do startup+=("$1"); shift; done
[ "${1:-}" = -- ] || usage
shift

BAZEL="${RUN_BAZEL_BAZEL:-$(command -v bazel || echo /usr/bin/bazel)}"
if [ -n "${RUN_BAZEL_ROOT:-}" ]; then
    ROOT="$RUN_BAZEL_ROOT"
else
    ROOT="${TMPDIR:-/tmp}/rbe-proof-bazel/$(printf '%s' "$WS" | sha256sum | cut -c1-16)"
fi
mkdir -p "$ROOT/home" "$ROOT/out"
USER_NAME="${USER:-$(id -un 2>/dev/null || echo root)}"

cd "$WS"
exec env -i \
    HOME="$ROOT/home" \
    USER="$USER_NAME" \
    LANG=C.UTF-8 \
    TERM=dumb \
    PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    "$BAZEL" --nohome_rc --output_user_root="$ROOT/out" \
    --max_idle_secs="${RUN_BAZEL_MAX_IDLE:-300}" \
    ${startup[@]+"${startup[@]}"} "$@"
