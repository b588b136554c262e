#!/usr/bin/env bash
# A deploy under load: what clients see. TARGET connections (default
# 100,000) on SERVERS wsloop processes sharing one SO_REUSEPORT port (the
# c100k setup: a process holds at most 20,000), each pinging every
# INTERVAL (10s: 10,000 pings a second in all, which two shared cores carry)
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
# Results: benches/results/deploy-$TAG.{json,svg,txt,log} (TAG defaults to MODE).
set -euo pipefail
cd "$(dirname "$0")/.."

MODE=${MODE:-handoff}
TARGET=${1:-100000}
SERVERS=${SERVERS:-6}
PORT=${PORT:-18090}
METRICS_BASE=${METRICS_BASE:-19200}
RAMP=${RAMP:-40s}
INTERVAL=${INTERVAL:-10s}
SETTLE=${SETTLE:-15}
HOLD=${HOLD:-120s}
DRAIN=${DRAIN:-60s}
# MODE=handoff: seconds between one process's SIGUSR2 and the next (0: all at once).
STAGGER=${STAGGER:-0}
OUT=benches/results
TAG=${TAG:-$MODE}
LOG="$OUT/deploy-$TAG.log"

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
"$BIN" load --url "ws://127.0.0.1:$PORT/ws" --scenario ping --interval "$INTERVAL" \
  --stage "$RAMP:$TARGET" --stage "$HOLD:$TARGET" --stage "10s:0" \
  --rate 4000 --connect-timeout 30s --source-ips 127.0.0.2-127.0.0.9 \
  --reconnect --reconnect-min 100ms --reconnect-max 10s \
  --json "$OUT/deploy-$TAG.json" --plot "$OUT/deploy-$TAG.svg" > "$OUT/deploy-$TAG.txt" 2>&1 &
load=$!
started=$(date +%s.%N)
sleep $((ramp_s + SETTLE))

echo "deploy ($MODE) at $(date +%T)" | tee -a "$LOG"
case $MODE in
  handoff)
    for pid in "${old[@]}"; do
      kill -USR2 "$pid"
      sleep "$STAGGER"
    done
    ;;
  drain | close)
    for pid in "${old[@]}"; do kill -TERM "$pid"; done
    for i in $(seq 0 $((SERVERS - 1))); do
      serve "$((i + SERVERS))" $((METRICS_BASE + SERVERS + i))
    done
    ;;
esac

deployed=$(date +%s.%N)
wait "$load" || true
cat "$OUT/deploy-$TAG.txt"
grep -E "took over|handing over|connections sent" "$LOG" | head -40 || true
# Per second around the deploy: open, disconnects, reconnects, ping p99.
python3 - "$OUT/deploy-$TAG.json" "$(echo "$deployed - $started" | bc)" > "$OUT/deploy-$TAG.around.txt" <<'PY'
import json, sys
timeline = json.load(open(sys.argv[1]))["timeline"]
at = float(sys.argv[2])
print(f"deploy at t={at:.1f}s; per second from 10 s before to 70 s after:")
print("     t     open  disconnects  reconnects  p99 ms")
for s in timeline:
    if at - 10 <= s["t"] <= at + 70:
        p99 = s.get("rtt_p99_ms")
        print(f"{s['t']:6.1f} {s['open']:8} {s['disconnects']:12} {s['reconnects']:11}  {p99 if p99 is not None else '-'}")
before = [s["rtt_p99_ms"] for s in timeline if at - 10 <= s["t"] < at and s.get("rtt_p99_ms")]
during = [s["rtt_p99_ms"] for s in timeline if at <= s["t"] < at + 5 and s.get("rtt_p99_ms")]
worst = lambda xs: max(xs) if xs else float("nan")
print(f"ping p99, worst second: 10 s before {worst(before):.1f} ms, 5 s from the deploy {worst(during):.1f} ms")
PY
cat "$OUT/deploy-$TAG.around.txt"
