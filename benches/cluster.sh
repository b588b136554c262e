#!/usr/bin/env bash
# Room fan-out across hosts through Redis against the same on one host.
#
#   one:   one wsloop (--workers 1), one `wsloop load --scenario fanout`
#          (SUBSCRIBERS members + 1 publisher), no Redis.
#   three: three wsloop processes (--workers 1 each) sharing rooms through
#          one redis-server (--redis-url), and three load processes, each
#          `--segment K/3` of the same plan pointed at its own server: a
#          third of the members and a publisher publishing a third of the rate
#          on each, so every publish reaches two thirds of its members
#          through Redis.
#   six:   the same with six processes: room for 100,000 members (each
#          process holds a sixth, under this machine's 20,000-descriptor cap).
#
# All on this machine's cores and loopback: "three hosts" are three
# processes sharing the same CPUs, so this measures what the Redis path costs
# per delivery and in latency, not what more machines add.
# Figures per run: deliveries made (of those owed), deliveries/s over the
# publishing time, publish-to-delivery p50 / p99 / max (each load process's
# clock; one machine, one clock), wsloop CPU per delivery (all its processes),
# Redis CPU. REPEAT runs each; the table shows medians.
#
#   benches/cluster.sh
#   RATES="10 50" REPEAT=1 SUBSCRIBERS=3000 benches/cluster.sh
#   SETUPS=six SUBSCRIBERS=100000 RATES=5 TAG=100k benches/cluster.sh
#   TAG=name: results in benches/results/cluster-TAG.{jsonl,md}
set -euo pipefail
cd "$(dirname "$0")/.."
source benches/lib.sh

SUBSCRIBERS=${SUBSCRIBERS:-10000}
RATES=${RATES:-"10 50 100"}
DURATION=${DURATION:-10}
REPEAT=${REPEAT:-3}
SETUPS=${SETUPS:-"one three"}
PORT=${PORT:-18301}
REDIS_PORT=${REDIS_PORT:-18379}
OUT=benches/results
cargo build --release --quiet
BIN=target/release/wsloop
mkdir -p "$OUT"
TICK=$(getconf CLK_TCK)
results="$OUT/cluster${TAG:+-$TAG}.jsonl"
scratch=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$scratch"' EXIT
: > "$results"

command -v redis-server > /dev/null || { echo "needs redis-server (apt install redis-server)" >&2; exit 2; }

run_one() { # setup rate run
  local setup=$1 rate=$2 n pids=() lpids=() redis_pid="" cpu0 cpu1 rcpu0=0 rcpu1=0 k
  case "$setup" in
    one) n=1 ;;
    three) n=3 ;;
    six) n=6 ;;
    *) echo "unknown setup $setup (one, three, six)" >&2; exit 2 ;;
  esac
  for k in $(seq 0 $((n - 1))); do require_free_port $((PORT + k)); done
  if [ "$n" -gt 1 ]; then
    redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save "" --appendonly no > /dev/null &
    redis_pid=$!
    sleep 0.3
  fi
  for k in $(seq 0 $((n - 1))); do
    "$BIN" serve --addr "127.0.0.1:$((PORT + k))" --workers 1 --metrics-addr off --log-level warn \
      ${redis_pid:+--redis-url redis://127.0.0.1:$REDIS_PORT} &
    pids+=($!)
  done
  sleep 1
  cpu0=0; for p in "${pids[@]}"; do cpu0=$((cpu0 + $(cpu_ticks "$p"))); done
  [ -n "$redis_pid" ] && rcpu0=$(cpu_ticks "$redis_pid")
  for k in $(seq 0 $((n - 1))); do
    local seg=()
    [ "$n" -gt 1 ] && seg=(--segment "$((k + 1))/$n")
    "$BIN" load --url "ws://127.0.0.1:$((PORT + k))/ws" --scenario fanout --conns $((SUBSCRIBERS + 1)) "${seg[@]}" \
      --rate 5000 --duration "${DURATION}s" --publish-rate "$rate" --json "$scratch/load-$k.json" > /dev/null 2>&1 &
    lpids+=($!)
  done
  for p in "${lpids[@]}"; do wait "$p" || true; done
  cpu1=0; for p in "${pids[@]}"; do cpu1=$((cpu1 + $(cpu_ticks "$p"))); done
  [ -n "$redis_pid" ] && rcpu1=$(cpu_ticks "$redis_pid")
  kill "${pids[@]}" $redis_pid; wait "${pids[@]}" $redis_pid 2> /dev/null || true
  python3 - "$setup" "$rate" "$((cpu1 - cpu0))" "$((rcpu1 - rcpu0))" "$TICK" "$SUBSCRIBERS" "$DURATION" "$scratch"/load-*.json \
    >> "$results" << 'PY'
import json, sys
setup, rate, ticks, rticks, hz, subs, secs = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6]), float(sys.argv[7])
reports = [json.load(open(p)) for p in sys.argv[8:]]
counts = sorted(c for r in reports for c in (r.get("rtt") or {"counts": []})["counts"])
total = sum(n for _, n in counts)
def pct(q):
    seen = 0
    for v, n in counts:
        seen += n
        if seen >= q * total: return v / 1000.0
conns = sum(r["established"] for r in reports)
published = sum(r["messages_sent"] for r in reports)
delivered = sum(r["messages_received"] for r in reports) - conns  # one join ack each
print(json.dumps({"setup": setup, "rate": rate, "published": published, "delivered": delivered,
  "owed": published * (conns - 1), "per_s": delivered / secs, "p50_ms": pct(0.5), "p99_ms": pct(0.99),
  "max_ms": counts[-1][0] / 1000.0 if counts else None,
  "wsloop_cpu_us_per_delivery": ticks / hz * 1e6 / delivered if delivered else None,
  "redis_cpu_s": rticks / hz, "redis_cpu_pct": 100.0 * rticks / hz / secs,
  "errors": sum(sum(r["failed"].values()) + r["mismatches"] + sum(r["server_closed"].values()) for r in reports)}))
PY
  rm -f "$scratch"/load-*.json
  tail -1 "$results"
}

for rate in $RATES; do
  for i in $(seq 1 "$REPEAT"); do
    for setup in $SETUPS; do
      run_one "$setup" "$rate"
    done
  done
done

python3 - "$results" "$SETUPS" << 'PY' | tee "$OUT/cluster${TAG:+-$TAG}.md"
import json, sys, statistics as st
rows = [json.loads(l) for l in open(sys.argv[1])]
def med(s, rate, key):
    v = [r[key] for r in rows if r["setup"] == s and r["rate"] == rate and r.get(key) is not None]
    return st.median(v) if v else None
print("| publishes/s | setup | delivered / owed | deliveries/s | p50 ms | p99 ms | max ms | wsloop CPU µs/delivery | Redis CPU % | errors |")
print("|---|---|---|---|---|---|---|---|---|---|")
for rate in sorted({r["rate"] for r in rows}):
    for s in sys.argv[2].split():
        f = lambda k, fmt: "-" if med(s, rate, k) is None else fmt.format(med(s, rate, k))
        print(f"| {rate} | {s} | {f('delivered', '{:,.0f}')} / {f('owed', '{:,.0f}')} | {f('per_s', '{:,.0f}')} | "
              f"{f('p50_ms', '{:.0f}')} | {f('p99_ms', '{:.0f}')} | {f('max_ms', '{:.0f}')} | "
              f"{f('wsloop_cpu_us_per_delivery', '{:.2f}')} | {f('redis_cpu_pct', '{:.1f}')} | {f('errors', '{:.0f}')} |")
PY
