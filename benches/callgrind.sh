#!/usr/bin/env bash
# Exact instruction counts of the server (callgrind: instructions, not
# seconds, so a shared and noisy machine gives the same figure twice) per
# echo, per handshake and per room delivery, on each I/O driver, for one
# or more builds side by side:
#
#   BUILDS="before=/tmp/wsloop-base after=target/release/wsloop" benches/callgrind.sh
#
# Each figure is (instructions of a run with the work - instructions of the
# same run holding the same connections idle) / the work the server counted
# (its own counters, scraped before it stops): the start-up, the idle
# connections and the timer ticks cancel out. One loop (--workers 1); the
# load client runs outside valgrind. Each case REPEAT times (the median is
# the figure: how many messages one read brings varies a little with
# timing, and so does the count per item). Rows go to
# benches/results/callgrind.jsonl.
#
# epoll only by default: under valgrind 3.19 (Debian 12) the io_uring
# server binds its port but serves nothing (neither the load nor the
# metrics scrape is answered, on the builds before and after issue #26);
# IOS="epoll uring" tries anyway.
set -euo pipefail
cd "$(dirname "$0")/.."

BUILDS=${BUILDS:-"after=target/release/wsloop"}
IOS=${IOS:-epoll}
REPEAT=${REPEAT:-3}
DURATION=${DURATION:-4s}
LOAD=${LOAD:-target/release/wsloop}
OUT=benches/results/callgrind.jsonl
PORT=18099
METRICS=19099
command -v valgrind >/dev/null || { echo "valgrind is not installed (apt-get install valgrind)" >&2; exit 2; }
. benches/lib.sh
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
: > "$OUT"


# run BIN IO COUNTER LOAD_ARGS...: prints "<instructions> <counter>" for the
# server under callgrind while `wsloop load LOAD_ARGS` runs against it.
run() {
  local bin=$1 io=$2 name=$3; shift 3
  require_free_port "$PORT"
  valgrind --tool=callgrind --callgrind-out-file="$tmp/cg.out" "$bin" serve --addr "127.0.0.1:$PORT" \
    --workers 1 --io "$io" --metrics-addr "127.0.0.1:$METRICS" --log-level warn > "$tmp/server.log" 2>&1 &
  local spid=$!
  if ! wait_listening "$PORT" 30; then
    kill "$spid" 2>/dev/null || true
    echo "the server ($bin --io $io) did not listen under valgrind within 30 s: $(tail -2 "$tmp/server.log")" >&2
    exit 2
  fi
  "$LOAD" load --url "ws://127.0.0.1:$PORT/ws" --rate 500 --duration "$DURATION" "$@" > /dev/null 2>&1 || true
  local count
  count=$(metrics_counter "$METRICS" "$name")
  kill -INT "$spid"
  wait "$spid" 2>/dev/null || true
  local instructions
  instructions=$(awk '/^summary:/ {print $2}' "$tmp/cg.out")
  rm -f "$tmp/cg.out"
  echo "$instructions $count"
}

# per BUILD BIN IO CASE COUNTER CONNS LOAD_ARGS...: one row, the case's
# instructions per counted item over an idle run of CONNS connections.
per() {
  local build=$1 bin=$2 io=$3 case=$4 name=$5 conns=$6; shift 6
  local idle work
  idle=$(run "$bin" "$io" wsloop_connections_accepted_total --scenario idle --conns "$conns")
  work=$(run "$bin" "$io" "$name" --conns "$conns" "$@")
  python3 - "$build" "$io" "$case" $idle $work <<'PY' | tee -a "$OUT"
import json, sys
build, io, case, i_idle, _, i_work, n = sys.argv[1:4] + [int(x) for x in sys.argv[4:8]]
print(json.dumps({"build": build, "io": io, "case": case, "items": n,
                  "instructions_per_item": round((i_work - i_idle) / n) if n else None}))
PY
}

for io in $IOS; do
  for pair in $BUILDS; do
   for _ in $(seq "$REPEAT"); do
    build=${pair%%=*} bin=${pair#*=}
    per "$build" "$bin" "$io" echo wsloop_messages_received_total 100 --scenario echo --depth 1
    per "$build" "$bin" "$io" handshake wsloop_connections_accepted_total 20 --scenario churn
    per "$build" "$bin" "$io" room-delivery wsloop_room_messages_delivered_total 200 \
      --scenario fanout --publish-rate 50
   done
  done
done
python3 - "$OUT" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
keys = sorted({(r["io"], r["case"], r["build"]) for r in rows})
for io, case, build in keys:
    v = [r["instructions_per_item"] for r in rows if (r["io"], r["case"], r["build"]) == (io, case, build)]
    print(f"median {io:5} {case:13} {build:8} {statistics.median(v):>8,.0f}  (runs: {v})")
PY
