#!/usr/bin/env bash
# Benchmarks fledge's built-in proxy, as users run it (`fledge serve` with a config
# file, one app and a rollout held at 20%), against nginx and HAProxy on loopback.
#
# Each proxy splits 80/20 between two keep-alive backends (bench_backend) and is
# driven by wrk at 64 and 256 connections, in interleaved rounds so that drift of
# the machine hits every proxy alike (each round in another order). Each proxy gets
# one core's worth of workers: `fledge serve` with `proxy.workers: 1`, nginx one
# worker process, HAProxy one thread; the proxies are pinned to CPU 0 and wrk to
# CPU 1 when there are two. fledge's whole process is measured: its API and
# controller run beside the proxy
# (the controller reads the proxy's counters every second, as in production).
#
# With TLS=1 (the default) each proxy also terminates TLS on a second listener
# with the same certificate (a fresh self-signed EC P-256 one): rows fledge-tls,
# nginx-tls and haproxy-tls, driven by the same wrk over https:// (keep-alive, so
# mostly record encryption, few handshakes). fledge serves them from a second app
# in the same process. Each TLS cell opens with every client's handshake at once:
# at 256 connections wrk's one thread needs about 0.3 s for its side of them
# before the first answer arrives (through fledge and HAProxy alike), and the
# requests of that phase (every proxy's p99.9 is 150-180 ms there) weigh on the
# p99 the more, the shorter DURATION is. In 8-second runs at 256 connections they
# came to 0.3% to 2% of the requests through each proxy, once 4.5% (counted per
# request from h2load's log), close enough to the p99 to move it from round to
# round. A cell lasts 30 s by default, which cuts that share to under a third, so
# that the p99 measures the proxies serving rather than wrk's start (`DURATION=10`
# runs the shorter cells). The first request on each connection pays for another
# start too: fledge closes upstream connections idle for 4 s, so each of its cells
# begins by dialling them again.
#
# A third table is what one user feels at low load: one client sending keep-alive
# requests one after another (wrk -c1) straight to the backend and through each
# proxy; the latency each proxy adds is its p50 (and mean) minus the direct one.
#
# With EXAMPLE=1 the proxy library is also driven alone, without the server around
# it (the bench_proxy example on a current-thread runtime): row fledge-lib.
#
# With DATAPLANE=1 (the default) a second `fledge serve` runs its proxies in a data
# plane of its own (`proxy.dataPlane`): rows fledge-dp and fledge-dp-tls measure the
# data-plane process, which serves the traffic; the control process beside it is
# reported on its own line (its CPU over the whole run and its peak RSS).
#
# With FLEDGE_PREV=/path/to/an/older/fledge, that binary runs beside the new one
# (rows fledge-prev, fledge-prev-tls), so that a change is measured in one run.
#
# Prints per proxy and concurrency: requests/s, p50, p99 and p99.9 latency, proxy CPU
# seconds, requests per proxy CPU-second, peak RSS, the proxy's user and system CPU per
# request (microseconds), how far the rounds spread, fledge's ratio to each peer
# (plain against plain, TLS against TLS) and, round by round, fledge's p99 against the
# lower of the two peers' in the same round, and how the p99 follows the time the
# backend's threads waited for a CPU; what each client connection costs in
# anonymous memory (bench/conn_memory.py, before the load); and each process's
# resident memory after the load, split into file-backed pages (mostly its code) and
# anonymous memory.
#
# Usage: bench/proxy.sh   (ROUNDS=3 DURATION=30 CONNS="64 256" TLS=1 EXAMPLE=0
#                          DATAPLANE=1 SEQ_DURATION=5 FLEDGE_PREV= to change)
# Needs: cargo, nginx, haproxy, wrk, openssl (installs the Debian packages if missing).
set -euo pipefail

ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-30}
CONNS=${CONNS:-"64 256"}
TLS=${TLS:-1}
EXAMPLE=${EXAMPLE:-0}
DATAPLANE=${DATAPLANE:-1}
SEQ_DURATION=${SEQ_DURATION:-5}
FLEDGE_PREV=${FLEDGE_PREV:-}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
WORK=$(mktemp -d /tmp/fledge-bench.XXXXXX)
PIDS=()

cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    # The data plane outlives `fledge serve`: stopped once the server is gone (a
    # server still running would start another); `--stop` returns once it has
    # exited. Killed should it not answer or not end within 20 s.
    if [[ -S ${WORK}/dp.sock ]] &&
        ! timeout 20 "$FLEDGE" dataplane --socket "$WORK/dp.sock" --stop 2>/dev/null; then
        kill -KILL "$(tr -d ' \n' 2>/dev/null <"$WORK/dp.sock.pid")" 2>/dev/null || true
    fi
    rm -rf "$WORK"
}
trap cleanup EXIT

need_install=()
for tool in nginx haproxy wrk openssl; do
    command -v "$tool" >/dev/null || need_install+=("$tool")
done
if ((${#need_install[@]})); then
    echo "installing nginx-light haproxy wrk openssl" >&2
    # Another install may hold the dpkg lock: wait for it, bounded.
    for _ in $(seq 60); do
        if apt-get install -y -qq nginx-light haproxy wrk openssl >/dev/null 2>&1; then break; fi
        sleep 5
    done
fi

echo "building fledge and the bench backends (release)..." >&2
(cd "$ROOT" && CARGO_TARGET_DIR=$TARGET cargo build -q --release -p fledge --bin fledge &&
    CARGO_TARGET_DIR=$TARGET cargo build -q --release -p fledge-proxy \
        --example bench_proxy --example bench_backend)
BIN=$TARGET/release/examples
FLEDGE=$TARGET/release/fledge

NCPU=$(nproc)
if ((NCPU >= 2)); then PROXY_CPU="taskset -c 0"; LOAD_CPU="taskset -c 1"; else PROXY_CPU=""; LOAD_CPU=""; fi
HZ=$(getconf CLK_TCK)

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() {
    for _ in $(seq 100); do
        (echo >/dev/tcp/127.0.0.1/"$1") 2>/dev/null && return 0
        sleep 0.1
    done
    echo "port $1 did not open" >&2
    return 1
}

# One certificate for every TLS listener.
CERT=$WORK/tls/cert.pem; KEY=$WORK/tls/key.pem
mkdir -p "$WORK/tls"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
    -subj "/CN=localhost" -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" \
    -keyout "$KEY" -out "$CERT" 2>/dev/null
cat "$CERT" "$KEY" >"$WORK/tls/haproxy.pem"

S_PORT=$(free_port); C_PORT=$(free_port)
$BIN/bench_backend 127.0.0.1:$S_PORT stable 127.0.0.1:$C_PORT canary &
B_PID=$!; PIDS+=($B_PID)
wait_port "$S_PORT"; wait_port "$C_PORT"

# --- fledge serve: one app per listener, each with a rollout held at 20% ---
# start_fledge NAME PORT TLS_PORT API_PORT [DATAPLANE_SOCKET] [BINARY]: sets FPID.
start_fledge() {
    local name=$1 port=$2 tport=$3 api=$4 socket=${5:-} bin=${6:-$FLEDGE}
    {
        echo "listen: 127.0.0.1:$api"
        echo "store: sqlite://$WORK/$name.db"
        if [[ -n $socket ]]; then
            echo "proxy: {workers: 1, dataPlane: {socket: $socket}}"
        else
            echo "proxy: {workers: 1}"
        fi
        echo "apps:"
        echo "  - name: bench"
        echo "    listen: 127.0.0.1:$port"
        echo "    stable: {version: stable, endpoints: [\"127.0.0.1:$S_PORT\"]}"
        echo "    canary: {endpoints: [\"127.0.0.1:$C_PORT\"]}"
        if ((TLS)); then
            echo "  - name: bench-tls"
            echo "    listen: 127.0.0.1:$tport"
            echo "    tls: {cert: $CERT, key: $KEY}"
            echo "    stable: {version: stable, endpoints: [\"127.0.0.1:$S_PORT\"]}"
            echo "    canary: {endpoints: [\"127.0.0.1:$C_PORT\"]}"
        fi
    } >"$WORK/$name.yaml"
    $PROXY_CPU "$bin" serve --config "$WORK/$name.yaml" 2>"$WORK/$name.log" &
    FPID=$!; PIDS+=($FPID)
    wait_port "$api"; wait_port "$port"
    # A stage without a duration waits for a manual promote: the split stays at 20%.
    for app in bench $( ((TLS)) && echo bench-tls); do
        printf 'app: %s\nversion: canary\nstages:\n  - traffic: 20\n  - traffic: 100\n    final: true\n    promote: true\n' \
            "$app" >"$WORK/rollout-$app.yaml"
        "$FLEDGE" apply --server "http://127.0.0.1:$api" -f "$WORK/rollout-$app.yaml" >/dev/null
    done
    # Until the controller has installed the 20% route the canary gets nothing.
    for _ in $(seq 100); do
        curl -s "http://127.0.0.1:$api/metrics" | grep -q 'app="bench",version="canary"' && break
        curl -s -o /dev/null "http://127.0.0.1:$port/"
        sleep 0.1
    done
}
F_PORT=$(free_port); FT_PORT=$(free_port); API_PORT=$(free_port)
start_fledge fledge "$F_PORT" "$FT_PORT" "$API_PORT"
F_PID=$FPID; FT_PID=$FPID
if ((DATAPLANE)); then
    D_PORT=$(free_port); DT_PORT=$(free_port); DAPI_PORT=$(free_port)
    start_fledge fledge-dp "$D_PORT" "$DT_PORT" "$DAPI_PORT" "$WORK/dp.sock"
    DC_PID=$FPID
    D_PID=$(tr -d ' \n' <"$WORK/dp.sock.pid")
    # The data plane was started by `fledge serve` on CPU 0 and inherits it.
    PIDS+=($D_PID)
    DC_CPU_START=$(awk '{print $14 + $15}' "/proc/$DC_PID/stat")
fi

if [[ -n $FLEDGE_PREV ]]; then
    P_PORT=$(free_port); PT_PORT=$(free_port); PAPI_PORT=$(free_port)
    start_fledge fledge-prev "$P_PORT" "$PT_PORT" "$PAPI_PORT" "" "$FLEDGE_PREV"
    P_PID=$FPID
fi

# --- fledge's proxy library alone (diagnosis) ---
if ((EXAMPLE)); then
    FL_PORT=$(free_port)
    $PROXY_CPU $BIN/bench_proxy 127.0.0.1:$FL_PORT 127.0.0.1:$S_PORT 127.0.0.1:$C_PORT 20 1 2>"$WORK/fledge-lib.log" &
    FL_PID=$!; PIDS+=($FL_PID)
    wait_port "$FL_PORT"
fi

# --- nginx: one worker, upstream keep-alive; a plain and a TLS server ---
N_PORT=$(free_port); NT_PORT=$(free_port)
mkdir -p "$WORK/nginx/logs"
cat >"$WORK/nginx/nginx.conf" <<EOF
worker_processes 1;
pid $WORK/nginx/nginx.pid;
error_log $WORK/nginx/error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    keepalive_requests 1000000;
    upstream app {
        server 127.0.0.1:$S_PORT weight=80;
        server 127.0.0.1:$C_PORT weight=20;
        keepalive 256;
        keepalive_requests 1000000;
    }
    server {
        listen 127.0.0.1:$N_PORT;
        listen 127.0.0.1:$NT_PORT ssl;
        ssl_certificate $CERT;
        ssl_certificate_key $KEY;
        ssl_protocols TLSv1.2 TLSv1.3;
        location / {
            proxy_pass http://app;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host \$host;
            proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
        }
    }
}
EOF
$PROXY_CPU nginx -p "$WORK/nginx" -c "$WORK/nginx/nginx.conf" -g 'daemon off;' &
N_MASTER=$!; PIDS+=($N_MASTER)
wait_port "$N_PORT"
N_PID=$(ps --ppid "$N_MASTER" -o pid= | head -1 | tr -d ' ')

# --- HAProxy: one thread, upstream keep-alive (http-reuse); plain and TLS ---
H_PORT=$(free_port); HT_PORT=$(free_port)
cat >"$WORK/haproxy.cfg" <<EOF
global
    nbthread 1
    maxconn 4096
defaults
    mode http
    timeout connect 2s
    timeout client 30s
    timeout server 30s
    option forwardfor
    http-reuse always
frontend fe
    bind 127.0.0.1:$H_PORT
    bind 127.0.0.1:$HT_PORT ssl crt $WORK/tls/haproxy.pem ssl-min-ver TLSv1.2
    default_backend app
backend app
    balance roundrobin
    server stable 127.0.0.1:$S_PORT weight 80
    server canary 127.0.0.1:$C_PORT weight 20
EOF
$PROXY_CPU haproxy -db -f "$WORK/haproxy.cfg" &
H_PID=$!; PIDS+=($H_PID)
wait_port "$H_PORT"

# The median of a[1..n], as an awk function the summaries share.
MEDIAN='
function median(a, n,   i, j, t) {
    for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++) if (a[j] < a[i]) { t = a[i]; a[i] = a[j]; a[j] = t }
    return n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
}'
# User and system ticks, "utime stime".
cpu_split() { awk '{print $14, $15}' "/proc/$1/stat"; }
hwm_kib() { awk '/VmHWM/ {print $2}' "/proc/$1/status"; }
# Nanoseconds the threads of process $1 have spent runnable but waiting for a CPU
# (the second field of each thread's schedstat).
run_queue_ns() { cat /proc/"$1"/task/*/schedstat 2>/dev/null | awk '{w += $2} END {printf "%.0f", w}'; }
# wrk prints latencies as 1.23us / 4.56ms / 1.2s: normalise to ms.
to_ms() {
    awk -v v="$1" 'BEGIN {
        n = v + 0
        if (v ~ /us$/) n /= 1000; else if (v ~ /ms$/) n = n; else if (v ~ /s$/) n *= 1000
        printf "%.3f", n }'
}

declare -A URL=([fledge]=http://127.0.0.1:$F_PORT/ [nginx]=http://127.0.0.1:$N_PORT/
    [haproxy]=http://127.0.0.1:$H_PORT/)
declare -A PID=([fledge]=$F_PID [nginx]=$N_PID [haproxy]=$H_PID)
PROXIES="fledge nginx haproxy"
if ((EXAMPLE)); then
    URL+=([fledge-lib]=http://127.0.0.1:$FL_PORT/)
    PID+=([fledge-lib]=$FL_PID)
    PROXIES="$PROXIES fledge-lib"
fi
if [[ -n $FLEDGE_PREV ]]; then
    URL+=([fledge-prev]=http://127.0.0.1:$P_PORT/)
    PID+=([fledge-prev]=$P_PID)
    PROXIES="$PROXIES fledge-prev"
fi
if ((DATAPLANE)); then
    URL+=([fledge-dp]=http://127.0.0.1:$D_PORT/)
    PID+=([fledge-dp]=$D_PID)
    PROXIES="$PROXIES fledge-dp"
fi
if ((TLS)); then
    URL+=([fledge-tls]=https://127.0.0.1:$FT_PORT/ [nginx-tls]=https://127.0.0.1:$NT_PORT/
        [haproxy-tls]=https://127.0.0.1:$HT_PORT/)
    # Each serves both listeners from the same process.
    PID+=([fledge-tls]=$FT_PID [nginx-tls]=$N_PID [haproxy-tls]=$H_PID)
    PROXIES="$PROXIES fledge-tls nginx-tls haproxy-tls"
    if [[ -n $FLEDGE_PREV ]]; then
        URL+=([fledge-prev-tls]=https://127.0.0.1:$PT_PORT/)
        PID+=([fledge-prev-tls]=$P_PID)
        PROXIES="$PROXIES fledge-prev-tls"
    fi
    if ((DATAPLANE)); then
        URL+=([fledge-dp-tls]=https://127.0.0.1:$DT_PORT/)
        PID+=([fledge-dp-tls]=$D_PID)
        PROXIES="$PROXIES fledge-dp-tls"
    fi
fi
RESULTS=$WORK/results
: >"$RESULTS"

# The machine's load skews every figure (the proxies share it with wrk, the
# backends and whatever else runs): record it with the results.
LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)

# What each proxy's client connections cost in memory, measured on the fresh
# process before any load: 256 connections opened at once, then a first byte on
# each, then one request each (bench/conn_memory.py).
MEMORY=$WORK/memory
for p in $PROXIES; do
    [[ $p == *-tls || $p == fledge-lib ]] && continue
    port=${URL[$p]#http://127.0.0.1:}
    echo "$p $(python3 "$ROOT/bench/conn_memory.py" "${port%/}" "${PID[$p]}" 256)" >>"$MEMORY"
done

# Warm-up: fill the upstream pools.
for p in $PROXIES; do
    $LOAD_CPU wrk -t1 -c64 -d2s "${URL[$p]}" >/dev/null
done

# The proxies in the order of round R: the list turned by R - 1 places, so that no
# proxy always runs first after the load changes (from 256 TLS connections to 64
# plain ones, say) or always right after the same neighbour.
turned() {
    local -a list=($1)
    local k=$((($2 - 1) % ${#list[@]}))
    echo "${list[@]:k}" "${list[@]:0:k}"
}

# wrk's --latency stops at p99; the script adds p99.9 (microseconds), which shows
# how far the machine's scheduling stalls reach (the same for every proxy).
cat >"$WORK/tail.lua" <<'EOF'
done = function(summary, latency, requests)
    io.write(string.format("p99.9 %d\n", latency:percentile(99.9)))
end
EOF

for round in $(seq "$ROUNDS"); do
    for c in $CONNS; do
        for p in $(turned "$PROXIES" "$round"); do
            read -r ubefore sbefore < <(cpu_split "${PID[$p]}")
            bwait=$(run_queue_ns "$B_PID")
            out=$($LOAD_CPU wrk -t1 -c"$c" -d"${DURATION}s" --latency -s "$WORK/tail.lua" "${URL[$p]}")
            read -r uafter safter < <(cpu_split "${PID[$p]}")
            bwait=$(($(run_queue_ns "$B_PID") - bwait))
            reqs=$(awk '/requests in/ {print $1}' <<<"$out")
            rps=$(awk '/^Requests\/sec/ {print $2}' <<<"$out")
            p50=$(to_ms "$(awk '$1 == "50%" {print $2}' <<<"$out")")
            p99=$(to_ms "$(awk '$1 == "99%" {print $2}' <<<"$out")")
            p999=$(awk '$1 == "p99.9" {printf "%.3f", $2 / 1000}' <<<"$out")
            errs=$(awk '/Non-2xx|Socket errors/ {print}' <<<"$out" | tr '\n' ' ')
            cpu=$(awk -v a="$((uafter + safter))" -v b="$((ubefore + sbefore))" -v hz="$HZ" 'BEGIN {printf "%.2f", (a - b) / hz}')
            # Microseconds of user and of system CPU per request.
            split=$(awk -v u="$((uafter - ubefore))" -v s="$((safter - sbefore))" -v n="$reqs" -v hz="$HZ" \
                'BEGIN {n = n > 0 ? n : 1; printf "%.2f %.2f", u / hz * 1e6 / n, s / hz * 1e6 / n}')
            # Microseconds the backend's threads waited for a CPU, per request.
            bw=$(awk -v w="$bwait" -v n="$reqs" 'BEGIN {printf "%.2f", w / 1000 / (n > 0 ? n : 1)}')
            echo "$p $c $round $rps $p50 $p99 $cpu $split $p999 $bw" >>"$RESULTS"
            printf 'round %s  c=%-3s %-11s %9.0f req/s  p50 %7.3f ms  p99 %7.3f ms  cpu %6.2f s %s\n' \
                "$round" "$c" "$p" "$rps" "$p50" "$p99" "$cpu" "$errs" >&2
        done
    done
done

# One client, one keep-alive connection, one request at a time: straight to the
# stable backend, then through each proxy (plain HTTP), interleaved by round.
SEQ=$WORK/sequential
: >"$SEQ"
for round in $(seq "$ROUNDS"); do
    for p in direct fledge $( ((DATAPLANE)) && echo fledge-dp) $([[ -n $FLEDGE_PREV ]] && echo fledge-prev) nginx haproxy; do
        if [[ $p == direct ]]; then url=http://127.0.0.1:$S_PORT/; else url=${URL[$p]}; fi
        out=$($LOAD_CPU wrk -t1 -c1 -d"${SEQ_DURATION}s" --latency "$url")
        reqs=$(awk '/requests in/ {print $1}' <<<"$out")
        p50=$(to_ms "$(awk '$1 == "50%" {print $2}' <<<"$out")")
        mean=$(to_ms "$(awk '$1 == "Latency" && $2 != "Distribution" {print $2; exit}' <<<"$out")")
        echo "$p $round $reqs $p50 $mean" >>"$SEQ"
        printf 'round %s  c=1   %-11s %9s requests  p50 %7.3f ms  mean %7.3f ms\n' \
            "$round" "$p" "$reqs" "$p50" "$mean" >&2
    done
done

echo
echo "Loopback, 80/20 split, wrk -t1, ${ROUNDS} x ${DURATION}s per cell; medians over rounds."
echo "Load average (1, 5, 15 min): ${LOAD_BEFORE} before, $(cut -d' ' -f1-3 /proc/loadavg) after; $(nproc) CPUs."
# The memory rows hold only for a build whose code is laid out by the list.
python3 "$ROOT/bench/code_order.py" "$FLEDGE" "$ROOT/crates/fledge/code-order.txt"
printf '%-5s %-11s %10s %9s %9s %8s %12s %9s %12s %10s\n' conns proxy "req/s" "p50 ms" "p99 ms" "cpu s" "req/cpu-s" "RSS MiB" "usr/sys us" "p99.9 ms"
for c in $CONNS; do
    for p in $PROXIES; do
        awk -v p="$p" -v c="$c" -v d="$DURATION" -v hwm="$(hwm_kib "${PID[$p]}")" "$MEDIAN"'
            $1 == p && $2 == c { n++; rps[n] = $4; p50[n] = $5; p99[n] = $6; cpu[n] = $7; eff[n] = $7 > 0 ? $4 * d / $7 : 0; usr[n] = $8; sys[n] = $9; tail[n] = $10 }
            END { printf "%-5s %-11s %10.0f %9.3f %9.3f %8.2f %12.0f %9.1f %5.2f/%-5.2f %10.3f\n",
                  c, p, median(rps, n), median(p50, n), median(p99, n), median(cpu, n), median(eff, n), hwm / 1024,
                  median(usr, n), median(sys, n), median(tail, n) }' "$RESULTS"
    done
done | tee "$WORK/table"

# One round can move a median: how far the rounds spread, per cell.
echo
echo "Spread over the ${ROUNDS} rounds, lowest to highest"
printf '%-5s %-13s %21s %23s\n' conns proxy "p99 ms" "req/cpu-s"
for c in $CONNS; do
    for p in $PROXIES; do
        awk -v p="$p" -v c="$c" -v d="$DURATION" "$MEDIAN"'
            $1 == p && $2 == c { n++; p99[n] = $6; eff[n] = $7 > 0 ? $4 * d / $7 : 0 }
            END {
                # median() sorts in place: first and last are the extremes.
                median(p99, n); median(eff, n)
                printf "%-5s %-13s %9.3f to %-8.3f %10.0f to %-9.0f\n", c, p, p99[1], p99[n], eff[1], eff[n]
            }' "$RESULTS"
    done
done

echo
echo "Anonymous memory per client connection (256 at once, before any load), KiB"
printf '%-11s %8s %11s %9s %7s\n' proxy open "first byte" request total
awk '{printf "%-11s %8s %11s %9s %7s\n", $1, $2, $3, $4, $5}' "$MEMORY"

# Where the resident memory is, after the load: pages of program files (mostly the
# program's code, shared with the page cache) and anonymous memory (heaps, buffers).
echo
echo "Resident memory now, after the load: file-backed (mostly code) + anonymous, MiB"
declare -A SEEN=()
for p in $PROXIES; do
    pid=${PID[$p]}
    [[ -n ${SEEN[$pid]:-} ]] && continue
    SEEN[$pid]=1
    awk -v p="$p" '/RssFile/ {f = $2} /RssShmem/ {s = $2} /RssAnon/ {a = $2}
        END {printf "  %-11s %6.1f + %6.1f\n", p, (f + s) / 1024, a / 1024}' "/proc/$pid/status"
done

echo
echo "fledge relative to each peer (req/cpu-s: higher is better; p99: lower is better)"
for c in $CONNS; do
    awk -v c="$c" '
        $1 == c { eff[$2] = $7; p99[$2] = $5 }
        END {
            for (peer in eff) {
                if (peer ~ /^fledge/) continue
                tls = peer ~ /-tls$/
                split(tls ? "fledge-tls fledge-dp-tls" : "fledge fledge-dp", selves, " ")
                for (i = 1; i <= 2; i++) {
                    self = selves[i]
                    if (self in eff)
                        printf "c=%-4s %-13s vs %-11s req/cpu-s x%.2f   p99 x%.2f\n", c, self, peer, eff[self] / eff[peer], p99[self] / p99[peer]
                }
            }
        }' "$WORK/table"
done

# The medians above compare cells that ran minutes apart; within one round the
# proxies ran back to back. Paired by round, fledge's p99 against the lower of the
# two peers' p99 in the same round. Were all three alike, the lowest of three would
# be fledge's in about one round in three, so a count well above that is a lead that
# the rounds' noise has not made up.
echo
echo "p99 round by round: fledge's over the lower peer's of the same round (under 1: fledge's is lower)"
for c in $CONNS; do
    for self in $PROXIES; do
        [[ $self == fledge* ]] || continue
        awk -v c="$c" -v self="$self" "$MEDIAN"'
            $2 == c { p99[$1, $3] = $6; if ($3 > rounds) rounds = $3 }
            END {
                tls = self ~ /-tls$/
                a = tls ? "nginx-tls" : "nginx"; b = tls ? "haproxy-tls" : "haproxy"
                for (r = 1; r <= rounds; r++) {
                    if (!((self, r) in p99) || !((a, r) in p99) || !((b, r) in p99)) continue
                    low = p99[a, r] < p99[b, r] ? p99[a, r] : p99[b, r]
                    if (low <= 0) continue
                    n++; ratio[n] = p99[self, r] / low; line = line sprintf(" %.2f", ratio[n])
                    if (ratio[n] <= 1) k++
                }
                if (n) printf "c=%-4s %-13s lower in %d of %d rounds, median x%.2f:%s\n", c, self, k, n, median(ratio, n), line
            }' "$RESULTS"
    done
done

# On two cores the backend's threads are not pinned: woken by the proxy's write, they
# can queue on the proxy's core and wait there while the proxy runs, and a request
# they serve late is late through any proxy. How long they waited per request, and
# whether the rounds' p99 rises with it (rho near +1) or not (near 0).
echo
echo "The backend's wait for a CPU (µs per request, median over rounds) and the p99:"
echo "Spearman's rank correlation over every proxy's rounds of one kind and concurrency"
python3 - "$RESULTS" "$CONNS" "$PROXIES" <<'EOF'
import statistics, sys
rows = [l.split() for l in open(sys.argv[1]) if len(l.split()) >= 11]
conns, proxies = sys.argv[2].split(), sys.argv[3].split()
def ranks(v):
    """Each value's rank from 0, ties given their mean rank."""
    order = sorted(range(len(v)), key=v.__getitem__)
    r = [0.0] * len(v)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and v[order[j + 1]] == v[order[i]]:
            j += 1
        for k in range(i, j + 1):
            r[order[k]] = (i + j) / 2
        i = j + 1
    return r
for c in conns:
    for tls in (False, True):
        cell = [r for r in rows if r[1] == c and r[0].endswith("-tls") == tls]
        if len(cell) < 3:
            continue
        waits = {p: statistics.median(float(r[10]) for r in cell if r[0] == p)
                 for p in proxies if any(r[0] == p for r in cell)}
        # Spearman's rho: Pearson's correlation of the ranks.
        try:
            rho = statistics.correlation(ranks([float(r[5]) for r in cell]),
                                         ranks([float(r[10]) for r in cell]))
        except statistics.StatisticsError:  # one of them constant
            rho = float("nan")
        print(f"c={c:<4} {'tls' if tls else 'plain':<5} rho {rho:+.2f} over {len(cell):>2} cells;",
              "  ".join(f"{p} {w:.1f}" for p, w in waits.items()))
EOF

echo
echo "One client, sequential keep-alive requests (wrk -t1 -c1, ${ROUNDS} x ${SEQ_DURATION}s): medians over rounds"
printf '%-11s %9s %9s %14s %15s\n' proxy "p50 us" "mean us" "added p50 us" "added mean us"
for p in direct fledge $( ((DATAPLANE)) && echo fledge-dp) $([[ -n $FLEDGE_PREV ]] && echo fledge-prev) nginx haproxy; do
    awk -v p="$p" "$MEDIAN"'
        $1 == "direct" { dn++; d50[dn] = $4 * 1000; dmean[dn] = $5 * 1000 }
        $1 == p { n++; s50[n] = $4 * 1000; smean[n] = $5 * 1000 }
        END {
            m50 = median(s50, n); mmean = median(smean, n)
            b50 = median(d50, dn); bmean = median(dmean, dn)
            printf "%-11s %9.0f %9.0f %14.0f %15.0f\n", p, m50, mmean, m50 - b50, mmean - bmean
        }' "$SEQ"
done

if ((DATAPLANE)); then
    echo
    dc_cpu=$(awk -v a="$(awk '{print $14 + $15}' "/proc/$DC_PID/stat")" -v b="$DC_CPU_START" -v hz="$HZ" 'BEGIN {printf "%.2f", (a - b) / hz}')
    echo "fledge-dp's control process (API, controller; the proxies are in the data plane):"
    echo "  CPU over the whole run: ${dc_cpu} s; peak RSS $(awk '/VmHWM/ {printf "%.1f", $2 / 1024}' "/proc/$DC_PID/status") MiB;" \
        "data plane: peak RSS $(awk '/VmHWM/ {printf "%.1f", $2 / 1024}' "/proc/$D_PID/status") MiB" \
        "(anonymous now $(awk '/RssAnon/ {printf "%.1f", $2 / 1024}' "/proc/$D_PID/status") MiB)"
fi
