# Sourced by scripts/validate-manifests.sh and scripts/validate-envoy.sh: installs the pinned validation tools
# under build/ when they are missing or their pins changed, and does nothing otherwise.
#
#   deploy_venv       -> prints the venv path (build/deploy-venv) with requirements.txt installed
#   istio_schemas     -> prints the directory (build/k8s-validate-node) with package-lock.json installed
#   promtool_bin      -> prints the path of promtool (build/tools/promtool, from Debian's prometheus package)
#
# Progress goes to stderr; failures name the file that could not be installed.

_tools_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
_repo_root="$(cd "$_tools_dir/../.." && pwd)"

_stamp_of() { cat "$@" | sha256sum | cut -d' ' -f1; }

deploy_venv() {
    local venv="$_repo_root/build/deploy-venv"
    local requirements="$_tools_dir/requirements.txt"
    local want
    want="$(_stamp_of "$requirements")"
    if [[ -x "$venv/bin/python" && -f "$venv/.stamp" && "$(cat "$venv/.stamp")" == "$want" ]]; then
        echo "$venv"
        return 0
    fi
    echo "installing validators from k8s/validate/requirements.txt into $venv" >&2
    local python="${PYTHON:-python3}"
    if [[ ! -x "$venv/bin/python" ]]; then
        "$python" -m venv "$venv" >&2 || { echo "cannot create a venv with $python (is python3-venv installed?)" >&2; return 1; }
    fi
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$requirements" >&2 \
        || { echo "pip could not install k8s/validate/requirements.txt" >&2; return 1; }
    echo "$want" > "$venv/.stamp"
    echo "$venv"
}

istio_schemas() {
    local dir="$_repo_root/build/k8s-validate-node"
    local want
    want="$(_stamp_of "$_tools_dir/package.json" "$_tools_dir/package-lock.json")"
    command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1 \
        || { echo "node and npm are required to validate Istio resources (Node.js 20 or newer)" >&2; return 1; }
    local major
    major="$(node -p 'process.versions.node.split(".")[0]')"
    [[ "$major" -ge 20 ]] || { echo "Node.js $major is too old to validate Istio resources: 20 or newer is required" >&2; return 1; }
    if [[ -f "$dir/.stamp" && "$(cat "$dir/.stamp")" == "$want" && -d "$dir/node_modules/@kubernetes-models/istio" ]]; then
        echo "$dir"
        return 0
    fi
    echo "installing the Istio CRD schemas from k8s/validate/package-lock.json into $dir" >&2
    mkdir -p "$dir"
    cp "$_tools_dir/package.json" "$_tools_dir/package-lock.json" "$dir/"
    (cd "$dir" && npm ci --no-audit --no-fund --loglevel=error >&2) \
        || { echo "npm could not install k8s/validate/package-lock.json" >&2; return 1; }
    echo "$want" > "$dir/.stamp"
    echo "$dir"
}

# promtool from Debian's prometheus package, unpacked under build/tools (the package itself is not installed:
# its maintainer scripts would set up a server). Prints the binary's path.
promtool_bin() {
    local dir="$_repo_root/build/tools"
    local bin="$dir/promtool"
    if [[ -x "$bin" ]]; then
        echo "$bin"
        return 0
    fi
    command -v apt-get >/dev/null 2>&1 || { echo "promtool is needed and apt-get is not available to fetch it" >&2; return 1; }
    echo "fetching promtool (Debian package prometheus) into $dir" >&2
    local tmp
    tmp="$(mktemp -d)"
    chmod 755 "$tmp"
    if ! (cd "$tmp" && apt-get download -q prometheus >&2 2>/dev/null); then
        apt-get update -q >&2 || { rm -rf "$tmp"; echo "apt-get update failed; cannot fetch promtool" >&2; return 1; }
        (cd "$tmp" && apt-get download -q prometheus >&2) || { rm -rf "$tmp"; echo "apt-get download prometheus failed" >&2; return 1; }
    fi
    mkdir -p "$dir"
    dpkg-deb -x "$tmp"/prometheus_*.deb "$tmp/root" && cp "$tmp/root/usr/bin/promtool" "$bin"
    rm -rf "$tmp"
    [[ -x "$bin" ]] || { echo "the prometheus package did not contain usr/bin/promtool" >&2; return 1; }
    echo "$bin"
}

# The registry server from Debian's docker-registry package, unpacked under build/tools (not installed: its
# maintainer scripts would start a system service). Prints the binary's path.
registry_bin() {
    local dir="$_repo_root/build/tools"
    local bin="$dir/docker-registry"
    if [[ -x "$bin" ]]; then
        echo "$bin"
        return 0
    fi
    command -v apt-get >/dev/null 2>&1 || { echo "docker-registry is needed and apt-get is not available to fetch it" >&2; return 1; }
    echo "fetching the registry server (Debian package docker-registry) into $dir" >&2
    local tmp
    tmp="$(mktemp -d)"
    chmod 755 "$tmp"
    if ! (cd "$tmp" && apt-get download -q docker-registry >&2 2>/dev/null); then
        apt-get update -q >&2 || { rm -rf "$tmp"; echo "apt-get update failed; cannot fetch docker-registry" >&2; return 1; }
        (cd "$tmp" && apt-get download -q docker-registry >&2) || { rm -rf "$tmp"; echo "apt-get download docker-registry failed" >&2; return 1; }
    fi
    mkdir -p "$dir"
    dpkg-deb -x "$tmp"/docker-registry_*.deb "$tmp/root" && cp "$tmp/root/usr/bin/docker-registry" "$bin"
    rm -rf "$tmp"
    [[ -x "$bin" ]] || { echo "the docker-registry package did not contain usr/bin/docker-registry" >&2; return 1; }
    echo "$bin"
}
