#!/usr/bin/env bash
# Round-trip latency at one message in flight (100 connections x 1, 64 B),
# side by side in one run: wsloop on each I/O driver with one loop and with
# two (the default on this 2-core host), and a uWebSockets-based peer (Bun,
# one thread; benches/peers/bun-rooms.js echoes). Same client, alternating
# runs, medians of REPEAT: msgs/s, p50, p99, p99.9 and server CPU per message.
#
#   BUN=/tmp/bunpeer/node_modules/.bin/bun benches/latency.sh   # npm install --prefix /tmp/bunpeer bun
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${DURATION:-10s}
REPEAT=${REPEAT:-3}
BUN=${BUN:-/tmp/bunpeer/node_modules/.bin/bun}
OUT=benches/results
cargo build --release --quiet
BIN=target/release/wsloop
mkdir -p "$OUT"
results="$OUT/latency.jsonl"
: > "$results"
. benches/lib.sh

run() { # name command...
  local name=$1; shift
  require_free_port 18097
  "$@" &
  local pid=$! cpu0 cpu1
  sleep 0.7
  cpu0=$(cpu_ticks "$pid")
  "$BIN" load --url ws://127.0.0.1:18097/ws --scenario echo --conns 100 --depth 1 --size 64 \
    --duration "$DURATION" --json "$OUT/latency.json" > /dev/null 2>&1 || true
  cpu1=$(cpu_ticks "$pid")
  kill "$pid"; wait "$pid" 2>/dev/null || true
  load_figures "$OUT/latency.json" "$((cpu1 - cpu0))" server="$name" >> "$results"
}

serve() { exec "$BIN" serve --addr 127.0.0.1:18097 --metrics-addr off --log-level warn "$@"; }
for i in $(seq 1 "$REPEAT"); do
  run epoll-1 serve --io epoll --workers 1
  run uring-1 serve --io uring --workers 1
  run epoll-2 serve --io epoll --workers 2
  run uring-2 serve --io uring --workers 2
  if [ -x "$BUN" ]; then run bun "$BUN" benches/peers/bun-rooms.js 18097; fi
done

python3 - "$results" <<'PY' | tee "$OUT/latency.md"
import json, sys, statistics as st
rows = [json.loads(l) for l in open(sys.argv[1])]
names = list(dict.fromkeys(r["server"] for r in rows))
print("| server | msgs/s | p50 ms | p99 ms | p99.9 ms | server CPU us/msg | errors |")
print("|---|---|---|---|---|---|---|")
for n in names:
    m = lambda k: st.median([r[k] for r in rows if r["server"] == n and r.get(k) is not None] or [0])
    print(f"| {n} | {m('msgs_per_s'):,.0f} | {m('p50_ms'):.3f} | {m('p99_ms'):.3f} | {m('p999_ms'):.3f} | {m('cpu_us_per_msg'):.2f} | {sum(r['errors'] for r in rows if r['server'] == n)} |")
PY
