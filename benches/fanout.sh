#!/usr/bin/env bash
# Room fan-out: 1 publisher, SUBSCRIBERS subscribers across the server's
# event loops (2 on this host), ~64-byte deliveries, PUBLISH_RATE publishes
# per second for DURATION. Reports deliveries and publish-to-delivery
# latency (the load report's "round trip" row).
#
#   benches/fanout.sh                         (10,000 subscribers, 10/s and 20/s)
#   SUBSCRIBERS=5000 RATES="50" benches/fanout.sh
set -euo pipefail
cd "$(dirname "$0")/.."

SUBSCRIBERS=${SUBSCRIBERS:-10000}
RATES=${RATES:-"10 20"}
DURATION=${DURATION:-10s}
PORT=${PORT:-18095}
OUT=benches/results
cargo build --release --quiet
BIN=target/release/wsloop
mkdir -p "$OUT"

for rate in $RATES; do
  "$BIN" serve --addr "127.0.0.1:$PORT" --workers 2 --metrics-addr off --log-level warn &
  spid=$!
  sleep 0.5
  "$BIN" load --url "ws://127.0.0.1:$PORT/ws" --scenario fanout --conns $((SUBSCRIBERS + 1)) --rate 5000 \
    --duration "$DURATION" --publish-rate "$rate" --json "$OUT/fanout-${rate}ps.json" 2>/dev/null | tail -4
  kill "$spid"; wait "$spid" 2>/dev/null || true
done
