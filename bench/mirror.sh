#!/usr/bin/env bash
# Whether a dark canary slows users down, through `fledge serve`.
#
# Runs the real `fledge serve` (release build, app `shop` on its built-in proxy)
# between two loopback upstreams under open-loop loopback load, and measures the
# users' latency in interleaved rounds: stable only; a rollout held at
# `traffic: 0, mirror: 100` with a healthy canary; the same with a canary that waits
# SLOW_MS before each answer, so that copies reach the per-app limit and are dropped.
# Prints, per condition, the medians over rounds of the users' p50 and p99, the p99's
# difference from stable only, and the copies sent and dropped as /metrics counts
# them. The goal: every user p99 within stable's p99 + 1 ms.
#
# At 2,000 requests/s a canary 200 ms slow would hold 400 copies in flight: more
# than the 256 the proxy allows per app, so about a third of them are dropped.
#
# Usage: bench/mirror.sh   (ROUNDS=5 SECONDS_PER=10 RPS=2000 SLOW_MS=200 to change;
#                           PROFILE=debug to try it on a debug build)
# Needs: cargo. Every process it starts ends with it.
set -euo pipefail

ROUNDS=${ROUNDS:-5}
SECONDS_PER=${SECONDS_PER:-10}
RPS=${RPS:-2000}
SLOW_MS=${SLOW_MS:-200}
PROFILE=${PROFILE:-release}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}

cd "$ROOT"
if [[ $PROFILE == release ]]; then FLAG=--release; DIR=release; else FLAG=; DIR=debug; fi
cargo build $FLAG --locked -q -p fledge --bin fledge --example mirror_latency
exec "$TARGET/$DIR/examples/mirror_latency" --fledge "$TARGET/$DIR/fledge" \
    --rounds "$ROUNDS" --seconds "$SECONDS_PER" --rps "$RPS" --slow-ms "$SLOW_MS"
