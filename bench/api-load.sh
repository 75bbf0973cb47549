#!/usr/bin/env bash
# Loads the fledge server on loopback and prints two figures:
#
#   1. API latency: wrk sends `GET /status` at a fixed RATE (requests/s, spread over
#      CONNS connections) for DURATION seconds while ROLLOUTS rollouts are active (one
#      app each) → achieved requests/s, p50, p99. Then the same without a rate, to
#      show the ceiling.
#   2. Controller: BIG rollouts active at once, run for DURATION seconds → the
#      controller's tick lag and tick duration from its own /metrics
#      (the gauges fledge_controller_tick_lag_seconds and _tick_duration_seconds,
#      sampled twice a second).
#
# The rollouts' stages last 10 minutes, so they all stay active for the whole run;
# their upstreams are a closed port (no traffic is proxied: this measures the API
# and the controller, not the proxy, which bench/proxy.sh measures).
#
# The server's per-client rate limit is turned off for the run.
#
# Usage: bench/api-load.sh    (ROLLOUTS=100 BIG=1000 DURATION=20 RATE=1000 CONNS=10 to change;
#                              FLEDGE=path/to/fledge to skip the build)
# Needs: cargo, wrk, curl.
set -euo pipefail

ROLLOUTS=${ROLLOUTS:-100}
BIG=${BIG:-1000}
DURATION=${DURATION:-20}
RATE=${RATE:-1000}
CONNS=${CONNS:-10}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
WORK=$(mktemp -d /tmp/fledge-api-load.XXXXXX)
PID=

cleanup() {
    [[ -n $PID ]] && kill "$PID" 2>/dev/null || true
    wait 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT

if [[ -z ${FLEDGE:-} ]]; then
    (cd "$ROOT" && cargo build --release -p fledge --bin fledge >&2)
    FLEDGE=$TARGET/release/fledge
fi

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# Starts a server with $1 apps, each with an active rollout.
start_with_rollouts() {
    local n=$1 api
    api=$(free_port)
    local closed
    closed=$(free_port)
    {
        echo "listen: 127.0.0.1:$api"
        echo "store: sqlite://$WORK/fledge-$n.db"
        echo "controller:"
        echo "  tick: 1s"
        # Capacity is measured here, not the per-client rate limit: one wrk client
        # and 1000 quick POSTs would otherwise be answered 429.
        echo "limits:"
        echo "  ratePerSecond: 0"
        echo "apps:"
        for i in $(seq 1 "$n"); do
            echo "  - name: app$i"
            echo "    listen: 127.0.0.1:0"
            echo "    stable: {version: v1, endpoints: [\"127.0.0.1:$closed\"]}"
            echo "    canary: {endpoints: [\"127.0.0.1:$closed\"]}"
        done
    } >"$WORK/fledge-$n.yaml"
    "$FLEDGE" serve --config "$WORK/fledge-$n.yaml" 2>"$WORK/serve-$n.log" &
    PID=$!
    for _ in $(seq 1 300); do
        curl -fs "http://127.0.0.1:$api/readyz" >/dev/null 2>&1 && break
        sleep 0.1
    done
    curl -fs "http://127.0.0.1:$api/readyz" >/dev/null || {
        echo "server did not become ready; log: $WORK/serve-$n.log" >&2
        tail -5 "$WORK/serve-$n.log" >&2
        exit 1
    }
    for i in $(seq 1 "$n"); do
        printf 'app: app%s\nversion: v2\nanalysis:\n  interval: 1s\nstages:\n  - traffic: 10\n    duration: 10m\n  - traffic: 100\n    final: true\n    promote: true\n' "$i" |
            curl -fs -o /dev/null -X POST -H 'content-type: application/yaml' --data-binary @- \
                "http://127.0.0.1:$api/rollouts" || { echo "cannot create rollout $i" >&2; exit 1; }
    done
    API=$api
}

metric() { # name → value of an unlabelled sample
    curl -fs "http://127.0.0.1:$API/metrics" | awk -v m="$1" '$1 == m { print $2 }'
}

summarise() {
    awk '/Requests\/sec/ { print "  requests/s: " $2 } /^ +50%/ { print "  p50: " $2 } /^ +99%/ { print "  p99: " $2 } /Non-2xx/ { print "  non-2xx: " $NF }' "$1"
}

start_with_rollouts "$ROLLOUTS"
# Each connection waits CONNS*1000/RATE ms before its next request: RATE in all.
cat >"$WORK/rate.lua" <<LUA
function delay() return $(( CONNS * 1000 / RATE )) end
LUA
echo "== API: GET /status at $RATE requests/s ($CONNS connections) with $ROLLOUTS active rollouts, ${DURATION}s"
wrk -t1 -c"$CONNS" -d"${DURATION}s" --latency -s "$WORK/rate.lua" "http://127.0.0.1:$API/status" >"$WORK/wrk.txt"
summarise "$WORK/wrk.txt"
echo "== API: GET /status as fast as it answers ($CONNS connections), ${DURATION}s"
wrk -t1 -c"$CONNS" -d"${DURATION}s" --latency "http://127.0.0.1:$API/status" >"$WORK/wrk-max.txt"
summarise "$WORK/wrk-max.txt"
kill "$PID"; wait "$PID" 2>/dev/null || true; PID=

echo "== controller: $BIG active rollouts, ${DURATION}s"
started=$(date +%s)
start_with_rollouts "$BIG"
echo "created in $(( $(date +%s) - started ))s"
# The tick gauges hold the last tick's values: sample them twice a second.
ticks0=$(metric fledge_controller_ticks_total)
t0=$(date +%s.%N)
: >"$WORK/ticks.txt"
for _ in $(seq 1 $((DURATION * 2))); do
    echo "$(metric fledge_controller_tick_lag_seconds) $(metric fledge_controller_tick_duration_seconds)" >>"$WORK/ticks.txt"
    sleep 0.5
done
ticks1=$(metric fledge_controller_ticks_total)
t1=$(date +%s.%N)
echo "ticks run: $((${ticks1%.*} - ${ticks0%.*})) in $(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f", b - a }')s (tick: 1s)"
sort -n "$WORK/ticks.txt" | awk '{ lag[NR] = $1; dur[NR] = $2; if ($2 > maxd) maxd = $2 }
    END { printf "tick lag: median %.1f ms, max %.1f ms; tick duration: max %.1f ms (%d samples)\n",
          lag[int((NR + 1) / 2)] * 1000, lag[NR] * 1000, maxd * 1000, NR }'
