#!/usr/bin/env bash
# Echo throughput, round trip and handshake rate of wsloop, measured with
# `wsloop load` on this host. Each case runs REPEAT times; the table shows
# the median. Server CPU per message comes from /proc/PID/stat (utime +
# stime) over the run. One server event loop and one load process, so each
# side has one of this machine's two cores.
#
#   benches/echo.sh              all cases
#   DURATION=5s REPEAT=1 benches/echo.sh
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${DURATION:-10s}
REPEAT=${REPEAT:-3}
PORT=${PORT:-18090}
OUT=benches/results
cargo build --release --quiet
BIN=target/release/wsloop
mkdir -p "$OUT"
TICK=$(getconf CLK_TCK)

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

# run_case NAME METRICS(on|off) LOAD-ARGS...
run_case() {
  local name=$1 metrics=$2; shift 2
  local maddr=off
  [ "$metrics" = on ] && maddr=127.0.0.1:$((PORT + 1))
  "$BIN" serve --addr "127.0.0.1:$PORT" --workers 1 --metrics-addr "$maddr" --log-level warn &
  local spid=$!
  sleep 0.5
  local before; before=$(cpu_ticks "$spid")
  "$BIN" load --url "ws://127.0.0.1:$PORT/ws" --duration "$DURATION" --json "$OUT/echo-$name.json" "$@" \
    > /dev/null 2> "$OUT/echo-$name.log" || { echo "load failed for $name" >&2; tail "$OUT/echo-$name.log" >&2; }
  local after; after=$(cpu_ticks "$spid")
  kill "$spid"; wait "$spid" 2>/dev/null || true
  python3 - "$OUT/echo-$name.json" "$((after - before))" "$TICK" "$name" <<'PY'
import json, sys
r = json.load(open(sys.argv[1])); ticks = int(sys.argv[2]); hz = int(sys.argv[3]); name = sys.argv[4]
def pct(h, q):
    counts = sorted(h["counts"]); total = sum(c for _, c in counts); seen = 0
    for v, c in counts:
        seen += c
        if seen >= q * total: return v / 1000.0
    return 0.0
secs = r["duration_secs"]; msgs = r["messages_received"]
cpu_us = ticks / hz * 1e6
rtt = r.get("rtt") or {"counts": []}
print(json.dumps({"case": name, "msgs_per_s": msgs / secs, "handshakes_per_s": r["established"] / secs,
                  "p50_ms": pct(rtt, 0.5) if rtt["counts"] else None, "p99_ms": pct(rtt, 0.99) if rtt["counts"] else None,
                  "server_cpu_us_per_msg": cpu_us / msgs if msgs else None,
                  "server_cpu_us_per_handshake": cpu_us / r["established"] if r["established"] else None,
                  "errors": sum(r["failed"].values()) + r["mismatches"]}))
PY
}

# CASES="c100-d1 churn-c50" runs only those.
CASES=${CASES:-"c100-d1 c1000-d4 c1000-d4-nometrics churn-c50"}
want() { case " $CASES " in *" $1 "*) return 0 ;; *) return 1 ;; esac; }
results="$OUT/echo-results.jsonl"
: > "$results"
for i in $(seq 1 "$REPEAT"); do
  want c100-d1 && run_case "c100-d1" on --scenario echo --conns 100 --depth 1 --size 64 >> "$results"
  want c1000-d4 && run_case "c1000-d4" on --scenario echo --conns 1000 --depth 4 --size 64 --rate 5000 >> "$results"
  want c1000-d4-nometrics && run_case "c1000-d4-nometrics" off --scenario echo --conns 1000 --depth 4 --size 64 --rate 5000 >> "$results"
  # Churn: connect, upgrade, one echo, close, as fast as 50 loops go (the
  # connect rate cap is lifted far above what they reach).
  want churn-c50 && run_case "churn-c50" on --scenario churn --conns 50 --rate 100000 >> "$results"
done

python3 - "$results" <<'PY' | tee "$OUT/echo.md"
import json, sys, statistics as st
rows = [json.loads(l) for l in open(sys.argv[1])]
cases = []
for r in rows:
    if r["case"] not in cases: cases.append(r["case"])
def med(case, key):
    vals = [r[key] for r in rows if r["case"] == case and r[key] is not None]
    return st.median(vals) if vals else None
fmt = lambda v, f: "-" if v is None else f.format(v)
print("| case | msgs/s | p50 RTT ms | p99 RTT ms | server CPU us/msg | handshakes/s | server CPU us/handshake | errors |")
print("|---|---|---|---|---|---|---|---|")
for c in cases:
    print(f"| {c} | {fmt(med(c,'msgs_per_s'),'{:.0f}')} | {fmt(med(c,'p50_ms'),'{:.3f}')} | {fmt(med(c,'p99_ms'),'{:.3f}')} | "
          f"{fmt(med(c,'server_cpu_us_per_msg'),'{:.2f}')} | {fmt(med(c,'handshakes_per_s'),'{:.0f}')} | "
          f"{fmt(med(c,'server_cpu_us_per_handshake'),'{:.1f}')} | {fmt(med(c,'errors'),'{:.0f}')} |")
PY
