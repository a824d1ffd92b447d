#!/usr/bin/env bash
# Builds the filter module as it ships: target/wasm/filter.wasm.
#
#   scripts/build-filter.sh [--target-dir DIR] [--quiet] [--locked]
#
# cargo's `wasm-release` build, with two settings made here, whatever RUSTFLAGS the caller has, so the module
# is the same for every consumer (Makefile, tests, scripts, images), which all build it through this script:
#   - LLVM's inliner held to a threshold of 200 (opt-level 3's is 250): 5 KB smaller for about 1.5% more
#     instructions per request;
#   - scripts/link-filter.sh as the linker: it links with rust-lld without the SDK's callbacks for
#     features the filter never uses, then optimises the module for size with binaryen's wasm-opt, so
#     cargo's link output (DIR/wasm32-wasip1/wasm-release/filter.wasm) is the module that ships.
# The link output is copied to DIR/filter.wasm (default target/wasm), the path every consumer loads.
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

# shellcheck source=scripts/require-tools.sh
source "$repo_root/scripts/require-tools.sh"
require_tools build-filter.sh wasm-opt=binaryen wasm-dis=binaryen

rustc="${RUSTC:-rustc}"
cd "$repo_root"
host="$("$rustc" -vV | sed -n 's/^host: //p')"
rust_lld="$("$rustc" --print sysroot)/lib/rustlib/$host/bin/rust-lld"
[[ -x "$rust_lld" ]] || die "the toolchain has no rust-lld at $rust_lld"
linker="$repo_root/scripts/link-filter.sh"

cargo_args=(build -p filter --target wasm32-wasip1 --profile wasm-release --target-dir "$target_dir")
$quiet && cargo_args+=(--quiet)
$locked && cargo_args+=(--locked)
# The linker script's digest rides along as a flag it drops, so cargo links again when the script changes.
digest="$(sha256sum "$linker" | cut -c1-16)"
rustflags=(-C llvm-args=-inline-threshold=200 -C "linker=$linker" -C "link-arg=--filter-linker=$digest")
FILTER_RUST_LLD="$rust_lld" CARGO_ENCODED_RUSTFLAGS="$(IFS=$'\x1f'; echo "${rustflags[*]}")" \
    "${CARGO:-cargo}" "${cargo_args[@]}" >&2
linked="$target_dir/wasm32-wasip1/wasm-release/filter.wasm"
[[ -f "$linked" ]] || die "cargo produced no $linked"

# Replace the shipped module in one step: a reader never sees half a file.
copy="$(mktemp "$target_dir/.filter.XXXXXX")"
trap 'rm -f "$copy"' EXIT
cp "$linked" "$copy"
chmod 0644 "$copy"
mv -f "$copy" "$target_dir/filter.wasm"
$quiet || echo "filter: $target_dir/filter.wasm ($(stat -c %s "$target_dir/filter.wasm") bytes)" >&2
