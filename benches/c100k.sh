#!/usr/bin/env bash
# The 100k benchmark: wsloop holding 100,000 WebSocket connections on one
# host whose per-process file limit is 20,000, driven by `wsloop load`.
#
#   benches/c100k.sh [TARGET]        (default 100000)
#
# Starts SERVERS wsloop processes on one SO_REUSEPORT port (each with its own
# metrics port), raises the local port range where allowed, ramps the load
# generator to TARGET connections from 8 loopback source addresses, holds
# while every connection pings every 10 s, ramps down, and checks that the
# servers come back clean. Results: benches/results/c100k.{json,svg,txt}.
set -euo pipefail
cd "$(dirname "$0")/.."

TARGET=${1:-100000}
SERVERS=${SERVERS:-6}
PORT=${PORT:-18080}
METRICS_BASE=${METRICS_BASE:-19100}
RAMP=${RAMP:-60s}
HOLD=${HOLD:-60s}
DOWN=${DOWN:-30s}
OUT=benches/results

cargo build --release --quiet
BIN=target/release/wsloop
mkdir -p "$OUT"

if [ -w /proc/sys/net/ipv4/ip_local_port_range ]; then
  echo "1024 65535" > /proc/sys/net/ipv4/ip_local_port_range
fi
echo "port range: $(cat /proc/sys/net/ipv4/ip_local_port_range); file limit: $(ulimit -Hn)"

pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; }
trap cleanup EXIT

metrics=()
for i in $(seq 0 $((SERVERS - 1))); do
  mport=$((METRICS_BASE + i))
  "$BIN" serve --addr "127.0.0.1:$PORT" --workers 1 --metrics-addr "127.0.0.1:$mport" \
    --log-level warn &
  pids+=($!)
  metrics+=(--metrics-url "http://127.0.0.1:$mport/metrics")
done
sleep 1

"$BIN" load --url "ws://127.0.0.1:$PORT/ws" --scenario ping --interval 10s \
  --stage "$RAMP:$TARGET" --stage "$HOLD:$TARGET" --stage "$DOWN:0" \
  --rate 4000 --connect-timeout 30s --source-ips 127.0.0.2-127.0.0.9 \
  "${metrics[@]}" --expect-clean \
  --json "$OUT/c100k.json" --plot "$OUT/c100k.svg" | tee "$OUT/c100k.txt"
