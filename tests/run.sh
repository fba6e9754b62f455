#!/usr/bin/env bash
# Runs Slipway's whole test suite on a Debian machine as root, fresh or already set up:
# installs what is missing, starts the real components the tests use (a Docker daemon and a
# registry on 127.0.0.1:5000) unless they already run, builds the local base image, runs every
# test of the workspace, and stops whatever it started.
set -euo pipefail
cd "$(dirname "$0")/.."
work=$(mktemp -d /tmp/slipway-test.XXXXXX)
started=()

pg_stop() { :; }
cleanup() {
    pg_stop
    for pid in "${started[@]}"; do
        kill "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    rm -rf "$work"
}
trap cleanup EXIT

step() { printf '\n== %s\n' "$*" >&2; }

wait_for() { # seconds, description, command...
    local seconds=$1 what=$2
    shift 2
    for _ in $(seq 1 $((seconds * 5))); do
        "$@" >/dev/null 2>&1 && return 0
        sleep 0.2
    done
    echo "error: $what did not come up within ${seconds}s" >&2
    return 1
}

# --- Debian packages -------------------------------------------------------------------
packages=()
command -v dockerd >/dev/null || packages+=(docker.io)
command -v docker-registry >/dev/null || packages+=(docker-registry)
command -v skopeo >/dev/null || packages+=(skopeo)
dpkg -s busybox-static >/dev/null 2>&1 || packages+=(busybox-static)
command -v curl >/dev/null || packages+=(curl)
# --- builder (issue 5/11): buildah is a peer in the `builder` benchmark; git for git sources
command -v buildah >/dev/null || packages+=(buildah)
command -v git >/dev/null || packages+=(git)
# --- end builder
# --- dashboard (issue 8): headless Chromium and chromedriver for tests/tests/dashboard.rs
[ -x /usr/bin/chromium ] || packages+=(chromium)
[ -x /usr/bin/chromedriver ] || packages+=(chromium-driver)
# --- end dashboard
# --- scale-out (issue 10): PostgreSQL, the second database every store test runs on
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || packages+=(postgresql)
command -v haproxy >/dev/null || packages+=(haproxy) # the load balancer of examples/cluster
# --- end scale-out
if [ ${#packages[@]} -gt 0 ]; then
    step "installing ${packages[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${packages[@]}" >/dev/null
fi
docker=/usr/bin/docker # Debian's client matches its daemon; another docker on PATH may not

# --- Docker daemon -----------------------------------------------------------------------
if ! "$docker" info >/dev/null 2>&1; then
    step "starting dockerd"
    dockerd >"$work/dockerd.log" 2>&1 &
    started+=($!)
    wait_for 60 dockerd "$docker" info || { tail -20 "$work/dockerd.log" >&2; exit 1; }
fi

# --- OCI registry on loopback ------------------------------------------------------------
export SLIPWAY_TEST_REGISTRY=127.0.0.1:5000
if ! curl -sf "http://$SLIPWAY_TEST_REGISTRY/v2/" >/dev/null; then
    step "starting docker-registry on $SLIPWAY_TEST_REGISTRY"
    mkdir -p "$work/registry"
    cat >"$work/registry.yml" <<YAML
version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: $work/registry
  delete:
    enabled: true
http:
  addr: $SLIPWAY_TEST_REGISTRY
YAML
    docker-registry serve "$work/registry.yml" >"$work/registry.log" 2>&1 &
    started+=($!)
    wait_for 30 docker-registry curl -sf "http://$SLIPWAY_TEST_REGISTRY/v2/"
fi

# --- Local base image (no internet: busybox-static imported, never pulled) ---------------
export SLIPWAY_TEST_LOCAL_BASE=slipway-test/busybox:latest
export SLIPWAY_TEST_BASE_IMAGE=$SLIPWAY_TEST_REGISTRY/$SLIPWAY_TEST_LOCAL_BASE
if ! "$docker" image inspect "$SLIPWAY_TEST_LOCAL_BASE" >/dev/null 2>&1; then
    step "importing $SLIPWAY_TEST_LOCAL_BASE from busybox-static"
    rootfs="$work/rootfs"
    mkdir -p "$rootfs/bin" "$rootfs/tmp" "$rootfs/etc"
    cp /bin/busybox "$rootfs/bin/busybox"
    for applet in $(/bin/busybox --list); do
        [ -e "$rootfs/bin/$applet" ] || ln -s busybox "$rootfs/bin/$applet"
    done
    echo "root:x:0:0:root:/root:/bin/sh" >"$rootfs/etc/passwd"
    echo "root:x:0:" >"$rootfs/etc/group"
    tar -C "$rootfs" --numeric-owner -c . | "$docker" import - "$SLIPWAY_TEST_LOCAL_BASE" >/dev/null
fi
if ! skopeo inspect --tls-verify=false "docker://$SLIPWAY_TEST_BASE_IMAGE" >/dev/null 2>&1; then
    step "pushing $SLIPWAY_TEST_BASE_IMAGE"
    "$docker" tag "$SLIPWAY_TEST_LOCAL_BASE" "$SLIPWAY_TEST_BASE_IMAGE"
    "$docker" push "$SLIPWAY_TEST_BASE_IMAGE" >/dev/null
fi

# --- registry (issue 6): a single-node Garage S3 server for the registry's storage tests.
# `cargo install garage` compiles for a long while, so it runs only when garage is missing.
if ! command -v garage >/dev/null; then
    step "installing garage (cargo install, slow the first time)"
    cargo install garage --locked --quiet
fi
step "starting garage"
if garage_env=$(tests/garage.sh start "$work/garage"); then
    eval "$garage_env"
    started+=("$SLIPWAY_TEST_GARAGE_PID")
else
    echo "garage did not start: the S3 storage tests will say so and skip" >&2
fi
# --- end registry

# --- scale-out (issue 10): a throwaway PostgreSQL on loopback for the second test pass.
step "starting PostgreSQL"
chmod 711 "$work" # the postgres user needs to reach its directory inside
eval "$(tests/postgres.sh start "$work/pg")"
pg_stop() { tests/postgres.sh stop "$work/pg"; }
# --- end scale-out

# --- The tests ---------------------------------------------------------------------------
step "running the workspace tests (SQLite, the embedded default)"
status=0
if command -v cargo-nextest >/dev/null; then
    cargo nextest run --workspace --no-fail-fast || status=$?
else
    cargo test --workspace --no-fail-fast || status=$?
fi
# The same store tests again on PostgreSQL (tests/src/database.rs gives each test server a
# database of its own there); builder, browser and document tests do not touch a database.
step "running the database-backed tests again on PostgreSQL"
on_postgres=(api auth cli cli_operations cluster cluster_faults cluster_status cluster_triggers health_heatmap pipeline pipeline_avoid
    pipeline_restart plugins registry status status_kube status_restart triggers triggers_prebuilt)
if command -v cargo-nextest >/dev/null; then
    SLIPWAY_TEST_DATABASE=postgres cargo nextest run -p slipway-tests --no-fail-fast \
        "${on_postgres[@]/#/--test=}" || status=$?
else
    SLIPWAY_TEST_DATABASE=postgres cargo test -p slipway-tests --no-fail-fast \
        "${on_postgres[@]/#/--test=}" || status=$?
fi
pg_stop
exit $status
