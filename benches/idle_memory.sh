#!/usr/bin/env bash
# Idle memory per connection: N idle WebSocket connections on one loop, the
# server's anonymous RSS growth (RssAnon) divided by N, for each binary given
# (default: this build), ROUNDS times, alternating. The load generator is
# this build's `wsloop load --scenario idle`.
#
#   benches/idle_memory.sh                          this build
#   benches/idle_memory.sh /path/to/old/wsloop target/release/wsloop
#   N=15000 ROUNDS=3 benches/idle_memory.sh ...
set -euo pipefail
cd "$(dirname "$0")/.."
N=${N:-15000}
ROUNDS=${ROUNDS:-3}
PORT=${PORT:-18120}
cargo build --release --quiet
LOAD=target/release/wsloop
[ $# -gt 0 ] || set -- target/release/wsloop
rss_anon() { awk '/RssAnon/ {print $2}' "/proc/$1/status"; }
for round in $(seq 1 "$ROUNDS"); do
  for bin in "$@"; do
    "$bin" serve --addr "127.0.0.1:$PORT" --workers 1 --metrics-addr off --log-level warn \
      --max-conns 19000 --idle-timeout 300s >/dev/null 2>&1 &
    spid=$!
    sleep 1
    before=$(rss_anon "$spid")
    "$LOAD" load --url "ws://127.0.0.1:$PORT/ws" --scenario idle --conns "$N" --rate 6000 --duration 15s \
      >/dev/null 2>&1 &
    lpid=$!
    sleep 13
    held=$(rss_anon "$spid")
    open=$(ss -Htn state established "( sport = :$PORT )" | wc -l)
    echo "$bin round $round: $open open, RssAnon $before -> $held KiB, $(((held - before) * 1024 / N)) B per connection"
    wait "$lpid" || true
    kill "$spid"
    wait "$spid" 2>/dev/null || true
  done
done
