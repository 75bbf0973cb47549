#!/usr/bin/env bash
# Loads the fledge server on loopback and prints two figures:
#
#   1. API latency: wrk sends `GET /status` at a fixed RATE (requests/s, spread over
#      CONNS connections) for DURATION seconds while ROLLOUTS rollouts are active (one
#      app each) → achieved requests/s, p50, p99. Then the same without a rate, to
#      show the ceiling.
#   2. Controller: BIG rollouts active at once, run for DURATION seconds → the
#      controller's tick lag and tick duration from its own /metrics (the histograms
#      fledge_controller_tick_lag_seconds and _tick_duration_seconds, read at the
#      start and the end: mean, and the bucket bounds of the median, p99 and max).
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
# The tick histograms, read at the start and at the end of the run.
curl -fs "http://127.0.0.1:$API/metrics" >"$WORK/metrics0.txt"
t0=$(date +%s.%N)
sleep "$DURATION"
curl -fs "http://127.0.0.1:$API/metrics" >"$WORK/metrics1.txt"
t1=$(date +%s.%N)
# One line per histogram: the ticks of the run, their mean, and the upper bounds of
# the buckets holding the median, the 99th percentile and the slowest tick.
histogram() { # name → summary of its samples between the two reads
    awk -v m="$1" '
        FNR == 1 { file++ }
        index($1, m "_bucket{le=\"") == 1 {
            le = substr($1, length(m) + 13); sub(/"}$/, "", le)
            if (file == 1) { b0[le] = $2 } else { b1[le] = $2; order[++n] = le }
        }
        $1 == m "_sum" { if (file == 1) s0 = $2; else s1 = $2 }
        $1 == m "_count" { if (file == 1) c0 = $2; else c1 = $2 }
        function bound(q,   i) {
            for (i = 1; i <= n; i++) if (b1[order[i]] - b0[order[i]] >= q * (c1 - c0)) return order[i]
        }
        END {
            c = c1 - c0
            if (c == 0) { print m ": no tick"; exit }
            printf "%s: %d ticks, mean %.1f ms, median <= %s s, p99 <= %s s, max <= %s s\n",
                m, c, (s1 - s0) / c * 1000, bound(0.5), bound(0.99), bound(1)
        }' "$WORK/metrics0.txt" "$WORK/metrics1.txt"
}
echo "run: $(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f", b - a }')s (tick: 1s)"
histogram fledge_controller_tick_lag_seconds
histogram fledge_controller_tick_duration_seconds
