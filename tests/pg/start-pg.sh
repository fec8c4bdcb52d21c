#!/usr/bin/env bash
# start-pg.sh [DIR] [--ssl] - a throwaway PostgreSQL cluster on 127.0.0.1 for rbe-proof's tests.
#
# --ssl (when the cluster is initialized): TLS on, with a self-signed CA made by openssl:
#   DIR/ca.crt        the CA that signed the server's certificate (sslrootcert= for clients)
#   DIR/other-ca.crt  an unrelated CA (a wrong sslrootcert, for tests)
#   the server's certificate names IP 127.0.0.1 and DNS pg.test only (so `localhost` does
#   not match it under sslmode=verify-full); pg.env then also exports PROOF_PG_CA and
#   PROOF_PG_OTHER_CA.
#
# DIR (default $PG_DIR or /tmp/rbe-proof-pg) holds the cluster (DIR/data), its log
# (DIR/postgres.log), its port (DIR/port) and DIR/pg.env, which exports
#   PROOF_PG_URL=postgres://proof@127.0.0.1:PORT/proof   (trust auth, loopback only)
#   PROOF_PG_DIR=DIR
# Idempotent: a cluster already initialized in DIR is started (on its old port) if it is
# not running, and left alone if it is. PostgreSQL refuses to run as root, so as root the
# cluster belongs to an unprivileged system user ($PG_OS_USER, default `nobody`) and every
# server command runs through runuser. Needs Debian's postgresql (tests/rig/install-deps.sh).
set -euo pipefail
SSL=0
ARGS=()
for a in "$@"; do
    case "$a" in
        --ssl) SSL=1 ;;
        *) ARGS+=("$a") ;;
    esac
done
DIR="${ARGS[0]:-${PG_DIR:-/tmp/rbe-proof-pg}}"
OS_USER="${PG_OS_USER:-nobody}"
say() { printf 'start-pg: %s\n' "$*" >&2; }
die() { say "ERROR: $*"; exit 1; }

BIN="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)"
[ -n "$BIN" ] && [ -x "$BIN/initdb" ] \
    || die "no PostgreSQL under /usr/lib/postgresql/*/bin: run tests/rig/install-deps.sh (apt package postgresql)"

as_pg() {
    if [ "$(id -u)" = 0 ]; then runuser -u "$OS_USER" -- "$@"; else "$@"; fi
}

mkdir -p "$DIR"
DIR="$(cd "$DIR" && pwd)"
if [ "$(id -u)" = 0 ]; then chown "$OS_USER" "$DIR"; fi
chmod 0755 "$DIR"

if [ ! -s "$DIR/data/PG_VERSION" ]; then
    t=$(date +%s)
    as_pg "$BIN/initdb" -D "$DIR/data" -U proof -A trust -E UTF8 --locale=C.UTF-8 \
        > "$DIR/initdb.log" 2>&1 || { cat "$DIR/initdb.log" >&2; die "initdb failed"; }
    port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
    echo "$port" > "$DIR/port"
    mkdir -p "$DIR/sock"
    if [ "$(id -u)" = 0 ]; then chown "$OS_USER" "$DIR/sock" "$DIR/port"; fi
    cat >> "$DIR/data/postgresql.conf" <<CONF
listen_addresses = '127.0.0.1'
port = $port
unix_socket_directories = '$DIR/sock'
max_connections = 400
shared_buffers = 64MB
CONF
    if [ "$SSL" = 1 ]; then
        command -v openssl > /dev/null || die "openssl is missing: run tests/rig/install-deps.sh"
        (
            cd "$DIR"
            for ca in ca other-ca; do
                openssl req -x509 -newkey rsa:2048 -nodes -days 30 -subj "/CN=rbe-proof test $ca" \
                    -keyout "$ca.key" -out "$ca.crt" 2> /dev/null
            done
            openssl req -newkey rsa:2048 -nodes -subj "/CN=pg.test" \
                -keyout data/server.key -out server.csr 2> /dev/null
            printf 'subjectAltName=IP:127.0.0.1,DNS:pg.test\n' > server.ext
            openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial \
                -days 30 -extfile server.ext -out data/server.crt 2> /dev/null
            chmod 0600 data/server.key
            if [ "$(id -u)" = 0 ]; then chown "$OS_USER" data/server.key data/server.crt; fi
            chmod 0644 ca.crt other-ca.crt
        )
        cat >> "$DIR/data/postgresql.conf" <<CONF
ssl = on
ssl_cert_file = 'server.crt'
ssl_key_file = 'server.key'
CONF
        touch "$DIR/ssl"
    fi
    say "initialized a cluster in $DIR/data ($(( $(date +%s) - t ))s)"
fi
port="$(cat "$DIR/port")"

if as_pg "$BIN/pg_ctl" -D "$DIR/data" status > /dev/null 2>&1; then
    say "already running on 127.0.0.1:$port ($DIR)"
else
    touch "$DIR/postgres.log"
    if [ "$(id -u)" = 0 ]; then chown "$OS_USER" "$DIR/postgres.log"; fi
    as_pg "$BIN/pg_ctl" -D "$DIR/data" -l "$DIR/postgres.log" -w -t 60 start > /dev/null \
        || { tail -20 "$DIR/postgres.log" >&2; die "the server did not start"; }
    say "started on 127.0.0.1:$port ($DIR)"
fi

if ! "$BIN/psql" -h 127.0.0.1 -p "$port" -U proof -d postgres -tAc \
        "SELECT 1 FROM pg_database WHERE datname = 'proof'" | grep -q 1; then
    "$BIN/createdb" -h 127.0.0.1 -p "$port" -U proof proof
fi
cat > "$DIR/pg.env" <<ENV
PROOF_PG_URL=postgres://proof@127.0.0.1:$port/proof
PROOF_PG_DIR=$DIR
ENV
if [ -e "$DIR/ssl" ]; then
    printf 'PROOF_PG_CA=%s\nPROOF_PG_OTHER_CA=%s\n' "$DIR/ca.crt" "$DIR/other-ca.crt" >> "$DIR/pg.env"
fi
cat "$DIR/pg.env"
