# Shared by the bench scripts (source it): process figures from /proc and
# one JSON line of figures from a `wsloop load --json` report.

# Resident set of process $1, in KiB.
rss_kb() { awk '/VmRSS/ {print $2}' "/proc/$1/status"; }
# User + system CPU time of process $1, in clock ticks.
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

# load_figures REPORT.json CPU_TICKS [KEY=VALUE...]: one JSON line with the
# labels given, msgs/s, p50 / p99 / p99.9 round trip (ms), server CPU per
# message (us, from CPU_TICKS spent during the run), handshakes/s, errors.
load_figures() {
  python3 - "$1" "$2" "$(getconf CLK_TCK)" "${@:3}" <<'PY'
import json, sys
r = json.load(open(sys.argv[1])); ticks, hz = int(sys.argv[2]), int(sys.argv[3])
row = dict(kv.split("=", 1) for kv in sys.argv[4:])
c = sorted((r.get("rtt") or {"counts": []})["counts"]); tot = sum(n for _, n in c)
def q(p):
    seen = 0
    for v, n in c:
        seen += n
        if seen >= p * tot: return v / 1000.0
msgs = r["messages_received"]; secs = r["duration_secs"]
row.update({"msgs_per_s": msgs / secs, "p50_ms": q(0.5), "p99_ms": q(0.99), "p999_ms": q(0.999),
  "cpu_us_per_msg": ticks / hz * 1e6 / msgs if msgs else None, "handshakes_per_s": r["established"] / secs,
  "errors": sum(r["failed"].values()) + r["mismatches"] + sum(r["server_closed"].values())})
print(json.dumps(row))
PY
}

# idle_bytes_per_conn PID URL CONNS [LOAD_ARGS...]: holds CONNS idle
# connections on the server PID (wsloop load, RATE (5,000) new per second)
# and prints the growth of its RSS per connection, in bytes, once they are
# all open.
idle_bytes_per_conn() {
  local before after lpid rate=${RATE:-5000}
  before=$(rss_kb "$1")
  "${BIN:-target/release/wsloop}" load --url "$2" --scenario idle --conns "$3" --rate "$rate" --duration 6s "${@:4}" > /dev/null 2>&1 &
  lpid=$!
  sleep $(($3 / rate + 4))
  after=$(rss_kb "$1")
  wait "$lpid" || true
  echo $(( (after - before) * 1024 / $3 ))
}

# require_free_port PORT: fails when something still listens on PORT after
# 3 s (a stray server left from an earlier run would share it through
# SO_REUSEPORT and take half the connections: every figure would be wrong).
require_free_port() {
  local i
  for i in $(seq 30); do
    ss -Hltn "sport = :$1" | grep -q . || return 0
    sleep 0.1
  done
  if ss -Hltn "sport = :$1" | grep -q .; then
    echo "port $1 is taken (a stray server?): $(ss -Hltnp "sport = :$1" | head -1)" >&2
    exit 2
  fi
}

# metrics_counter PORT NAME: the sum of a counter's samples on the
# server's /metrics at 127.0.0.1:PORT.
metrics_counter() {
  python3 - "$1" "$2" <<'PY'
import sys, urllib.request
body = urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/metrics", timeout=30).read().decode()
print(int(sum(float(l.rsplit(" ", 1)[1]) for l in body.splitlines()
              if l.startswith(sys.argv[2]) and l[len(sys.argv[2])] in " {")))
PY
}

# wait_listening PORT SECONDS: true once something listens on PORT, false
# after SECONDS.
wait_listening() {
  local i
  for i in $(seq $(($2 * 10))); do
    ss -Hltn "sport = :$1" | grep -q . && return 0
    sleep 0.1
  done
  return 1
}
