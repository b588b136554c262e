#!/usr/bin/env bash
# Builds the cargo-fuzz targets (fuzz/fuzz_targets) and runs each one for a
# bounded time from its seeds (fuzz/seeds, kept in the repository) plus the
# corpus earlier runs grew (fuzz/corpus, not kept). Exits 1 on any crash,
# leak, timeout or assertion; the input is saved under fuzz/artifacts/.
#
# usage: fuzz/run.sh [SECONDS_PER_TARGET]      default 25 (CI: 7 targets, ~3.5 min)
#   env: TARGETS="handshake http_head session deflate utf8 client proxy_header"   which targets
#        PARALLEL=1                                run the targets at once
set -euo pipefail
cd "$(dirname "$0")/.."
SECS="${1:-25}"
TARGETS="${TARGETS:-handshake http_head session deflate utf8 client proxy_header}"

if ! command -v cargo-fuzz >/dev/null 2>&1; then
  cargo install cargo-fuzz --locked --version 0.13.2
fi
# cargo fuzz builds with -Zsanitizer=address: a nightly toolchain where the
# machine has one, else the stable one told to allow unstable flags.
if rustup run nightly rustc --version >/dev/null 2>&1; then
  FUZZ=(cargo +nightly fuzz)
else
  export RUSTC_BOOTSTRAP=1
  FUZZ=(cargo fuzz)
fi
"${FUZZ[@]}" build

LOGS="$(mktemp -d /tmp/wsloop-fuzz.XXXXXX)"
run_one() {
  local t="$1"
  mkdir -p "fuzz/corpus/$t"
  "${FUZZ[@]}" run "$t" "fuzz/corpus/$t" "fuzz/seeds/$t" -- \
    -max_total_time="$SECS" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 >"$LOGS/$t.log" 2>&1
}
declare -A RC
if [ -n "${PARALLEL:-}" ]; then
  declare -A PIDS
  for t in $TARGETS; do run_one "$t" & PIDS[$t]=$!; done
  for t in $TARGETS; do if wait "${PIDS[$t]}"; then RC[$t]=0; else RC[$t]=$?; fi; done
else
  for t in $TARGETS; do if run_one "$t"; then RC[$t]=0; else RC[$t]=$?; fi; done
fi

passed=0; failed=0
printf '%-10s %14s %8s %8s %s\n' target executions cov corpus result
for t in $TARGETS; do
  log="$LOGS/$t.log"
  execs=$(grep -o 'stat::number_of_executed_units: [0-9]*' "$log" | grep -o '[0-9]*$' || echo '?')
  cov=$(grep -o 'cov: [0-9]*' "$log" | tail -1 | grep -o '[0-9]*$' || echo '?')
  units=$(find "fuzz/corpus/$t" -type f | wc -l)
  if [ "${RC[$t]}" -eq 0 ]; then
    passed=$((passed + 1)); result=ok
  else
    failed=$((failed + 1)); result="FAILED (exit ${RC[$t]}; log $log)"
    grep -E 'panicked|ERROR|SUMMARY|Test unit written' "$log" | head -8 >&2 || true
  fi
  printf '%-10s %14s %8s %8s %s\n' "$t" "$execs" "$cov" "$units" "$result"
done
echo "logs: $LOGS"
echo "fuzz: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
