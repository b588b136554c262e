#!/usr/bin/env bash
# A deploy under load: what clients see. TARGET connections (default
# 100,000) on SERVERS wsloop processes sharing one SO_REUSEPORT port (the
# c100k setup: a process holds at most 20,000), each pinging every second
# through `wsloop load --reconnect` (backoff with jitter, the server's
# reconnect hint honoured). Once they are all open, the deploy:
#
#   MODE=handoff  SIGUSR2 to every process: each starts the binary again,
#                 which takes its listener and connections over (--takeover)
#   MODE=drain    SIGTERM with --drain-period DRAIN (default 60s); new
#                 processes on the same port take the reconnects
#   MODE=close    SIGTERM without a drain period (every connection 1001 at
#                 once, today's default); new processes take the reconnects
#
# The load's timeline has, per second, connections open, disconnects,
# reconnects and the ping round trip's p99. Every loop is bounded: the load
# ends itself after its stages, the servers are killed on exit.
#
#   MODE=handoff benches/deploy.sh [TARGET]
#
# Results: benches/results/deploy-$MODE.{json,svg,txt,log}.
set -euo pipefail
cd "$(dirname "$0")/.."

MODE=${MODE:-handoff}
TARGET=${1:-100000}
SERVERS=${SERVERS:-6}
PORT=${PORT:-18090}
METRICS_BASE=${METRICS_BASE:-19200}
RAMP=${RAMP:-40s}
SETTLE=${SETTLE:-15}
HOLD=${HOLD:-120s}
DRAIN=${DRAIN:-60s}
OUT=benches/results
LOG="$OUT/deploy-$MODE.log"

cargo build --release --quiet
BIN=target/release/wsloop
mkdir -p "$OUT"
: > "$LOG"
if [ -w /proc/sys/net/ipv4/ip_local_port_range ]; then
  echo "1024 65535" > /proc/sys/net/ipv4/ip_local_port_range
fi

pids=()
cleanup() {
  kill "${pids[@]}" 2>/dev/null || true
  pkill -f -- "--takeover /tmp/wsloop-deploy-" 2>/dev/null || true
  wait 2>/dev/null || true
}
trap cleanup EXIT

# serve INDEX METRICS_PORT [FLAGS...]: one server process, logging to $LOG.
serve() {
  local i=$1 mport=$2
  shift 2
  "$BIN" serve --addr "127.0.0.1:$PORT" --workers 1 --metrics-addr "127.0.0.1:$mport" \
    --takeover "/tmp/wsloop-deploy-$i.sock" --idle-timeout 300s --log-level info "$@" 2>>"$LOG" &
  pids+=($!)
}

old=()
for i in $(seq 0 $((SERVERS - 1))); do
  case $MODE in
    drain) serve "$i" $((METRICS_BASE + i)) --drain-period "$DRAIN" --shutdown-timeout 90s ;;
    *) serve "$i" $((METRICS_BASE + i)) ;;
  esac
  old+=($!)
done
sleep 1

ramp_s=${RAMP%s}
"$BIN" load --url "ws://127.0.0.1:$PORT/ws" --scenario ping --interval 1s \
  --stage "$RAMP:$TARGET" --stage "$HOLD:$TARGET" --stage "10s:0" \
  --rate 4000 --connect-timeout 30s --source-ips 127.0.0.2-127.0.0.9 \
  --reconnect --reconnect-min 100ms --reconnect-max 10s \
  --json "$OUT/deploy-$MODE.json" --plot "$OUT/deploy-$MODE.svg" > "$OUT/deploy-$MODE.txt" 2>&1 &
load=$!
sleep $((ramp_s + SETTLE))

echo "deploy ($MODE) at $(date +%T)" | tee -a "$LOG"
case $MODE in
  handoff)
    for pid in "${old[@]}"; do kill -USR2 "$pid"; done
    ;;
  drain | close)
    for pid in "${old[@]}"; do kill -TERM "$pid"; done
    for i in $(seq 0 $((SERVERS - 1))); do
      serve "$((i + SERVERS))" $((METRICS_BASE + SERVERS + i))
    done
    ;;
esac

wait "$load" || true
cat "$OUT/deploy-$MODE.txt"
grep -E "took over|handing over|hand-off" "$LOG" | head -40 || true
