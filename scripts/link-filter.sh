#!/usr/bin/env bash
# The linker of the shipped filter build: scripts/build-filter.sh has rustc call this instead of rust-lld,
# so cargo's link output (target/wasm/wasm32-wasip1/wasm-release/filter.wasm) is the module that ships.
#
# rustc calls it with wasm-ld's arguments (`-flavor wasm`, one `--export NAME` pair per exported symbol,
# ..., `-o OUT`). It:
#   1. drops the `--export` pairs of the SDK's callbacks for features the filter never uses (gRPC, foreign
#      functions, shared queues, TCP streams), so wasm-ld's `--gc-sections` drops them and everything only
#      they reach. Hosts treat every `proxy_on_*` callback as optional and never call these for an HTTP
#      filter that makes no gRPC call, calls no foreign function and registers no queue. Every other
#      export stays, so a callback a later SDK adds is kept until someone decides otherwise;
#      tests/integration/filter.rs pins the set;
#   2. links with rust-lld (FILTER_RUST_LLD, set by build-filter.sh);
#   3. runs `wasm-opt -Os` (not `-Oz`: that is 2% smaller but costs 3% more instructions per request,
#      where `-Os` costs none) with `--merge-similar-functions`, which folds functions that differ only in
#      constants or callees (the copies of one generic for different types, mostly): 1.5% smaller for 0.7%
#      more instructions per request. Functions of up to 5 nodes are always inlined (binaryen's `-Os`
#      stops at 2): the allocator's entry points `__rust_alloc`, `__rust_dealloc` and `__rust_realloc`,
#      which only call the global allocator, `RawVec::grow_one` and a few more one-call wrappers, so an
#      allocation from std or the SDK is one call rather than two; 430 bytes smaller and about 100
#      instructions fewer per request (3 and 4 inline fewer of them, 8 and up grow the module). This is
#      also what re-encodes the linker's padded (5-byte) indices;
#   4. checks the result exports exactly what step 1 kept, and replaces OUT with it in one step.
set -euo pipefail

die() { echo "link-filter.sh: $*" >&2; exit 1; }

lld="${FILTER_RUST_LLD:-}"
[[ -n "$lld" && -x "$lld" ]] || die "FILTER_RUST_LLD must name rust-lld (scripts/build-filter.sh sets it)"
command -v wasm-opt >/dev/null 2>&1 && command -v wasm-dis >/dev/null 2>&1 \
    || die "wasm-opt and wasm-dis are missing: install binaryen"

dropped=" proxy_on_grpc_receive proxy_on_grpc_receive_initial_metadata proxy_on_grpc_receive_trailing_metadata
    proxy_on_grpc_close proxy_on_foreign_function proxy_on_queue_ready proxy_on_new_connection
    proxy_on_downstream_data proxy_on_upstream_data proxy_on_downstream_connection_close
    proxy_on_upstream_connection_close "
dropped="${dropped//$'\n'/ }"

args=()
kept=()
out=""
while [[ $# -gt 0 ]]; do
    case "$1" in
        --export)
            [[ $# -ge 2 ]] || die "--export without a name"
            if [[ "$dropped" != *" $2 "* ]]; then
                args+=(--export "$2")
                kept+=("$2")
            fi
            shift 2
            ;;
        --export=*)
            if [[ "$dropped" != *" ${1#--export=} "* ]]; then
                args+=("$1")
                kept+=("${1#--export=}")
            fi
            shift
            ;;
        -o)
            [[ $# -ge 2 ]] || die "-o without a path"
            out="$2"
            args+=(-o "$2")
            shift 2
            ;;
        # build-filter.sh's digest of this script, there only to make cargo link again when it changes.
        --filter-linker=*) shift ;;
        @*) die "arguments in a response file ($1) are not supported" ;;
        *) args+=("$1"); shift ;;
    esac
done
[[ -n "$out" ]] || die "no -o in the linker's arguments"

"$lld" "${args[@]}"

# The features Rust's wasm32-wasip1 target enables; binaryen must accept (and may keep using) exactly these.
features=(--enable-bulk-memory --enable-sign-ext --enable-mutable-globals --enable-nontrapping-float-to-int
    --enable-multivalue --enable-reference-types)
optimized="$out.opt"
trap 'rm -f "$optimized"' EXIT
wasm-opt -Os --merge-similar-functions --always-inline-max-function-size 5 "${features[@]}" "$out" -o "$optimized" || die "wasm-opt failed on $out"

# The module exports what was kept, and `memory`, which wasm-ld exports on its own.
exports_of() { wasm-dis "$1" | sed -n 's/^ (export "\([^"]*\)".*/\1/p' | sort; }
expected="$(printf '%s\n' memory "${kept[@]}" | sort -u)"
[[ "$(exports_of "$optimized")" == "$expected" ]] \
    || die "the module's exports differ from the ones kept: $(echo $expected)"

mv -f "$optimized" "$out"
