#!/usr/bin/env bash
# Instructions per request and response header round trip of the filter through the harness, filter and
# host together, counted by callgrind: repeatable where wall-clock figures on a shared machine are not.
#
#   bench/instructions.sh [FILTER_WASM]
#
# The harness benchmark (tests/benches/harness.rs) runs the flagship configuration (usage on) and the same
# with usage off, each alone (BENCH_ONLY), twice: 200 and 2,200 round trips. The difference over 2,000 is
# one round trip, with the process's start, the VM's start and the compile cancelled out. The module is
# compiled once, under valgrind, into a cache both counted runs load (BENCH_CACHE_DIR), so no run counts
# the compiler. `make bench` runs this; valgrind is installed with apt-get when missing and run as root.
set -euo pipefail
cd "$(dirname "$0")/.."

die() { echo "instructions.sh: $*" >&2; exit 1; }

# shellcheck source=scripts/require-tools.sh
source scripts/require-tools.sh
require_tools instructions.sh valgrind

wasm="$(realpath "${1:-target/wasm/filter.wasm}")"
[[ -f "$wasm" ]] || die "no filter module at $wasm (make filter builds it)"

# The benchmark binary, as `cargo bench` builds it.
bench="$("${CARGO:-cargo}" bench --locked -p integration-tests --bench harness --no-run --message-format=json 2>/dev/null \
    | python3 -c 'import json, sys
for line in sys.stdin:
    message = json.loads(line)
    if message.get("reason") == "compiler-artifact" and message.get("executable") and message["target"]["name"] == "harness":
        print(message["executable"])')"
[[ -x "$bench" ]] || die "cargo built no harness benchmark binary"

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
common=(BENCH_VM_START=0 BENCH_BATCHES=1 "BENCH_FILTER_WASM=$wasm" "BENCH_CACHE_DIR=$work/cache")

# Instructions of one callgrind run of the benchmark measuring `only`, `per_batch` round trips.
count() {
    local only="$1" per_batch="$2" out="$work/callgrind.$1.$2"
    env "${common[@]}" BENCH_ONLY="$only" BENCH_PER_BATCH="$per_batch" \
        valgrind --tool=callgrind --callgrind-out-file="$out" "$bench" --bench >/dev/null 2>&1 \
        || die "the benchmark failed under callgrind ($only, $per_batch round trips)"
    awk '/^(summary|totals):/ { print $2; exit }' "$out"
}

echo "filter: $wasm ($(stat -c %s "$wasm") bytes)"
# Compiles the module into the cache, under valgrind as the counted runs are: its CPU features key the cache.
env "${common[@]}" BENCH_ONLY=harness BENCH_PER_BATCH=1 valgrind --tool=none "$bench" --bench >/dev/null 2>&1 \
    || die "the benchmark failed under valgrind"
for only in harness usage-off; do
    few="$(count "$only" 200)"
    many="$(count "$only" 2200)"
    per_round_trip=$(( (many - few) / 2000 ))
    case "$only" in
        harness) label="flagship configuration, usage on" ;;
        *) label="the same, usage off" ;;
    esac
    printf '  %-36s %9d instructions per round trip (goal 25,000)\n' "$label" "$per_round_trip"
done
