#!/usr/bin/env bash
# install-deps.sh - install everything rbe-proof's test suite needs on a
# fresh Debian bookworm machine (idempotent: installs only what is missing).
#
#   apt (Debian):  bazel-bootstrap (Bazel 4.2.3, pulls in build-essential and
#                  a JDK), python3-venv, zstd, openssl, chromium (web tests),
#                  postgresql + haproxy (replicated `proof serve` tests, tests/pg);
#                  openssl makes the PG TLS tests' self-signed CA (the binary
#                  needs no system OpenSSL: native-tls builds a vendored one)
#   pip (PyPI):    buildgrid==0.4.4 and psycopg2-binary into $RIG_DIR/venv
#                  (via start-rig.sh --install-only), for the loopback
#                  remote-execution rig (its scheduler runs on PostgreSQL)
#
# Needs root for apt-get (runs it through sudo when not root).  Prints what
# it did and how long each step took.
#
# Environment: RIG_DIR (default /tmp/rbe-proof-rig), BUILDGRID_VERSION (0.4.4).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
APT_PACKAGES=(bazel-bootstrap python3 python3-venv zstd openssl chromium postgresql haproxy)

say() { printf 'install-deps: %s\n' "$*" >&2; }
die() { say "ERROR: $*"; exit 1; }
as_root() {
    if [ "$(id -u)" = 0 ]; then "$@"
    elif command -v sudo >/dev/null 2>&1; then sudo "$@"
    else die "need root for: $*"
    fi
}
installed() {
    [ "$(dpkg-query -W -f='${db:Status-Status}' "$1" 2>/dev/null)" = installed ]
}

START=$(date +%s)

# ------------------------------------------------------------ apt packages
t=$(date +%s)
missing=()
for p in "${APT_PACKAGES[@]}"; do installed "$p" || missing+=("$p"); done
if [ "${#missing[@]}" -eq 0 ]; then
    say "apt: all present (${APT_PACKAGES[*]}) ($(( $(date +%s) - t ))s)"
else
    command -v apt-get >/dev/null 2>&1 || die "no apt-get: install ${missing[*]} by hand"
    say "apt: installing ${missing[*]}"
    log="$(mktemp -t install-deps-apt.XXXXXX)"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq > "$log" 2>&1 \
        || { cat "$log" >&2; die "apt-get update failed"; }
    say "apt: update took $(( $(date +%s) - t ))s"
    t2=$(date +%s)
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >> "$log" 2>&1 \
        || { cat "$log" >&2; die "apt-get install failed (log: $log)"; }
    rm -f "$log"
    for p in "${missing[@]}"; do installed "$p" || die "$p still not installed"; done
    say "apt: installed ${missing[*]} in $(( $(date +%s) - t2 ))s"
fi

# --------------------------------------------------------- BuildGrid venv
t=$(date +%s)
"$HERE/start-rig.sh" --install-only
say "buildgrid venv: ready ($(( $(date +%s) - t ))s)"

# ------------------------------------------------------------------ check
bazel_bin="$(command -v bazel)" || die "bazel not on PATH after installing bazel-bootstrap"
say "bazel: $bazel_bin ($(dpkg-query -W -f='${Version}' bazel-bootstrap))"
say "chromium: $(command -v chromium || echo 'not on PATH')"
say "done in $(( $(date +%s) - START ))s"
