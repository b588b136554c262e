#!/usr/bin/env bash
# The million: wsloop holding 1,000,000 WebSocket connections on one host,
# both ends on loopback (2,000,000 sockets), driven by `wsloop load`.
#
#   benches/c1m.sh [TARGET]        (default 1000000; needs root)
#
# The per-process file limit here is 20,000 and cannot be raised, so SERVERS
# `wsloop serve --workers 1` processes share one SO_REUSEPORT port and the
# load generator splits itself over as many processes, connecting from
# SOURCES loopback addresses (a source address has ~64k ports).
#
# The host is tuned the documented way: sysctl/apply.sh --apply (with a
# backup, reverted on exit), and the run happens in a network namespace of
# its own created with net.ipv4.tcp_child_ehash_entries = EHASH: the host's
# established-connection hash was sized at boot (262,144 buckets here) and
# with 2M sockets its chains make every connect and every packet slow (a
# first run spent 37 % of all CPU walking them: BENCHMARKS.md).
#
# CYCLES times: ramp to TARGET in RAMP, hold HOLD while every connection
# sends a ping every INTERVAL, ramp down in DOWN, rest REST (the servers give
# their memory back after 10 s mostly empty). Then the leak check.
# Results: benches/results/c1m.{txt,json,svg}, c1m-cpu.tsv (CPU every 5 s)
# and c1m-slab.txt (the kernel's slab caches before, at the first peak and
# at the end: which objects a connection costs, on which end).
set -euo pipefail
cd "$(dirname "$0")/.."

TARGET=${1:-1000000}
SERVERS=${SERVERS:-56}
SOURCES=${SOURCES:-32}
PORT=${PORT:-18080}
METRICS_BASE=${METRICS_BASE:-19100}
RATE=${RATE:-5000}
RAMP=${RAMP:-240s}
HOLD=${HOLD:-60s}
DOWN=${DOWN:-60s}
REST=${REST:-30s}
CYCLES=${CYCLES:-3}
INTERVAL=${INTERVAL:-30s}
IO=${IO:-auto}
EHASH=${EHASH:-2097152}
NS=${NS:-wsloop-c1m}
OUT=benches/results
TAG=${TAG:-c1m}
BIN=target/release/wsloop

if [ -z "${C1M_IN_NS:-}" ]; then
  [ "$(id -u)" -eq 0 ] || { echo "c1m.sh: needs root (sysctl, network namespace)" >&2; exit 2; }
  cargo build --release --quiet
  mkdir -p "$OUT"
  backup_host=$(mktemp) backup_ns=$(mktemp)
  child_ehash=$(sysctl -n net.ipv4.tcp_child_ehash_entries)
  cleanup() {
    ip netns del "$NS" 2>/dev/null || true
    sysctl -qw net.ipv4.tcp_child_ehash_entries="$child_ehash" || true
    bash sysctl/apply.sh --revert "$backup_host" > /dev/null || true
    rm -f "$backup_host" "$backup_ns"
  }
  trap cleanup EXIT
  bash sysctl/apply.sh --apply --backup "$backup_host" | tail -1
  ip netns del "$NS" 2>/dev/null || true
  sysctl -qw net.ipv4.tcp_child_ehash_entries="$EHASH"
  ip netns add "$NS"
  ip -n "$NS" link set lo up
  ip netns exec "$NS" bash sysctl/apply.sh --apply --backup "$backup_ns" | tail -1
  echo "namespace $NS: tcp_ehash_entries $(ip netns exec "$NS" sysctl -n net.ipv4.tcp_ehash_entries)"
  C1M_IN_NS=1 ip netns exec "$NS" "$0" "$@"
  exit $?
fi

# --- inside the namespace ---
last=$((SOURCES + 1))
"$BIN" doctor --target-conns "$TARGET" --role both --processes "$SERVERS" --sources "$SOURCES" | tee "$OUT/$TAG-doctor.txt"
echo "file limit: $(ulimit -Hn); port range: $(cat /proc/sys/net/ipv4/ip_local_port_range)"

