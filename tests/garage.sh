#!/usr/bin/env bash
# A single-node Garage S3 server on loopback for the registry's storage tests.
#
#   eval "$(tests/garage.sh start [DIR])"   # starts it (data in DIR or a new temp dir);
#                                          # prints the SLIPWAY_TEST_S3_* variables
#   tests/garage.sh stop              # stops the node those variables describe, removes its data
#
# `start` writes a config with fresh secrets and free ports into a temporary directory,
# starts `garage server`, assigns the one-node layout, and creates a bucket and a key
# allowed to read and write it. Needs `garage` (v2) on PATH: `cargo install garage --locked`.
set -euo pipefail

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

start() {
    command -v garage >/dev/null || { echo "garage is not on PATH (cargo install garage --locked)" >&2; exit 1; }
    local dir=${1:-} rpc s3 admin bucket=slipway
    if [ -n "$dir" ]; then mkdir -p "$dir"; else dir=$(mktemp -d /tmp/slipway-garage.XXXXXX); fi
    rpc=$(free_port) s3=$(free_port) admin=$(free_port)
    cat >"$dir/garage.toml" <<EOF
metadata_dir = "$dir/meta"
data_dir = "$dir/data"
db_engine = "sqlite"
replication_factor = 1
rpc_bind_addr = "127.0.0.1:$rpc"
rpc_public_addr = "127.0.0.1:$rpc"
rpc_secret = "$(openssl rand -hex 32 2>/dev/null || head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')"

[s3_api]
s3_region = "garage"
api_bind_addr = "127.0.0.1:$s3"

[admin]
api_bind_addr = "127.0.0.1:$admin"
admin_token = "$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')"
EOF
    chmod 600 "$dir/garage.toml"
    garage -c "$dir/garage.toml" server >"$dir/garage.log" 2>&1 &
    local pid=$!
    local g=(garage -c "$dir/garage.toml")
    # `node id` reads a local file and answers before the server listens; `status` asks the
    # server itself, so the layout commands below find it up.
    local node=""
    for _ in $(seq 1 150); do
        if "${g[@]}" status >/dev/null 2>&1; then
            node=$("${g[@]}" node id -q 2>/dev/null | cut -d@ -f1)
            [ -n "$node" ] && break
        fi
        sleep 0.2
    done
    [ -n "$node" ] || { echo "garage did not start; log: $dir/garage.log" >&2; kill "$pid"; exit 1; }
    "${g[@]}" layout assign -z local -c 1G "$node" >/dev/null
    "${g[@]}" layout apply --version 1 >/dev/null
    for _ in $(seq 1 50); do
        "${g[@]}" bucket create "$bucket" >/dev/null 2>&1 && break
        sleep 0.2
    done
    local key_info
    key_info=$("${g[@]}" key create slipway-test)
    local key_id secret
    key_id=$(awk -F': *' '/Key ID/ {print $2; exit}' <<<"$key_info")
    secret=$(awk -F': *' '/Secret key/ {print $2; exit}' <<<"$key_info")
    "${g[@]}" bucket allow --read --write --owner "$bucket" --key slipway-test >/dev/null
    cat <<EOF
export SLIPWAY_TEST_S3_ENDPOINT=http://127.0.0.1:$s3
export SLIPWAY_TEST_S3_BUCKET=$bucket
export SLIPWAY_TEST_S3_ACCESS_KEY_ID=$key_id
export SLIPWAY_TEST_S3_SECRET_ACCESS_KEY=$secret
export SLIPWAY_TEST_GARAGE_PID=$pid
export SLIPWAY_TEST_GARAGE_DIR=$dir
EOF
}

stop() {
    if [ -n "${SLIPWAY_TEST_GARAGE_PID:-}" ]; then
        kill "$SLIPWAY_TEST_GARAGE_PID" 2>/dev/null || true
        wait "$SLIPWAY_TEST_GARAGE_PID" 2>/dev/null || true
    fi
    case "${SLIPWAY_TEST_GARAGE_DIR:-}" in
        /tmp/slipway-garage.*) rm -rf "$SLIPWAY_TEST_GARAGE_DIR" ;;
    esac
}

case "${1:-}" in
    start) start "${2:-}" ;;
    stop) stop ;;
    *) echo "usage: $0 start|stop" >&2; exit 2 ;;
esac
