#!/usr/bin/env bash
# Slipway scaled out on one machine: PostgreSQL, a Garage S3 node, three `slipway serve`
# replicas sharing them, and HAProxy in front, all on loopback. Serves until Ctrl-C.
#
#   bash examples/cluster/run.sh            # builds the release binary first
#
# Environment (all optional):
#   SLIPWAY_BIN        the slipway binary to run (default: build target/release/slipway)
#   CLUSTER_DIR        where everything keeps its data (default: a new temporary directory)
#   CLUSTER_PORT       the load balancer's port (default 7800)
#   CLUSTER_REPLICAS   how many replicas (default 3)
#   SLIPWAY_*          passed on to every replica, e.g. SLIPWAY_PIPELINE__REGISTRY
#
# When everything answers it writes $CLUSTER_DIR/cluster.env (the load balancer URL, each
# replica's URL and process id, the admin token), which the tests read.
# Needs Debian's postgresql and haproxy, and garage (cargo install garage --locked).
set -euo pipefail
cd "$(dirname "$0")/../.."
say() { printf '\n== %s\n' "$*" >&2; }

dir=${CLUSTER_DIR:-$(mktemp -d "${TMPDIR:-/tmp}/slipway-cluster.XXXXXX")}
mkdir -p "$dir"
chmod 711 "$dir" # PostgreSQL runs as its own user when started by root
lb_port=${CLUSTER_PORT:-7800}
replicas=${CLUSTER_REPLICAS:-3}
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    tests/postgres.sh stop "$dir/postgres"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

for tool in haproxy garage; do
    command -v "$tool" >/dev/null || { echo "error: $tool is not installed (see the top of $0)" >&2; exit 1; }
done
if [ -z "${SLIPWAY_BIN:-}" ]; then
    say "building slipway (release)"
    cargo build --release -p slipway-server --bin slipway
    SLIPWAY_BIN=${CARGO_TARGET_DIR:-target}/release/slipway
fi

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}
wait_ready() { # url
    for _ in $(seq 1 300); do
        curl -sf "$1/readyz" >/dev/null 2>&1 && return 0
        sleep 0.1
    done
    echo "error: $1 did not become ready" >&2
    return 1
}

say "starting PostgreSQL"
eval "$(tests/postgres.sh start "$dir/postgres")"
psql "$SLIPWAY_TEST_POSTGRES_URL" -qc "CREATE DATABASE slipway"
database=${SLIPWAY_TEST_POSTGRES_URL%/postgres}/slipway

say "starting Garage (S3)"
eval "$(tests/garage.sh start "$dir/garage")"
pids+=("$SLIPWAY_TEST_GARAGE_PID")

# Every replica: the same database, object store and lease time; its own data directory.
export SLIPWAY_DATABASE__URL=$database
export SLIPWAY_OBJECT_STORE__KIND=s3
export SLIPWAY_OBJECT_STORE__S3__ENDPOINT=$SLIPWAY_TEST_S3_ENDPOINT
export SLIPWAY_OBJECT_STORE__S3__BUCKET=$SLIPWAY_TEST_S3_BUCKET
export SLIPWAY_OBJECT_STORE__S3__REGION=garage
export SLIPWAY_OBJECT_STORE__S3__ACCESS_KEY_ID=$SLIPWAY_TEST_S3_ACCESS_KEY_ID
export SLIPWAY_OBJECT_STORE__S3__SECRET_ACCESS_KEY=$SLIPWAY_TEST_S3_SECRET_ACCESS_KEY
export SLIPWAY_OBJECT_STORE__S3__ALLOW_HTTP=true

urls=() servers=""
for n in $(seq 1 "$replicas"); do
    port=$(free_port)
    mkdir -p "$dir/replica-$n"
    if [ "$n" -gt 1 ]; then
        # The first replica made the admin token in the shared database; all use it.
        cp "$dir/replica-1/admin-token" "$dir/replica-$n/admin-token"
    fi
    say "starting replica $n on 127.0.0.1:$port"
    SLIPWAY_CLUSTER__REPLICA_ID=replica-$n "$SLIPWAY_BIN" serve --listen "127.0.0.1:$port" \
        --data-dir "$dir/replica-$n" >"$dir/replica-$n.log" 2>&1 &
    pids+=($!)
    echo "REPLICA_${n}_PID=$!" >>"$dir/replicas.env.partial"
    urls+=("http://127.0.0.1:$port")
    servers+="    server replica-$n 127.0.0.1:$port check"$'\n'
    wait_ready "http://127.0.0.1:$port"
done

say "starting HAProxy on 127.0.0.1:$lb_port"
cat >"$dir/haproxy.cfg" <<CFG
global
    log stderr format short local0 warning
defaults
    mode http
    timeout connect 2s
    # A replica that refuses the connection (killed, restarting) gets the request retried
    # on another one before its health check has noticed.
    retries 2
    option redispatch 1
    # Build logs and health events stream for as long as someone watches.
    timeout client 1h
    timeout server 1h
    timeout tunnel 1h
frontend slipway
    bind 127.0.0.1:$lb_port
    default_backend replicas
backend replicas
    balance roundrobin
    option httpchk GET /readyz
    default-server inter 1s fall 2 rise 1
$servers
CFG
haproxy -f "$dir/haproxy.cfg" -db >"$dir/haproxy.log" 2>&1 &
pids+=($!)
wait_ready "http://127.0.0.1:$lb_port"

{
    echo "CLUSTER_URL=http://127.0.0.1:$lb_port"
    for n in $(seq 1 "$replicas"); do echo "REPLICA_${n}_URL=${urls[$((n - 1))]}"; done
    cat "$dir/replicas.env.partial"
    echo "SLIPWAY_TOKEN=$(cat "$dir/replica-1/admin-token")"
} >"$dir/cluster.env.partial"
mv "$dir/cluster.env.partial" "$dir/cluster.env"

cat <<TXT

== Slipway cluster: http://127.0.0.1:$lb_port  ($replicas replicas; data in $dir)

Try, in another terminal:
  export SLIPWAY_SERVER=http://127.0.0.1:$lb_port SLIPWAY_TOKEN=\$(cat $dir/replica-1/admin-token)
  curl -s -H "authorization: Bearer \$SLIPWAY_TOKEN" \$SLIPWAY_SERVER/v1/cluster
  target/release/slipway plugins list
  kill -9 \$(grep REPLICA_2_PID $dir/cluster.env | cut -d= -f2)   # the others take its work over

Press Ctrl-C to stop everything.
TXT
wait # every replica and the load balancer (Garage was started by its script)
