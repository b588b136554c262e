#!/usr/bin/env bash
# What an identity costs (issue #29):
#
# 1. Server CPU per upgrade, side by side in one run: no credential, the
#    shared secret (--auth-token-file), a JWT checked with an HMAC secret
#    (HS256) and with an EC public key (ES256). `wsloop load --scenario
#    churn` (connect, upgrade with ?token=, one echo, close; 50 at a time)
#    against one server loop; CPU from /proc/PID/stat over the run. Each
#    case REPEAT times, alternating; the table shows medians.
# 2. Memory per idle authenticated connection: N idle connections on one
#    loop, RssAnon growth / N, with no credential, with one HS256 token
#    shared by all (one user), and with a token per connection (N distinct
#    users). All three opened by the same client, benches/auth_idle.py
#    (which signs the tokens), so that they differ only in the token.
#
#   benches/auth.sh
#   REPEAT=1 DURATION=5s N=5000 benches/auth.sh
#   PARTS=memory benches/auth.sh          # only part 2
#   PARTS=memory BASELINE=/tmp/wsloop-before benches/auth.sh
#                                         # part 2 for this build and another
#                                         # server binary, alternating
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${DURATION:-10s}
REPEAT=${REPEAT:-3}
N=${N:-15000}
PARTS=${PARTS:-cpu,memory}
PORT=${PORT:-18130}
OUT=benches/results
cargo build --release --quiet
BIN=target/release/wsloop
BASELINE=${BASELINE:-}
TICK=$(getconf CLK_TCK)
mkdir -p "$OUT"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# Keys and tokens.
secret="bench-hs256-secret-of-at-least-32-bytes"
printf '%s' "$secret" > "$work/hs256.key"
openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$work/es256.pem" 2>/dev/null
openssl pkey -in "$work/es256.pem" -pubout -out "$work/es256.pub" 2>/dev/null
shared="bench-shared-secret-0123456789"
printf '%s\n' "$shared" > "$work/tokens"
hs256=$(python3 benches/auth_idle.py sign-hs256 "$secret" bench-user)
es256=$(python3 benches/auth_idle.py sign-es256 "$work/es256.pem" bench-user)

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
rss_anon() { awk '/RssAnon/ {print $2}' "/proc/$1/status"; }

# serve MODE: starts the server for MODE; prints its pid.
serve() {
  local flags=()
  case $1 in
    token) flags=(--auth-token-file "$work/tokens") ;;
    hs256) flags=(--jwt-key "$work/hs256.key") ;;
    es256) flags=(--jwt-key "$work/es256.pub") ;;
  esac
  "${SERVER:-$BIN}" serve --addr "127.0.0.1:$PORT" --workers 1 --metrics-addr off --log-level warn \
    --max-conns 19000 --idle-timeout 300s "${flags[@]}" >/dev/null 2>&1 &
  echo $!
}

token_of() {
  case $1 in none) echo "" ;; token) echo "$shared" ;; hs256) echo "$hs256" ;; es256) echo "$es256" ;; esac
}

results="$OUT/auth-handshake.jsonl"
[[ $PARTS == *cpu* ]] && : > "$results"
for round in $(seq 1 "$REPEAT"); do
  [[ $PARTS == *cpu* ]] || break
  for mode in none token hs256 es256; do
    spid=$(serve "$mode")
    sleep 0.5
    before=$(cpu_ticks "$spid")
    "$BIN" load --url "ws://127.0.0.1:$PORT/ws?token=$(token_of "$mode")" --scenario churn --conns 50 \
      --rate 100000 --duration "$DURATION" --json "$work/churn.json" >/dev/null 2>"$work/churn.log" \
      || { echo "load failed for $mode" >&2; tail "$work/churn.log" >&2; }
    after=$(cpu_ticks "$spid")
    kill "$spid"; wait "$spid" 2>/dev/null || true
    python3 - "$work/churn.json" "$((after - before))" "$TICK" "$mode" >> "$results" <<'PY'
import json, sys
r = json.load(open(sys.argv[1])); ticks, hz, mode = int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
n = r["established"]
print(json.dumps({"mode": mode, "handshakes_per_s": n / r["duration_secs"],
                  "cpu_us_per_handshake": ticks / hz * 1e6 / n if n else None,
                  "failed": sum(r["failed"].values())}))
PY
  done
done

mem="$OUT/auth-memory.jsonl"
[[ $PARTS == *memory* ]] && : > "$mem"
for round in $(seq 1 "$REPEAT"); do
  [[ $PARTS == *memory* ]] || break
  for build in current ${BASELINE:+baseline}; do
  for mode in none hs256-one-user hs256-distinct-users; do
    SERVER=$BIN; [[ $build == baseline ]] && SERVER=$BASELINE
    case $mode in none) spid=$(serve none) ;; *) spid=$(serve hs256) ;; esac
    sleep 1
    before=$(rss_anon "$spid")
    users=${mode#hs256-}; users=${users%-user*}
    python3 benches/auth_idle.py hold "127.0.0.1:$PORT" "$N" "$secret" 15 "$users" >/dev/null 2>&1 &
    lpid=$!
    sleep 13
    held=$(rss_anon "$spid")
    open=$(ss -Htn state established "( sport = :$PORT )" | wc -l)
    echo "{\"build\": \"$build\", \"mode\": \"$mode\", \"open\": $open, \"bytes_per_conn\": $(((held - before) * 1024 / N))}" >> "$mem"
    wait "$lpid" || true
    kill "$spid"; wait "$spid" 2>/dev/null || true
  done
  done
done

summary="$OUT/auth.md"
[[ $PARTS == cpu,memory ]] || summary="$OUT/auth-${PARTS//,/-}.md"
python3 - "$results" "$mem" "$PARTS" <<'PY' | tee "$summary"
import json, sys, statistics as st
med = lambda rows, mode, key: st.median([r[key] for r in rows if r["mode"] == mode and r[key] is not None])
if "cpu" in sys.argv[3]:
    hs = [json.loads(l) for l in open(sys.argv[1])]
    base = med(hs, "none", "cpu_us_per_handshake")
    print("| upgrade | handshakes/s | server CPU us/handshake | vs none | failed |")
    print("|---|---|---|---|---|")
    for mode in ["none", "token", "hs256", "es256"]:
        cpu = med(hs, mode, "cpu_us_per_handshake")
        print(f"| {mode} | {med(hs, mode, 'handshakes_per_s'):.0f} | {cpu:.1f} | {cpu / base:.2f}x | {sum(r['failed'] for r in hs if r['mode'] == mode)} |")
    print()
if "memory" in sys.argv[3]:
    every = [json.loads(l) for l in open(sys.argv[2])]
    print("| build | idle connections | open (last round) | bytes per connection (rounds) | median | vs none |")
    print("|---|---|---|---|---|---|")
    for build in dict.fromkeys(r["build"] for r in every):
        mem = [r for r in every if r["build"] == build]
        none = med(mem, "none", "bytes_per_conn")
        for mode in ["none", "hs256-one-user", "hs256-distinct-users"]:
            b = med(mem, mode, "bytes_per_conn")
            rounds = ", ".join(str(r["bytes_per_conn"]) for r in mem if r["mode"] == mode)
            last = [r["open"] for r in mem if r["mode"] == mode][-1]
            print(f"| {build} | {mode} | {last} | {rounds} | {b:.0f} | {b - none:+.0f} |")
PY
