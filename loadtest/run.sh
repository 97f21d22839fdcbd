#!/usr/bin/env bash
# Load test of the local API (or of BASE_URL with TOKEN set, e.g. a staging stage).
#   loadtest/run.sh            # starts `xtask dev` built with the bench profile, runs every scenario
#   BASE_URL=https://… TOKEN=… DASHBOARD_ID=… loadtest/run.sh
# Needs wrk (Debian package `wrk`). Bounded: each scenario runs DURATION (default 15s) on loopback.
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${DURATION:-15s}
CONNECTIONS=${CONNECTIONS:-16}
command -v wrk >/dev/null || { echo "install wrk (apt-get install wrk)"; exit 1; }

json() { python3 -c "import sys,json; print(json.load(sys.stdin)$1)"; }

if [ -z "${BASE_URL:-}" ]; then
  log=$(mktemp)
  cargo run --quiet --profile bench -p xtask -- dev >"$log" 2>&1 &
  dev=$!
  trap 'kill $dev 2>/dev/null; wait $dev 2>/dev/null || true' EXIT
  for _ in $(seq 1 600); do grep -q "Local API ready" "$log" && break; sleep 1; done
  grep -q "Local API ready" "$log" || { cat "$log"; exit 1; }
  BASE_URL=http://127.0.0.1:3000
  TOKEN=$(curl -s "http://127.0.0.1:3001/dev/token?sub=load&tenant=load&roles=editor" | json "['access_token']")
fi
auth=(-H "Authorization: Bearer $TOKEN")

# Seed: 20 dashboards (one page) and one to read.
for i in $(seq 1 20); do
  id=$(curl -s "${auth[@]}" -H 'content-type: application/json' \
       -d "{\"name\":\"load $i\",\"description\":\"seed\"}" "$BASE_URL/v1/dashboards" | json "['id']")
done
DASHBOARD_ID=${DASHBOARD_ID:-$id}

run() {
  echo "### $1"
  shift
  wrk -t2 -c"$CONNECTIONS" -d"$DURATION" --latency "$@" | grep -E "Requests/sec|Latency|50%|90%|99%|Non-2xx|Socket errors" || true
}
run "health (no auth, no AWS)" "$BASE_URL/v1/dashboards/health"
run "list dashboards (JWT + 1 Query of 20 items)" "${auth[@]}" "$BASE_URL/v1/dashboards"
run "get dashboard (JWT + 1 GetItem)" "${auth[@]}" "$BASE_URL/v1/dashboards/$DASHBOARD_ID"
run "bad token (401 path)" -H "Authorization: Bearer not.a.jwt" "$BASE_URL/v1/dashboards"