pids=()
stop() { kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; }
trap stop EXIT
metrics=()
for i in $(seq 0 $((SERVERS - 1))); do
  mport=$((METRICS_BASE + i))
  "$BIN" serve --addr "127.0.0.1:$PORT" --workers 1 --io "$IO" --metrics-addr "127.0.0.1:$mport" \
    --log-level warn &
  pids+=($!)
  metrics+=(--metrics-url "http://127.0.0.1:$mport/metrics")
done
servers=("${pids[@]}")
sleep 2
cp /proc/slabinfo "$OUT/.slab-before"

stages=()
for _ in $(seq "$CYCLES"); do
  stages+=(--stage "$RAMP:$TARGET" --stage "$HOLD:$TARGET" --stage "$DOWN:0" --stage "$REST:0")
done

"$BIN" load --url "ws://127.0.0.1:$PORT/ws" --scenario ping --interval "$INTERVAL" "${stages[@]}" \
  --rate "$RATE" --connect-timeout 30s --source-ips "127.0.0.2-127.0.0.$last" --processes "$SERVERS" \
  "${metrics[@]}" --expect-clean \
  --json "$OUT/$TAG.json" --plot "$OUT/$TAG.svg" > "$OUT/$TAG.txt" &
load=$!
pids+=($load)
# The first hold's middle: the peak's slab caches.
peak_at=$(( $(echo "$RAMP" | tr -dc 0-9) + $(echo "$HOLD" | tr -dc 0-9) / 2 ))
(sleep "$peak_at" && cp /proc/slabinfo "$OUT/.slab-peak") &

# CPU of the servers and of the load generator (parent and children), in
# clock ticks, every 5 s: BENCHMARKS.md takes the holds' share.
ticks() { local t=0 p; for p in "$@"; do t=$((t + $(awk '{print $14 + $15}' "/proc/$p/stat" 2>/dev/null || echo 0))); done; echo $t; }
start=$(date +%s.%N)
echo -e "t\tserver_ticks\tload_ticks\thz" > "$OUT/$TAG-cpu.tsv"
while kill -0 "$load" 2>/dev/null; do
  now=$(date +%s.%N)
  echo -e "$(awk "BEGIN {print $now - $start}")\t$(ticks "${servers[@]}")\t$(ticks "$load" $(pgrep -P "$load"))\t$(getconf CLK_TCK)" >> "$OUT/$TAG-cpu.tsv"
  sleep 5
done
rc=0
wait "$load" || rc=$?
cp /proc/slabinfo "$OUT/.slab-after"
python3 - "$OUT" "$TARGET" > "$OUT/$TAG-slab.txt" <<'PY'
import sys
out, conns = sys.argv[1], int(sys.argv[2])
def caches(name):
    rows = {}
    for line in open(f"{out}/.slab-{name}").read().splitlines()[2:]:
        f = line.split()
        rows[f[0]] = int(f[2]) * int(f[3])  # objects x object size
    return rows
before, peak, after = caches("before"), caches("peak"), caches("after")
grew = sorted(((peak.get(k, 0) - before.get(k, 0), k) for k in peak), reverse=True)
print(f"slab caches that grew from before the run to the first peak, per connection ({conns}):")
print(f"{'cache':<24} {'bytes/conn':>10} {'after - before (MB)':>20}")
total = 0
for d, k in grew[:14]:
    total += d
    print(f"{k:<24} {d / conns:>10.0f} {(after.get(k, 0) - before.get(k, 0)) / 1e6:>20.1f}")
print(f"{'(these, together)':<24} {total / conns:>10.0f}")
PY
rm -f "$OUT"/.slab-*
cat "$OUT/$TAG-slab.txt" "$OUT/$TAG.txt"
exit $rc
