#!/usr/bin/env bash
# `make bench`: host-harness serve against the upstream direct, nginx and Envoy, interleaved, on 127.0.0.1;
# then event streams through serve with usage accounting on and off.
# Needs the release harness and the filter (`make build`); installs wrk and nginx with apt-get when missing.
set -euo pipefail
cd "$(dirname "$0")/.."
exec python3 bench/bench.py "$@"
