#!/usr/bin/env bash
# System calls the server makes per echo and per handshake (strace -c), on
# each I/O driver, for one or more builds side by side: the kernel's share
# of the work, which callgrind (user space only) does not see, counted
# rather than timed.
#
#   BUILDS="before=/tmp/wsloop-base after=target/release/wsloop" benches/syscalls.sh
#
# Each row: the server's system calls during a run (all threads) divided by
# the work it counted (its own counters). One loop (--workers 1); the load
# client runs outside strace. Rows go to benches/results/syscalls.jsonl.
set -euo pipefail
cd "$(dirname "$0")/.."

BUILDS=${BUILDS:-"after=target/release/wsloop"}
IOS=${IOS:-"epoll uring"}
DURATION=${DURATION:-4s}
LOAD=${LOAD:-target/release/wsloop}
OUT=benches/results/syscalls.jsonl
PORT=18099
METRICS=19099
command -v strace >/dev/null || { echo "strace is not installed (apt-get install strace)" >&2; exit 2; }
. benches/lib.sh
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
: > "$OUT"


# row BUILD BIN IO CASE COUNTER LOAD_ARGS...
row() {
  local build=$1 bin=$2 io=$3 case=$4 name=$5; shift 5
  require_free_port "$PORT"
  strace -f -c -o "$tmp/strace.txt" "$bin" serve --addr "127.0.0.1:$PORT" --workers 1 --io "$io" \
    --metrics-addr "127.0.0.1:$METRICS" --log-level warn > /dev/null 2>&1 &
  local spid=$!
  wait_listening "$PORT" 10 || { echo "the server ($bin --io $io) did not listen under strace" >&2; exit 2; }
  "$LOAD" load --url "ws://127.0.0.1:$PORT/ws" --duration "$DURATION" "$@" > /dev/null 2>&1 || true
  local count
  count=$(metrics_counter "$METRICS" "$name")
  # strace passes no SIGINT on: the server (its child) gets it.
  kill -INT "$(pgrep -P "$spid")"
  wait "$spid" 2>/dev/null || true
  python3 - "$tmp/strace.txt" "$build" "$io" "$case" "$count" <<'PY' | tee -a "$OUT"
import json, sys
path, build, io, case, n = sys.argv[1:6]
calls = {}
for line in open(path):
    parts = line.split()
    if len(parts) >= 5 and parts[3].isdigit():
        calls[parts[-1]] = int(parts[3])
n = int(n)
top = dict(sorted(((k, round(v / n, 3)) for k, v in calls.items() if k != "total"), key=lambda kv: -kv[1])[:6])
print(json.dumps({"build": build, "io": io, "case": case, "items": n,
                  "syscalls_per_item": round(sum(v for k, v in calls.items() if k != "total") / n, 3), "top": top}))
PY
}

for io in $IOS; do
  for pair in $BUILDS; do
    build=${pair%%=*} bin=${pair#*=}
    row "$build" "$bin" "$io" echo wsloop_messages_received_total --scenario echo --conns 100 --depth 1
    row "$build" "$bin" "$io" handshake wsloop_connections_accepted_total --scenario churn --conns 50 --rate 100000
  done
done
