#!/usr/bin/env bash
# Room fan-out side by side, same client for every server (`wsloop load
# --scenario fanout`): 1 publisher, SUBSCRIBERS members of one room, ~64-byte
# deliveries, each of RATES publishes/s for DURATION. Servers: wsloop with one
# and with two event loops, and a uWebSockets-based peer (Bun's WebSocket
# server, one thread, benches/peers/bun-rooms.js speaking the same JSON room
# protocol). Figures: deliveries made (of those owed), deliveries per second
# of publishing (DURATION, in seconds),
# publish-to-delivery p50 / p99 / max, server CPU per delivery. REPEAT runs
# each; the table shows medians.
#
#   benches/fanout.sh
#   SUBSCRIBERS=19000 RATES=5 SERVERS="wsloop-2 bun" benches/fanout.sh
#   BUN=/path/to/bun (default: bun on PATH; `npm install bun` brings it)
#   BEFORE=/path/to/older/wsloop SERVERS="before-2 wsloop-2"   an older build beside this one
#   SCENARIO_ARGS=--broadcast    broadcast to every connection instead of publishing
#                                (this build's servers then run with --allow-broadcast)
#   TAG=name                     results in benches/results/fanout-TAG.{jsonl,md}
#   SERVERS="epoll-1 uring-1"    wsloop on a given I/O driver (and loop count)
set -euo pipefail
cd "$(dirname "$0")/.."

SUBSCRIBERS=${SUBSCRIBERS:-10000}
RATES=${RATES:-"10 20 50 100 200"}
DURATION=${DURATION:-10s}
REPEAT=${REPEAT:-1}
SERVERS=${SERVERS:-"wsloop-1 wsloop-2 bun"}
BUN=${BUN:-bun}
PORT=${PORT:-18095}
OUT=benches/results
cargo build --release --quiet
BIN=target/release/wsloop
mkdir -p "$OUT"
TICK=$(getconf CLK_TCK)
results="$OUT/fanout${TAG:+-$TAG}.jsonl"
: > "$results"
# Client broadcasts are off by default; a broadcast run turns them on
# (an older build, BEFORE, has no such flag and always allowed them).
ALLOW=""
case " ${SCENARIO_ARGS:-} " in *" --broadcast "*) ALLOW=--allow-broadcast ;; esac
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

start_server() { # name
  case "$1" in
    wsloop-*) "$BIN" serve --addr "127.0.0.1:$PORT" --workers "${1#wsloop-}" --metrics-addr off --log-level warn $ALLOW & ;;
    epoll-* | uring-*) "$BIN" serve --io "${1%-*}" --addr "127.0.0.1:$PORT" --workers "${1#*-}" --metrics-addr off --log-level warn $ALLOW & ;;
    before-*) "$BEFORE" serve --addr "127.0.0.1:$PORT" --workers "${1#before-}" --metrics-addr off --log-level warn & ;;
    bun) "$BUN" benches/peers/bun-rooms.js "$PORT" 2>/dev/null & ;;
    *) echo "unknown server $1" >&2; exit 2 ;;
  esac
  SPID=$!
  sleep 1
}

for rate in $RATES; do
  for i in $(seq 1 "$REPEAT"); do
    for server in $SERVERS; do
      start_server "$server"
      cpu0=$(cpu_ticks "$SPID")
      "$BIN" load --url "ws://127.0.0.1:$PORT/ws" --scenario fanout --conns $((SUBSCRIBERS + 1)) --rate 5000 \
        --duration "$DURATION" --publish-rate "$rate" ${SCENARIO_ARGS:-} --json "$OUT/fanout-run.json" > /dev/null 2>&1 || true
      cpu1=$(cpu_ticks "$SPID")
      kill "$SPID"; wait "$SPID" 2>/dev/null || true
      python3 - "$OUT/fanout-run.json" "$server" "$rate" "$((cpu1 - cpu0))" "$TICK" "$SUBSCRIBERS" "${DURATION%s}" >> "$results" <<'PY'
import json, sys
r = json.load(open(sys.argv[1])); server, rate, ticks, hz, subs = sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6])
publishing = float(sys.argv[7])  # seconds of publishing; deliveries/s is over that
c = sorted((r.get("rtt") or {"counts": []})["counts"]); tot = sum(n for _, n in c)
def pct(q):
    seen = 0
    for v, n in c:
        seen += n
        if seen >= q * tot: return v / 1000.0
    return None
delivered = r["messages_received"] - (subs + 1)  # minus one join ack per connection
owed = r["messages_sent"] * subs
print(json.dumps({"server": server, "rate": rate, "delivered": delivered, "owed": owed,
  "per_s": delivered / publishing, "p50_ms": pct(0.5), "p99_ms": pct(0.99), "max_ms": c[-1][0] / 1000.0 if c else None,
  "cpu_us_per_delivery": ticks / hz * 1e6 / delivered if delivered else None,
  "errors": sum(r["failed"].values()) + r["mismatches"] + sum(r["server_closed"].values())}))
PY
      tail -1 "$results"
    done
  done
done

python3 - "$results" "$SERVERS" <<'PY' | tee "$OUT/fanout${TAG:+-$TAG}.md"
import json, sys, statistics as st
rows = [json.loads(l) for l in open(sys.argv[1])]; servers = sys.argv[2].split()
def med(s, rate, key):
    v = [r[key] for r in rows if r["server"] == s and r["rate"] == rate and r.get(key) is not None]
    return st.median(v) if v else None
print("| publishes/s | server | delivered / owed | deliveries/s | p50 ms | p99 ms | max ms | CPU µs/delivery | errors |")
print("|---|---|---|---|---|---|---|---|---|")
for rate in sorted({r["rate"] for r in rows}):
    for s in servers:
        f = lambda k, fmt: "-" if med(s, rate, k) is None else fmt.format(med(s, rate, k))
        print(f"| {rate} | {s} | {f('delivered', '{:,.0f}')} / {f('owed', '{:,.0f}')} | {f('per_s', '{:,.0f}')} | "
              f"{f('p50_ms', '{:.0f}')} | {f('p99_ms', '{:.0f}')} | {f('max_ms', '{:.0f}')} | {f('cpu_us_per_delivery', '{:.2f}')} | {f('errors', '{:.0f}')} |")
PY
