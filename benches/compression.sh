#!/usr/bin/env bash
# permessage-deflate off / shared / dedicated, side by side in one run: the
# same client (`wsloop load --compression`, which offers the extension and
# compresses what it sends when the server agrees), the same JSON chat
# payload, the modes alternating within each round so all see the same
# noise. The server runs one event loop.
#
#   benches/compression.sh    env: REPEAT=3 SIZE=600 FANOUT_RATE=20 MODES="off shared dedicated"
#
# Cases, per mode (medians of REPEAT rounds):
#   echo    1000 connections x 4 in flight, chat text of SIZE bytes, 10 s:
#           msgs/s, p99 round trip, server CPU per message (user + system,
#           /proc/PID/stat), bytes on the wire per message each way (the
#           server's socket byte counters / messages)
#   warm    2000 connections x 1 in flight, 5 s, then server RSS per
#           connection above its baseline (every connection has used its
#           codecs: what dedicated costs per connection)
#   idle    15,000 connections that negotiated and never send: server RSS
#           per connection above its baseline (the issue's "idle" figure)
#   fanout  1 publisher, 10,000 members, FANOUT_RATE (20) publishes/s of about SIZE
#           bytes, 10 s: deliveries, p50/p99, server CPU per publish, wire
#           bytes per delivery
# Results: benches/results/compression.jsonl (one line per run) and a
# summary table on stdout.
set -euo pipefail
cd "$(dirname "$0")/.."

REPEAT=${REPEAT:-3}
SIZE=${SIZE:-600}
FANOUT_RATE=${FANOUT_RATE:-20}
MODES=${MODES:-off shared dedicated}
OUT=benches/results
PORT=18180
MPORT=18190
cargo build --release --quiet
BIN=target/release/wsloop
mkdir -p "$OUT"
TICK=$(getconf CLK_TCK)
results="$OUT/compression.jsonl"
: > "$results"

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
metric() { curl -s "http://127.0.0.1:$MPORT/metrics" | awk -v m="$1" '$1 == m {print $2}'; }

SPID=""
cleanup() { [ -n "$SPID" ] && kill "$SPID" 2>/dev/null || true; }
trap cleanup EXIT

start_server() { # mode
  "$BIN" serve --addr "127.0.0.1:$PORT" --workers 1 --metrics-addr "127.0.0.1:$MPORT" --log-level warn \
    --compression "$1" &
  SPID=$!
  for _ in $(seq 50); do curl -sf "http://127.0.0.1:$MPORT/healthz" >/dev/null && break; sleep 0.1; done
}

stop_server() { kill "$SPID"; wait "$SPID" 2>/dev/null || true; SPID=""; }

run() { # mode case load-args...
  local mode=$1 case=$2; shift 2
  start_server "$mode"
  local cpu0 cpu1 sent0 sent1 recv0 recv1
  cpu0=$(cpu_ticks "$SPID"); sent0=$(metric wsloop_bytes_sent_total); recv0=$(metric wsloop_bytes_received_total)
  "$BIN" load --url "ws://127.0.0.1:$PORT/ws" --compression --json "$OUT/compression-run.json" \
    --metrics-url "http://127.0.0.1:$MPORT/metrics" "$@" > /dev/null 2>&1 || true
  cpu1=$(cpu_ticks "$SPID"); sent1=$(metric wsloop_bytes_sent_total); recv1=$(metric wsloop_bytes_received_total)
  stop_server
  python3 - "$OUT/compression-run.json" "$mode" "$case" "$((cpu1 - cpu0))" "$TICK" \
    "$((sent1 - sent0))" "$((recv1 - recv0))" >> "$results" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
mode, case, ticks, hz, sent, recv = sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6]), int(sys.argv[7])
def pct(p):
    c = sorted((r.get("rtt") or {"counts": []})["counts"]); tot = sum(n for _, n in c); seen = 0
    for v, n in c:
        seen += n
        if seen >= p * tot: return v / 1000.0
base = (r.get("server_baseline") or {}).get("server_rss") or 0
peak = max([s.get("server_rss") or 0 for s in r["timeline"]] or [0])
conns = r["peak_open"] or 1
got = r["messages_received"]
line = {"mode": mode, "case": case, "secs": r["duration_secs"], "received": got,
        "msgs_per_s": got / r["duration_secs"], "p50_ms": pct(0.5), "p99_ms": pct(0.99),
        "cpu_s": ticks / hz, "wire_out_per_msg": sent / got if got else None,
        "wire_in_per_msg": recv / r["messages_sent"] if r["messages_sent"] else None,
        "rss_per_conn": (peak - base) / conns, "conns": r["peak_open"],
        "errors": sum(r["failed"].values()) + r["mismatches"] + sum(r["server_closed"].values())}
if case == "fanout":
    line["cpu_us_per_publish"] = ticks / hz * 1e6 / max(1, r["messages_sent"])
else:
    line["cpu_us_per_msg"] = ticks / hz * 1e6 / got if got else None
print(json.dumps(line))
PY
}

for round in $(seq "$REPEAT"); do
  for mode in $MODES; do
    echo "round $round: $mode" >&2
    run "$mode" echo --scenario echo --conns 1000 --rate 5000 --depth 4 --payload chat --size "$SIZE" --duration 10s
    run "$mode" warm --scenario echo --conns 2000 --rate 5000 --depth 1 --payload chat --size "$SIZE" --duration 5s
    run "$mode" idle --scenario idle --conns 15000 --rate 5000 --duration 12s
    run "$mode" fanout --scenario fanout --conns 10001 --rate 5000 --publish-rate "$FANOUT_RATE" --size "$SIZE" --duration 14s
  done
done

python3 - "$results" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
def med(mode, case, key):
    v = [r[key] for r in rows if r["mode"] == mode and r["case"] == case and r.get(key) is not None]
    return statistics.median(v) if v else float("nan")
modes = list(dict.fromkeys(r["mode"] for r in rows))
print(f"{'mode':10} {'echo msgs/s':>12} {'p99 ms':>8} {'CPU us/msg':>11} {'wire out B/msg':>15} {'wire in B/msg':>14}"
      f" {'warm RSS B/conn':>16} {'idle RSS B/conn':>16} {'fanout CPU us/pub':>18} {'fanout B/delivery':>18} {'fanout p99':>11} {'errors':>7}")
for m in modes:
    errs = sum(r["errors"] for r in rows if r["mode"] == m)
    print(f"{m:10} {med(m,'echo','msgs_per_s'):12.0f} {med(m,'echo','p99_ms'):8.2f} {med(m,'echo','cpu_us_per_msg'):11.2f}"
          f" {med(m,'echo','wire_out_per_msg'):15.1f} {med(m,'echo','wire_in_per_msg'):14.1f}"
          f" {med(m,'warm','rss_per_conn'):16.0f} {med(m,'idle','rss_per_conn'):16.0f}"
          f" {med(m,'fanout','cpu_us_per_publish'):18.0f} {med(m,'fanout','wire_out_per_msg'):18.1f}"
          f" {med(m,'fanout','p99_ms'):11.1f} {errs:7d}")
PY
