#!/usr/bin/env bash
# `make bench`: host-harness serve against the upstream direct, nginx and Envoy, interleaved, on 127.0.0.1;
# then event streams through serve with usage accounting on and off. First, the usage parser's native cost
# (bench/usage-parse, its own small workspace).
# Needs the release harness and the filter (`make build`); installs wrk and nginx with apt-get when missing.
set -euo pipefail
cd "$(dirname "$0")/.."
"${CARGO:-cargo}" run --quiet --release --locked --manifest-path bench/usage-parse/Cargo.toml --target-dir target/usage-parse-bench
exec python3 bench/bench.py "$@"
