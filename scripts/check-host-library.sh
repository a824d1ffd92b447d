#!/usr/bin/env bash
# The host-harness library is what filter authors add as a dev-dependency, so it must stay small and
# publishable:
#   - its normal dependency tree has at most 120 crates (wasmtime alone is about 85);
#   - none of the CLI's crates reach it (the proxy's HTTP/TLS stack, its runtime, argument parsing, metrics
#     exposition, configuration parsing, allocator), nor wasmtime-wasi, which brings tokio;
#   - `cargo package -p host-harness` succeeds, verify build included: the packaged crate builds on its
#     own, with no path dependency and nothing from the workspace it does not ship.
# The verify build compiles wasmtime once more with the packaged crate's own profile: about 4.5 CPU-minutes
# from a clean target/, then reused from target/package.
#
# Usage: scripts/check-host-library.sh        (make lint runs it)
set -euo pipefail

repo_root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$repo_root"

max_crates=120
forbidden=(hyper tokio rustls clap prometheus-client toml mimalloc wasmtime-wasi)

crates="$(cargo tree -p host-harness -e normal --prefix none | sed 's/ (\*)//' | sort -u)"
count="$(wc -l <<<"$crates")"
failed=0
if (( count > max_crates )); then
    echo "FAIL host-harness: $count crates in its normal dependency tree, more than $max_crates" >&2
    failed=1
else
    echo "ok   host-harness: $count crates in its normal dependency tree (at most $max_crates)"
fi
for name in "${forbidden[@]}"; do
    if grep -q "^$name v" <<<"$crates"; then
        echo "FAIL host-harness depends on $name (see: cargo tree -p host-harness -e normal -i $name)" >&2
        failed=1
    fi
done
(( failed == 0 )) && echo "ok   host-harness: none of ${forbidden[*]}"

# --allow-dirty: the check is whether the crate packages and builds, not whether the work tree is committed.
if cargo package -p host-harness --allow-dirty --quiet; then
    echo "ok   host-harness: cargo package (verified: the packaged crate builds)"
else
    echo "FAIL host-harness: cargo package" >&2
    failed=1
fi
exit "$failed"
