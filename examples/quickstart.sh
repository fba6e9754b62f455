#!/usr/bin/env bash
# The main job on the embedded defaults (SQLite + local disk, no Docker, no internet):
# builds the release `slipway`, starts `slipway serve` on a temporary data directory, builds
# the example app in examples/hello (two components, built from their Dockerfiles by the
# native backend), publishes it as a tagged app package, registers six deployed instances
# whose health the server checks live (served by the fleet simulator), and shows the
# dashboard URL and what to try next. Serves until Ctrl-C.
#
# Built images go to an OCI registry: the one on 127.0.0.1:5000 when it answers, otherwise a
# `docker-registry` (Debian package docker-registry) started here for the session.
set -euo pipefail
cd "$(dirname "$0")/.."
listen=${SLIPWAY_LISTEN:-127.0.0.1:7700}
fleet_port=${SLIPWAY_FLEET_PORT:-7710}
say() { printf '\n== %s\n' "$*" >&2; }
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
}
trap cleanup EXIT
trap 'exit 130' INT TERM

wait_for() { # seconds, what, command...
    local seconds=$1 what=$2; shift 2
    for _ in $(seq 1 $((seconds * 10))); do
        "$@" >/dev/null 2>&1 && return 0
        sleep 0.1
    done
    echo "error: $what did not come up in ${seconds}s" >&2
    return 1
}

say "building slipway and the fleet simulator (release)"
cargo build --release -p slipway-server --bin slipway -p slipway-tests --bin slipway-fleet
target=${CARGO_TARGET_DIR:-target}/release
slipway=$target/slipway
data=$(mktemp -d "${TMPDIR:-/tmp}/slipway-quickstart.XXXXXX")

registry=127.0.0.1:5000
if ! curl -sf "http://$registry/v2/" >/dev/null 2>&1; then
    registry=127.0.0.1:7705
    if ! command -v docker-registry >/dev/null; then
        if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
            say "installing docker-registry (Debian package) to hold the built images"
            DEBIAN_FRONTEND=noninteractive apt-get install -y -q docker-registry >/dev/null
        else
            echo "error: built images need an OCI registry: run one on 127.0.0.1:5000, or install docker-registry" >&2
            exit 1
        fi
    fi
    say "starting an OCI registry on $registry (storage in $data/registry)"
    cat >"$data/registry.yml" <<YAML
version: 0.1
storage:
  filesystem:
    rootdirectory: $data/registry
http:
  addr: $registry
YAML
    docker-registry serve "$data/registry.yml" >"$data/registry.log" 2>&1 &
    pids+=($!)
    wait_for 30 "docker-registry (see $data/registry.log)" curl -sf "http://$registry/v2/"
fi

cat >"$data/slipway.toml" <<TOML
listen = "$listen"
data_dir = "$data"
[pipeline]
registry = "$registry"
insecure_registries = ["$registry"]
TOML
export SLIPWAY_CONFIG=$data/slipway.toml

say "starting slipway serve on http://$listen (data in $data)"
"$slipway" serve >"$data/server.log" 2>&1 &
pids+=($!)
wait_for 30 "slipway serve (see $data/server.log)" curl -sf "http://$listen/readyz"

say "starting the fleet simulator: six instances on 127.0.0.1:$fleet_port"
"$target/slipway-fleet" --instances 6 --ports 1 --first-port "$fleet_port" >"$data/fleet.log" 2>&1 &
pids+=($!)
wait_for 30 "slipway-fleet (see $data/fleet.log)" curl -sf "http://127.0.0.1:$fleet_port/instances/0/health"

say "slipway build examples/hello --tag demo"
"$slipway" build examples/hello --tag demo
version=$("$slipway" packages hello --tag demo --latest -o json | sed -n 's/^  "version": "\(.*\)",*$/\1/p')

say "slipway tag hello $version +prod"
"$slipway" tag hello "$version" +prod
"$slipway" packages hello --tag prod

say "slipway instances register -f fleet.yaml"
# The instances run the version just built, served by this run's fleet simulator.
sed -e "s/127.0.0.1:7710/127.0.0.1:$fleet_port/" -e "s/version: \"0.1.0\"/version: \"$version\"/" \
    examples/hello/fleet.yaml >"$data/fleet.yaml"
# One instance answers 503, so health shows a degraded app instance and why.
curl -sf -X POST "http://127.0.0.1:$fleet_port/admin/faults" \
    -H 'content-type: application/json' -d '{"mode": "fail", "ids": [5]}' >/dev/null
"$slipway" instances register -f "$data/fleet.yaml"
sleep 3

say "slipway health hello"
"$slipway" health hello

cat <<TXT

== Slipway is running: dashboard http://$listen/  (data in $data)

Try, in another terminal:
  export SLIPWAY_CONFIG=$data/slipway.toml     # the CLI finds the server and its admin token
  $slipway health --watch                      # live health per app (Ctrl-C to stop)
  $slipway health hello
  $slipway packages hello --tag prod --latest
  $slipway tag hello $version +stable -demo
  $slipway build examples/hello                # the next version (layers come from the cache)
  $slipway plugins list
  $slipway download hello --tag prod
  $slipway tokens create ci --scope build --scope publish
  curl -s -X POST http://127.0.0.1:$fleet_port/admin/faults -H 'content-type: application/json' \\
       -d '{"mode": "healthy", "ids": [5]}'     # the failing instance recovers
  $slipway --help                              # every command and the exit codes

Press Ctrl-C to stop (the server finishes in-flight requests first).
TXT
wait "${pids[@]}"
