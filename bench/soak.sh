#!/usr/bin/env bash
# Whether `fledge serve` can run for hours without growing.
#
# Runs the real `fledge serve` (release build, app `shop` on its built-in proxy
# between two loopback upstreams) under steady open-loop load through the proxy
# (RPS, 300 requests/s by default), and for DURATION (10 minutes by default; `2h`,
# `8h` for a real soak):
#
#   - creates rollouts back to back through the API, each a new version: healthy ones
#     (two 5-s stages, then promoted), failing ones (the canary fails 20% of its
#     requests: rolled back) and healthy ones an operator aborts 3 s in;
#   - restarts the server every RESTART_EVERY (DURATION/4 by default, between 1m and
#     15m) on the same store and ports: with SIGTERM, and with SIGKILL every
#     KILL_EVERY-th time (3);
#   - every SAMPLE (10s) prints a row: the server's RSS and open file descriptors
#     (/proc/PID/status, /proc/PID/fd), the store's size (the SQLite file with its WAL
#     and shm files, or pg_database_size), the p99 of `GET /rollouts?limit=20` and
#     `GET /status` (each asked five times a second; `/metrics` is scraped every
#     5 s besides, its failures counted with the API's), and the proxy's requests and
#     failed requests in the interval (a restart's downtime fails requests, and so do
#     failing canaries: those are counted apart).
#
# How it is judged (exit 1 when something grows without bound):
#
#   - RSS (its anonymous part, RssAnon: the heap, where a leak shows, without the
#     file pages the kernel maps in and out) and open descriptors: one slope is fitted
#     over the samples of the run's second half that are past their server's warm-up
#     (60 s, or a third of a lifetime if shorter), with an intercept per server
#     lifetime, since a restart resets whatever a leak had accumulated. The slope is
#     Sen's (the median of the slopes between pairs of samples), so one odd sample
#     does not decide. The run fails when the slope's 90% interval lies wholly above
#     32 MiB/h (RSS) or 60 descriptors/h: the noise of a
#     busy machine widens the interval rather than failing the run, while a leak
#     shows however noisy the machine. Longer runs judge finer.
#   - The store: fledge keeps every rollout's history, so the store grows with the
#     rollouts by design; what must stay bounded is the growth per rollout. The slope
#     of the store's size over the number of rollouts ended, in the run's second half
#     (across restarts: the store outlives them), fails when its 90% interval lies
#     wholly above 256 KiB per rollout. The growth per hour is printed beside it.
#   - API p99: the median of the per-interval p99s in the run's last quarter fails
#     when above both 4 times that of its second quarter and 100 ms.
#
# Every process it starts ends with it, and all traffic stays on 127.0.0.1.
#
# Usage: bench/soak.sh   (DURATION=10m RPS=300 SAMPLE=10s RESTART_EVERY=… KILL_EVERY=3
#                         to change; CSV=path also writes the samples as CSV;
#                         KEEP=dir keeps the store and the server's log in dir)
#        STORE=postgres bench/soak.sh   with PostgreSQL: the database at PG_URL (or
#                         FLEDGE_TEST_POSTGRES_URL) if given, otherwise a throwaway
#                         server from scripts/pg-test-server
# Needs: cargo; for STORE=postgres without a URL, PostgreSQL installed.
set -euo pipefail

DURATION=${DURATION:-10m}
RPS=${RPS:-300}
SAMPLE=${SAMPLE:-10s}
KILL_EVERY=${KILL_EVERY:-3}
STORE=${STORE:-sqlite}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
WORK=$(mktemp -d /tmp/fledge-soak.XXXXXX)
DRIVER=
PG_DIR=

cleanup() {
    # The driver runs in a process group of its own, with the servers it starts.
    if [[ -n $DRIVER ]] && kill -0 -- "-$DRIVER" 2>/dev/null; then
        kill -TERM -- "-$DRIVER" 2>/dev/null || true
        for _ in $(seq 1 150); do
            kill -0 -- "-$DRIVER" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL -- "-$DRIVER" 2>/dev/null || true
    fi
    [[ -n $PG_DIR ]] && "$ROOT/scripts/pg-test-server" stop "$PG_DIR" >/dev/null 2>&1 || true
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

cd "$ROOT"
cargo build --release --locked -q -p fledge --bin fledge --example soak

store_args=(--store sqlite)
if [[ $STORE == postgres ]]; then
    url=${PG_URL:-${FLEDGE_TEST_POSTGRES_URL:-}}
    if [[ -z $url ]]; then
        line=$("$ROOT/scripts/pg-test-server" --watch-pid $$ 2>"$WORK/pg.log" | tail -n 1)
        PG_DIR=$(sed -n 's/.*data in \([^;]*\);.*/\1/p' "$WORK/pg.log")
        url=${line#FLEDGE_TEST_POSTGRES_URL=}
        [[ $url == postgres://* ]] || {
            cat "$WORK/pg.log" >&2
            exit 1
        }
    fi
    store_args=(--store "$url")
elif [[ $STORE != sqlite ]]; then
    echo "soak: STORE is sqlite or postgres, not $STORE" >&2
    exit 2
fi

args=(--fledge "$TARGET/release/fledge" --duration "$DURATION" --rps "$RPS"
    --sample "$SAMPLE" --kill-every "$KILL_EVERY" --dir "${KEEP:-$WORK/run}" "${store_args[@]}")
[[ -n ${RESTART_EVERY:-} ]] && args+=(--restart-every "$RESTART_EVERY")
[[ -n ${CSV:-} ]] && args+=(--csv "$CSV")

# A process group of its own (job control), so that the cleanup reaches the servers
# it starts however it ends.
set -m
"$TARGET/release/examples/soak" "${args[@]}" &
DRIVER=$!
set +m
status=0
wait "$DRIVER" || status=$?
exit "$status"
