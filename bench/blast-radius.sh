#!/usr/bin/env bash
# How much harm a bad canary does through `fledge serve` before it is rolled back.
#
# Runs the real `fledge serve` (release build, app `shop` on its built-in proxy)
# between two loopback upstreams, with a canary that fails 5% and then 100% of its
# requests, held at 20% with `error_rate < 1%` and the default analysis, under 100,
# 300 and 1,000 requests per second of open-loop loopback load; 10 rollouts per row.
# Prints, per row, how many were rolled back, the time from the canary's first
# request to the rollback decision and the failed user requests (median and p95),
# beside the engine simulator's figures for the same rate, weight and criterion
# (with the server's 0.1-s evidence looks, and with 1-s ticks).
#
# Usage: bench/blast-radius.sh   (RUNS=10 RPS=100,300,1000 ERRORS=0.05,1 to change)
# Needs: cargo. Every process it starts ends with it.
set -euo pipefail

RUNS=${RUNS:-10}
RPS=${RPS:-100,300,1000}
ERRORS=${ERRORS:-0.05,1}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}

cd "$ROOT"
cargo build --release --locked -q -p fledge --bin fledge --example blast_radius
exec "$TARGET/release/examples/blast_radius" --fledge "$TARGET/release/fledge" \
    --runs "$RUNS" --rps "$RPS" --errors "$ERRORS"
