#!/usr/bin/env bash
# The main job on the embedded defaults (SQLite + local disk in ./.slipway, no external
# service): builds the `slipway` binary, starts the server, checks that it answers, shows
# what to try, and keeps serving until Ctrl-C.
set -euo pipefail
cd "$(dirname "$0")/.."
listen=${SLIPWAY_LISTEN:-127.0.0.1:7700}

echo "== building slipway (release)" >&2
cargo build --release -p slipway-server --bin slipway
bin=${CARGO_TARGET_DIR:-target}/release/slipway

"$bin" serve --listen "$listen" --data-dir .slipway &
server=$!
trap 'kill $server 2>/dev/null; wait $server 2>/dev/null' EXIT INT TERM

for _ in $(seq 1 100); do
    curl -sf "http://$listen/readyz" >/dev/null 2>&1 && break
    kill -0 "$server" 2>/dev/null || { echo "error: slipway serve exited; see the lines above" >&2; exit 1; }
    sleep 0.1
done
echo
echo "== slipway is ready on http://$listen (data in ./.slipway)"
curl -s "http://$listen/readyz"
echo
cat <<TXT

An admin API token was written to .slipway/admin-token on the first start.

Try:
  token=\$(cat .slipway/admin-token)
  curl -s -H "Authorization: Bearer \$token" http://$listen/v1/plugins        # the built-in plugins
  curl -s -H "Authorization: Bearer \$token" http://$listen/v1/builds
  curl -s http://$listen/healthz
  curl -s http://$listen/readyz
  curl -s http://$listen/metrics | grep slipway_
  $bin config                      # the effective configuration, secrets masked

Press Ctrl-C to stop (the server finishes in-flight requests first).
TXT
wait "$server"
