#!/usr/bin/env bash
# A throwaway PostgreSQL on a free loopback port, for the PostgreSQL test pass and the
# cluster example.
#
#   eval "$(tests/postgres.sh start DIR)"   # initdb in DIR/data and start it; prints
#                                          # SLIPWAY_TEST_POSTGRES_URL and _DIR
#   tests/postgres.sh stop DIR            # fast shutdown
#   tests/postgres.sh resume DIR          # start a stopped one again, on the same port
#
# PostgreSQL refuses to run as root, so as root it runs as Debian's `postgres` user (DIR's
# parents must let that user through). Needs Debian's postgresql package.
set -euo pipefail

pg_bin() {
    local bin
    bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)
    [ -n "$bin" ] || { echo "PostgreSQL is not installed (apt-get install postgresql)" >&2; exit 1; }
    echo "$bin"
}

as_pg() {
    if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

start() {
    local dir=$1 bin port
    bin=$(pg_bin)
    port=$(free_port)
    mkdir -p "$dir"
    if [ "$(id -u)" = 0 ]; then chown postgres "$dir"; fi
    as_pg "$bin/initdb" -D "$dir/data" -A trust -U slipway --no-sync -E UTF8 >"$dir/initdb.log"
    echo "$port" >"$dir/port"
    run "$dir"
    echo "export SLIPWAY_TEST_POSTGRES_URL=postgres://slipway@127.0.0.1:$port/postgres"
    echo "export SLIPWAY_TEST_POSTGRES_DIR=$dir"
}

# client_connection_check_interval: a statement of a client that died (a replica killed
# with -9 while its statement waited on a lock) is aborted when its connection is seen
# closed, instead of running to completion for nobody once the lock frees.
run() {
    local dir=$1
    as_pg "$(pg_bin)/pg_ctl" -D "$dir/data" -l "$dir/postgres.log" -w \
        -o "-p $(cat "$dir/port") -k $dir -c listen_addresses=127.0.0.1 -c max_connections=500 -c client_connection_check_interval=500ms" start >/dev/null
}

stop() {
    as_pg "$(pg_bin)/pg_ctl" -D "$1/data" -m fast stop >/dev/null 2>&1 || true
}

case "${1:-}" in
    start) start "${2:?start DIR}" ;;
    stop) stop "${2:?stop DIR}" ;;
    resume) run "${2:?resume DIR}" ;;
    *) echo "usage: $0 start DIR | stop DIR | resume DIR" >&2; exit 2 ;;
esac
