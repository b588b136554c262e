#!/usr/bin/env bash
# Memory after a ramp-down: one wsloop process (--workers 1) takes CONNS idle
# connections (`wsloop load`, 10,000 new per second), they leave, three times
# in a row; its RSS before, at the peak and 4 s after each ramp-down, with
# --release-memory-after 1s and with 0s (never), on each I/O driver.
# 19,000 is one process's share of a million over ~50 processes (the
# per-process file limit here is 20,000).
#
#   benches/release.sh            CONNS=19000 DRIVERS="epoll uring"
# Results: benches/results/release.txt
set -euo pipefail
cd "$(dirname "$0")/.."
source benches/lib.sh

CONNS=${CONNS:-19000}
DRIVERS=${DRIVERS:-"epoll uring"}
PORT=${PORT:-18555}
OUT=benches/results
cargo build --release --quiet
BIN=target/release/wsloop
mkdir -p "$OUT"
{
  echo "# $CONNS idle connections per cycle, one loop; RSS in KiB"
  echo "| driver | --release-memory-after | cycle | before | peak | after | kept of the peak's growth | releases |"
  echo "|---|---|---|---|---|---|---|---|"
  for io in $DRIVERS; do
    for after in 1s 0s; do
      require_free_port "$PORT"
      "$BIN" serve --addr "127.0.0.1:$PORT" --workers 1 --io "$io" --metrics-addr "127.0.0.1:$((PORT + 1))" \
        --log-level warn --release-memory-after "$after" &
      server=$!
      sleep 0.5
      "$BIN" load --url "ws://127.0.0.1:$PORT/ws" --conns 20 --duration 1s > /dev/null 2>&1 # warm up
      sleep 1
      base=$(rss_kb "$server")
      for cycle in 1 2 3; do
        "$BIN" load --url "ws://127.0.0.1:$PORT/ws" --conns "$CONNS" --rate 10000 --duration 3s > /dev/null 2>&1 &
        load=$!
        sleep $((CONNS / 10000 + 2))
        peak=$(rss_kb "$server")
        wait "$load" || true
        sleep 4
        now=$(rss_kb "$server")
        releases=$(curl -s "127.0.0.1:$((PORT + 1))/metrics" | awk '/^wsloop_memory_releases_total/ {print $2}')
        kept=$(python3 -c "print(f'{100 * ($now - $base) / max(1, $peak - $base):.0f} %')")
        echo "| $io | $after | $cycle | $base | $peak | $now | $kept | $releases |"
      done
      kill "$server"
      wait "$server" 2> /dev/null || true
    done
  done
} | tee "$OUT/release.txt"
