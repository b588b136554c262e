#!/usr/bin/env bash
# The two I/O drivers side by side: the same wsloop binary with --io epoll
# and --io uring, the same load generator and cases, alternating runs so
# both see the same noise; medians of REPEAT runs.
#
#   benches/io.sh                      # WORKERS=1 REPEAT=3 DURATION=10s IDLE=15000
#
# Figures per case: messages/s, p50 and p99 round trip, server CPU per
# message (user + system from /proc/PID/stat); handshakes/s (churn); RSS per
# idle connection at IDLE connections (the buffer ring's pages included).
set -euo pipefail
cd "$(dirname "$0")/.."

WORKERS=${WORKERS:-1}
DURATION=${DURATION:-10s}
REPEAT=${REPEAT:-3}
IDLE=${IDLE:-15000}
OUT=benches/results
cargo build --release --quiet
BIN=target/release/wsloop
mkdir -p "$OUT"
results="$OUT/io-w$WORKERS.jsonl"
: > "$results"
. benches/lib.sh

start_server() { # driver
  require_free_port 18097
  "$BIN" serve --io "$1" --addr 127.0.0.1:18097 --workers "$WORKERS" --metrics-addr off --log-level warn &
  SPID=$!
  sleep 0.5
}

run() { # driver case load-args...
  local io=$1 case=$2; shift 2
  start_server "$io"
  local cpu0 cpu1
  cpu0=$(cpu_ticks "$SPID")
  "$BIN" load --url ws://127.0.0.1:18097/ws --json "$OUT/io.json" "$@" > /dev/null 2>&1 || true
  cpu1=$(cpu_ticks "$SPID")
  kill "$SPID"; wait "$SPID" 2>/dev/null || true
  load_figures "$OUT/io.json" "$((cpu1 - cpu0))" io="$io" case="$case" >> "$results"
}

idle_rss() { # driver
  start_server "$1"
  local per_conn
  per_conn=$(idle_bytes_per_conn "$SPID" ws://127.0.0.1:18097/ws "$IDLE")
  kill "$SPID"; wait "$SPID" 2>/dev/null || true
  echo "{\"io\": \"$1\", \"case\": \"idle-rss\", \"bytes_per_conn\": $per_conn}" >> "$results"
}

for i in $(seq 1 "$REPEAT"); do
  for io in epoll uring; do
    run "$io" c100-d1 --scenario echo --conns 100 --depth 1 --size 64 --duration "$DURATION"
    run "$io" c1000-d4 --scenario echo --conns 1000 --depth 4 --size 64 --rate 5000 --duration "$DURATION"
    run "$io" c1000-d1-4k --scenario echo --conns 1000 --depth 1 --size 4096 --rate 5000 --duration "$DURATION"
    run "$io" churn-c50 --scenario churn --conns 50 --rate 100000 --duration "$DURATION"
  done
  for io in epoll uring; do idle_rss "$io"; done
done

python3 - "$results" <<'PY' | tee "$OUT/io-w$WORKERS.md"
import json, sys, statistics as st
rows = [json.loads(l) for l in open(sys.argv[1])]
def med(io, case, key):
    v = [r[key] for r in rows if r["io"] == io and r["case"] == case and r.get(key) is not None]
    return st.median(v) if v else None
print("| case | figure | epoll | uring | uring / epoll |")
print("|---|---|---|---|---|")
for case in ["c100-d1", "c1000-d4", "c1000-d1-4k", "churn-c50", "idle-rss"]:
    keys = {"churn-c50": [("handshakes_per_s", "high")], "idle-rss": [("bytes_per_conn", "low")]}.get(
        case, [("msgs_per_s", "high"), ("p50_ms", "low"), ("p99_ms", "low"), ("cpu_us_per_msg", "low")])
    for key, better in keys:
        a, b = med("epoll", case, key), med("uring", case, key)
        ratio = "-" if not a or not b else "{:.2f}x".format(b / a if better == "high" else a / b)
        f = lambda v: "-" if v is None else ("{:.3f}" if key.endswith("_ms") else "{:.2f}" if key.startswith("cpu") else "{:.0f}").format(v)
        print(f"| {case} | {key} | {f(a)} | {f(b)} | {ratio} |")
print("\nratio > 1: io_uring better. errors:", {s: sum(r.get("errors", 0) for r in rows if r["io"] == s) for s in ("epoll", "uring")})
PY
