#!/usr/bin/env bash
# Side by side: wsloop against another WebSocket echo server, same load
# generator, same cases, alternating runs so both see the same noise.
#
#   PEER_NAME=tokio-tungstenite PEER_CMD="/path/to/echo-server 127.0.0.1:18098" benches/compare.sh
#
# PEER_CMD must start an echo server listening on 127.0.0.1:18098 (text and
# binary echoed). wsloop runs with one event loop; give the peer one thread.
# Figures: messages/s, p99 round trip, server CPU per message (user + system
# from /proc/PID/stat), handshakes/s (churn), and RSS per idle connection
# at IDLE connections. Medians of REPEAT runs.
set -euo pipefail
cd "$(dirname "$0")/.."

: "${PEER_CMD:?set PEER_CMD to a command that starts the peer on 127.0.0.1:18098}"
PEER_NAME=${PEER_NAME:-peer}
DURATION=${DURATION:-10s}
REPEAT=${REPEAT:-3}
IDLE=${IDLE:-15000}
OUT=benches/results
cargo build --release --quiet
BIN=target/release/wsloop
mkdir -p "$OUT"
results="$OUT/compare-$PEER_NAME.jsonl"
: > "$results"
. benches/lib.sh

start_server() { # name -> pid, url
  require_free_port 18097; require_free_port 18098
  if [ "$1" = wsloop ]; then
    "$BIN" serve --addr 127.0.0.1:18097 --workers 1 --metrics-addr off --log-level warn &
    SPID=$!; URL=ws://127.0.0.1:18097/ws
  else
    $PEER_CMD &
    SPID=$!; URL=ws://127.0.0.1:18098/ws
  fi
  sleep 0.5
}

run() { # server case load-args...
  local server=$1 case=$2; shift 2
  start_server "$server"
  local rss0 cpu0 rss1 cpu1
  rss0=$(rss_kb "$SPID"); cpu0=$(cpu_ticks "$SPID")
  "$BIN" load --url "$URL" --json "$OUT/compare.json" "$@" > /dev/null 2>&1 || true
  cpu1=$(cpu_ticks "$SPID")
  kill "$SPID"; wait "$SPID" 2>/dev/null || true
  load_figures "$OUT/compare.json" "$((cpu1 - cpu0))" server="$server" case="$case" >> "$results"
}

idle_rss() { # server
  start_server "$1"
  local per_conn
  per_conn=$(idle_bytes_per_conn "$SPID" "$URL" "$IDLE")
  kill "$SPID"; wait "$SPID" 2>/dev/null || true
  echo "{\"server\": \"$1\", \"case\": \"idle-rss\", \"bytes_per_conn\": $per_conn}" >> "$results"
}

for i in $(seq 1 "$REPEAT"); do
  for s in wsloop "$PEER_NAME"; do
    run "$s" c100-d1 --scenario echo --conns 100 --depth 1 --size 64 --duration "$DURATION"
    run "$s" c1000-d4 --scenario echo --conns 1000 --depth 4 --size 64 --rate 5000 --duration "$DURATION"
    run "$s" churn-c50 --scenario churn --conns 50 --rate 100000 --duration "$DURATION"
  done
done
for s in wsloop "$PEER_NAME"; do idle_rss "$s"; done

python3 - "$results" "$PEER_NAME" <<'PY' | tee "$OUT/compare-$PEER_NAME.md"
import json, sys, statistics as st
rows = [json.loads(l) for l in open(sys.argv[1])]; peer = sys.argv[2]
def med(server, case, key):
    v = [r[key] for r in rows if r["server"] == server and r["case"] == case and r.get(key) is not None]
    return st.median(v) if v else None
print(f"| case | figure | wsloop | {peer} | ratio |")
print("|---|---|---|---|---|")
for case, key, fmt, better in [("c100-d1", "msgs_per_s", "{:.0f}", "high"), ("c100-d1", "p99_ms", "{:.3f}", "low"),
                               ("c100-d1", "cpu_us_per_msg", "{:.2f}", "low"), ("c1000-d4", "msgs_per_s", "{:.0f}", "high"),
                               ("c1000-d4", "p99_ms", "{:.3f}", "low"), ("c1000-d4", "cpu_us_per_msg", "{:.2f}", "low"),
                               ("churn-c50", "handshakes_per_s", "{:.0f}", "high"), ("idle-rss", "bytes_per_conn", "{:.0f}", "low")]:
    a, b = med("wsloop", case, key), med(peer, case, key)
    ratio = "-" if not a or not b else "{:.2f}x".format(a / b if better == "high" else b / a)
    f = lambda v: "-" if v is None else fmt.format(v)
    print(f"| {case} | {key} | {f(a)} | {f(b)} | {ratio} |")
print("\nratio > 1: wsloop better. errors:", {s: sum(r.get("errors", 0) for r in rows if r["server"] == s) for s in ("wsloop", peer)})
PY
