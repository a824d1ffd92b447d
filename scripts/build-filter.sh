#!/usr/bin/env bash
# Builds the filter module as it ships: target/wasm/filter.wasm.
#
#   scripts/build-filter.sh [--target-dir DIR] [--quiet] [--locked]
#
# Two steps, both needed for every consumer (Makefile, tests, scripts, images), so they live here only:
#   1. cargo's `wasm-release` build (target/wasm/wasm32-wasip1/wasm-release/filter.wasm, the link output),
#      with LLVM's inliner held to a threshold of 200 (opt-level 3's is 250): 5 KB smaller for about 1.5%
#      more instructions per request. The flag is set here, whatever RUSTFLAGS the caller has, so the
#      module is the same for every consumer;
#   2. the post-link step with binaryen: `wasm-metadce` drops the SDK's callbacks for features the filter
#      never uses (gRPC, foreign functions, shared queues, TCP streams) and everything only they reach; hosts
#      treat every `proxy_on_*` callback as optional and never call these for an HTTP filter that makes no
#      gRPC call, calls no foreign function and registers no queue. Then `wasm-opt -Os` (not `-Oz`: that is
#      2% smaller but costs 3% more instructions per request, where `-Os` costs none) with
#      `--merge-similar-functions`, which folds functions that differ only in constants or callees (the
#      copies of one generic for different types, mostly) into one: 1.5% smaller for 0.7% more
#      instructions per request.
# The result is written next to the target dir's platform folder, as DIR/filter.wasm (default target/wasm).
# binaryen is installed with apt-get when missing and this runs as root; otherwise the error says what to do.
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
target_dir="$repo_root/target/wasm"
quiet=false
locked=false
while [[ $# -gt 0 ]]; do
    case "$1" in
        --target-dir) target_dir="$(realpath -m "${2:?--target-dir needs a directory}")"; shift 2 ;;
        --quiet) quiet=true; shift ;;
        --locked) locked=true; shift ;;
        *) echo "build-filter.sh: unknown argument $1 (expected --target-dir DIR, --quiet or --locked)" >&2; exit 2 ;;
    esac
done

die() { echo "build-filter.sh: $*" >&2; exit 1; }

if ! command -v wasm-opt >/dev/null 2>&1 || ! command -v wasm-metadce >/dev/null 2>&1; then
    if [[ "$(id -u)" == 0 ]] && command -v apt-get >/dev/null 2>&1; then
        echo "build-filter.sh: installing binaryen (wasm-opt, wasm-metadce)" >&2
        { apt-get update -q && apt-get install -y -q --no-install-recommends binaryen; } >&2 \
            || die "apt-get install binaryen failed"
    else
        die "wasm-opt and wasm-metadce are missing: install binaryen (Debian/Ubuntu: apt-get install binaryen)"
    fi
fi

cargo_args=(build -p filter --target wasm32-wasip1 --profile wasm-release --target-dir "$target_dir")
$quiet && cargo_args+=(--quiet)
$locked && cargo_args+=(--locked)
(cd "$repo_root" && CARGO_ENCODED_RUSTFLAGS=$'-C\x1fllvm-args=-inline-threshold=200' \
    "${CARGO:-cargo}" "${cargo_args[@]}" >&2)
linked="$target_dir/wasm32-wasip1/wasm-release/filter.wasm"
[[ -f "$linked" ]] || die "cargo produced no $linked"

work="$(mktemp -d "$target_dir/.post-link.XXXXXX")"
trap 'rm -rf "$work"' EXIT

# The SDK's callbacks for what the filter never uses. Everything else the link output exports stays, so a
# callback a later SDK adds is kept until someone decides otherwise; tests/integration/filter.rs pins the set.
drop=(proxy_on_grpc_receive proxy_on_grpc_receive_initial_metadata proxy_on_grpc_receive_trailing_metadata
    proxy_on_grpc_close proxy_on_foreign_function proxy_on_queue_ready proxy_on_new_connection
    proxy_on_downstream_data proxy_on_upstream_data proxy_on_downstream_connection_close
    proxy_on_upstream_connection_close)
exports_of() { wasm-dis "$1" | sed -n 's/^ (export "\([^"]*\)".*/\1/p' | sort; }
keep=()
while read -r name; do
    [[ " ${drop[*]} " == *" $name "* ]] || keep+=("$name")
done < <(exports_of "$linked")
{
    echo "["
    sep=""
    for name in "${keep[@]}"; do
        printf '%s{"name": "keep-%s", "root": true, "export": "%s"}\n' "$sep" "$name" "$name"
        sep=","
    done
    echo "]"
} >"$work/graph.json"

# The features Rust's wasm32-wasip1 target enables; binaryen must accept (and may keep using) exactly these.
features=(--enable-bulk-memory --enable-sign-ext --enable-mutable-globals --enable-nontrapping-float-to-int
    --enable-multivalue --enable-reference-types)
wasm-metadce "${features[@]}" --graph-file "$work/graph.json" "$linked" -o "$work/dce.wasm" >/dev/null \
    || die "wasm-metadce failed on $linked"
wasm-opt -Os --merge-similar-functions "${features[@]}" "$work/dce.wasm" -o "$work/filter.wasm" \
    || die "wasm-opt failed on $linked"

# The post-link module exports exactly what was kept.
[[ "$(exports_of "$work/filter.wasm")" == "$(printf '%s\n' "${keep[@]}")" ]] \
    || die "the post-link module's exports differ from the ones kept: ${keep[*]}"

# Replace the shipped module in one step: a reader never sees half a file.
mv -f "$work/filter.wasm" "$target_dir/filter.wasm"
$quiet || echo "filter: $target_dir/filter.wasm ($(stat -c %s "$target_dir/filter.wasm") bytes)" >&2
