#!/usr/bin/env bash
# ws:// and wss:// side by side: the same wsloop binary, with and without
# --tls-cert, the same load generator (which speaks TLS through rustls
# too, on the same two cores) and cases, alternating runs so both see the
# same noise; medians of REPEAT runs.
#
#   benches/tls.sh                     # WORKERS=1 REPEAT=3 DURATION=10s IDLE=15000
#   ONLY=storm benches/tls.sh          # just the handshake-storm cases, with
#                                      # --tls-handshakes-per-pass 16 (default), 4 and 0 (no limit)
#
# Figures per case: messages/s, p50 / p99 round trip, server CPU per
# message; churn: handshakes/s and server CPU per handshake; RSS per idle
# connection at IDLE connections; and the ping p99 of 100 established
# connections with and without a storm of new TLS connections beside them.
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
results="$OUT/tls-w$WORKERS.jsonl"
: > "$results"
. benches/lib.sh

# A CA and a P-256 server certificate for localhost.
PKI=$(mktemp -d)
trap 'rm -rf "$PKI"' EXIT
tests/make-cert.sh "$PKI"

PORT=18098
url() { [ "$1" = wss ] && echo "wss://localhost:$PORT/ws" || echo "ws://127.0.0.1:$PORT/ws"; }
client_args() { [ "$1" = wss ] && echo "--tls-ca $PKI/ca.pem" || true; }

start_server() { # scheme [handshakes-per-pass]
  require_free_port "$PORT"
  local tls=()
  [ "$1" = wss ] && tls=(--tls-cert "$PKI/server.pem" --tls-key "$PKI/server.key" --tls-handshakes-per-pass "${2:-16}")
  "$BIN" serve --io "${IO:-auto}" --addr 127.0.0.1:$PORT --workers "$WORKERS" --metrics-addr off --log-level warn "${tls[@]}" &
  SPID=$!
  sleep 0.5
}

run() { # scheme case load-args...
  local scheme=$1 case=$2; shift 2
  start_server "$scheme"
  local cpu0 cpu1
  cpu0=$(cpu_ticks "$SPID")
  # shellcheck disable=SC2046
  "$BIN" load --url "$(url "$scheme")" $(client_args "$scheme") --json "$OUT/tls.json" "$@" > /dev/null 2>&1 || true
  cpu1=$(cpu_ticks "$SPID")
  kill "$SPID"; wait "$SPID" 2>/dev/null || true
  load_figures "$OUT/tls.json" "$((cpu1 - cpu0))" scheme="$scheme" case="$case" >> "$results"
}

# Ping p99 of 100 connections (10 pings/s each) while STORM clients open,
# upgrade and close connections as fast as they can beside them.
storm() { # scheme storm-conns [handshakes-per-pass]
  local scheme=$1 storm=$2 budget=${3:-16} spid_load
  start_server "$scheme" "$budget"
  if [ "$storm" -gt 0 ]; then
    # shellcheck disable=SC2046
    "$BIN" load --url "$(url "$scheme")" $(client_args "$scheme") --scenario churn --conns "$storm" --rate 100000 \
      --duration 14s > /dev/null 2>&1 &
    spid_load=$!
    sleep 2
  fi
  # shellcheck disable=SC2046
  "$BIN" load --url "$(url "$scheme")" $(client_args "$scheme") --scenario ping --conns 100 --interval 100ms \
    --duration 10s --json "$OUT/tls.json" > /dev/null 2>&1 || true
  [ "$storm" -gt 0 ] && { wait "$spid_load" || true; }
  kill "$SPID"; wait "$SPID" 2>/dev/null || true
  local case="ping-storm-$storm"
  [ "$budget" != 16 ] && case="$case-budget-$budget"
  load_figures "$OUT/tls.json" 0 scheme="$scheme" case="$case" >> "$results"
}

idle_rss() { # scheme
  start_server "$1"
  local per_conn
  # shellcheck disable=SC2046
  per_conn=$(RATE=${IDLE_RATE:-1000} idle_bytes_per_conn "$SPID" "$(url "$1")" "$IDLE" $(client_args "$1"))
  kill "$SPID"; wait "$SPID" 2>/dev/null || true
  echo "{\"scheme\": \"$1\", \"case\": \"idle-rss\", \"bytes_per_conn\": $per_conn}" >> "$results"
}

if [ "${ONLY:-}" = storm ]; then
  results="$OUT/tls-storm-w$WORKERS.jsonl"
  : > "$results"
  for i in $(seq 1 "$REPEAT"); do
    storm ws 0
    storm ws 200
    for budget in 16 4 0; do storm wss 0 "$budget"; storm wss 200 "$budget"; done
  done
fi
for i in $(seq 1 "$([ "${ONLY:-}" = storm ] && echo 0 || echo "$REPEAT")"); do
  for scheme in ws wss; do
    run "$scheme" c100-d1 --scenario echo --conns 100 --depth 1 --size 64 --duration "$DURATION"
    run "$scheme" c1000-d4 --scenario echo --conns 1000 --depth 4 --size 64 --rate 5000 --duration "$DURATION"
    run "$scheme" churn-c50 --scenario churn --conns 50 --rate 100000 --duration "$DURATION"
    storm "$scheme" 0
    storm "$scheme" 200
  done
  for scheme in ws wss; do idle_rss "$scheme"; done
done

python3 - "$results" <<'PY' | tee "${results%.jsonl}.md"
import json, sys, statistics as st
rows = [json.loads(l) for l in open(sys.argv[1])]
def med(scheme, case, key):
    v = [r[key] for r in rows if r["scheme"] == scheme and r["case"] == case and r.get(key) is not None]
    return st.median(v) if v else None
print("| case | figure | ws | wss | wss / ws |")
print("|---|---|---|---|---|")
cases = {"c100-d1": ["msgs_per_s", "p50_ms", "p99_ms", "cpu_us_per_msg"],
         "c1000-d4": ["msgs_per_s", "p50_ms", "p99_ms", "cpu_us_per_msg"],
         "churn-c50": ["handshakes_per_s", "cpu_us_per_handshake"],
         "ping-storm-0": ["p50_ms", "p99_ms"], "ping-storm-200": ["p50_ms", "p99_ms"],
         "ping-storm-0-budget-4": ["p50_ms", "p99_ms"], "ping-storm-200-budget-4": ["p50_ms", "p99_ms"],
         "ping-storm-0-budget-0": ["p50_ms", "p99_ms"], "ping-storm-200-budget-0": ["p50_ms", "p99_ms"],
         "idle-rss": ["bytes_per_conn"]}
for r in rows:
    if r["case"] == "churn-c50" and r.get("handshakes_per_s"):
        r["cpu_us_per_handshake"] = r["cpu_us_per_msg"] * r["msgs_per_s"] / r["handshakes_per_s"] if r.get("cpu_us_per_msg") else None
for case, keys in cases.items():
    if not any(r["case"] == case for r in rows):
        continue
    for key in keys:
        a, b = med("ws", case, key), med("wss", case, key)
        ratio = "-" if not a or not b else "{:.2f}x".format(b / a)
        f = lambda v: "-" if v is None else ("{:.3f}" if key.endswith("_ms") else "{:.2f}" if key.startswith("cpu") else "{:.0f}").format(v)
        print(f"| {case} | {key} | {f(a)} | {f(b)} | {ratio} |")
print("\nerrors:", {s: sum(r.get("errors", 0) for r in rows if r["scheme"] == s) for s in ("ws", "wss")})
PY
