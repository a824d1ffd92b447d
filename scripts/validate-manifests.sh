#!/usr/bin/env bash
# Validates the deployment artifacts without a cluster, a container engine or any network beyond the package
# registries:
#   - renders the kustomizations (k8s/standalone, k8s/standalone-oauth2, k8s/istio/base, k8s/istio/example)
#     with kubectl's kustomize;
#   - validates every object against the Kubernetes OpenAPI schemas (strict) and the Istio CRD schemas;
#   - checks the restricted Pod Security Standard, labels and selectors, and the wiring between the manifests,
#     proxy.toml, plugin.json, envoy/envoy.yaml and the Dockerfile (k8s/validate/check.py lists every check);
#   - lints the Dockerfile with hadolint; checks the alert rules (promtool check/test rules) and the PromQL
#     in RUNBOOK.md, and that every metric name used exists in specs/filter.md;
#   - builds the filter's OCI image twice (scripts/build-oci.sh), requires the same digest both times, pushes
#     it to a registry on 127.0.0.1 (Debian's docker-registry) and pulls it back with skopeo, and
#     checks that the WasmPlugin overlay it writes carries exactly that digest;
#   - runs both plugin.json files (the first is also the WasmPlugin's pluginConfig and Envoy's configuration)
#     through the real filter with `host-harness validate`, and a broken copy must be rejected;
#   - runs the real `host-harness serve` with both variants' proxy.toml and plugin.json on 127.0.0.1
#     (k8s/validate/standalone-smoke.sh): readiness, injection, metrics names, clean SIGTERM within the
#     grace period, the oauth2 variant's token refresh and state file;
#   - proves the checks bite: a few broken copies of the manifests must each be rejected.
#
# Tools (pinned in k8s/validate/requirements.txt and package-lock.json) are installed under build/ on first
# use. Usage: scripts/validate-manifests.sh [--no-self-test]
set -euo pipefail

repo_root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$repo_root"
self_test=1
for arg in "$@"; do
    case "$arg" in
        --no-self-test) self_test=0 ;;
        *) echo "validate-manifests.sh: unknown argument '$arg'" >&2; exit 2 ;;
    esac
done

# shellcheck source=../k8s/validate/tools.sh
source k8s/validate/tools.sh
venv="$(deploy_venv)"
node_dir="$(istio_schemas)"
promtool="$(promtool_bin)"
kubectl="$venv/bin/kubectl"
failed=0

echo "== hadolint Dockerfile"
if "$venv/bin/hadolint" --failure-threshold warning Dockerfile; then
    echo "ok   Dockerfile: hadolint"
else
    echo "FAIL Dockerfile: hadolint reported the problems above"
    failed=1
fi

echo "== OCI image for the WasmPlugin (deterministic build)"
oci_a="build/validate/oci-a"
oci_b="build/validate/oci-b"
digest_a="$(scripts/build-oci.sh --out "$oci_a" 2>build/validate-oci.log)" \
    || { cat build/validate-oci.log >&2; echo "FAIL scripts/build-oci.sh: the image could not be built"; exit 1; }
digest_b="$(scripts/build-oci.sh --out "$oci_b" 2>>build/validate-oci.log)" \
    || { cat build/validate-oci.log >&2; echo "FAIL scripts/build-oci.sh: the second build failed"; exit 1; }
if [[ "$digest_a" == "$digest_b" ]]; then
    echo "ok   scripts/build-oci.sh: two builds give the same digest $digest_a"
else
    echo "FAIL scripts/build-oci.sh: two builds of the same filter.wasm gave $digest_a and $digest_b"
    failed=1
fi

echo "== push to a registry on 127.0.0.1 and pull back, as Istio's agent would"
registry="$(registry_bin)"
reg_dir="build/validate/registry"
rm -rf "$reg_dir"
mkdir -p "$reg_dir"
reg_port="$("$venv/bin/python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
printf 'version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: %s\nhttp:\n  addr: 127.0.0.1:%s\n' \
    "$repo_root/$reg_dir/data" "$reg_port" > "$reg_dir/config.yml"
"$registry" serve "$reg_dir/config.yml" >"$reg_dir/registry.log" 2>&1 &
reg_pid=$!
stop_registry() { kill "$reg_pid" 2>/dev/null || true; wait "$reg_pid" 2>/dev/null || true; }
trap stop_registry EXIT
for _ in $(seq 100); do
    curl -sf --max-time 1 "http://127.0.0.1:$reg_port/v2/" >/dev/null 2>&1 && break
    sleep 0.1
done
tag="$(sed -n 's/.*"org.opencontainers.image.ref.name":"\([^"]*\)".*/\1/p' "$oci_a/credential-filter/index.json")"
remote="docker://127.0.0.1:$reg_port/ai-proxy/credential-filter:$tag"
pushed=""
if skopeo copy -q --preserve-digests --dest-tls-verify=false "oci:$oci_a/credential-filter:$tag" "$remote" >"$reg_dir/push.log" 2>&1 \
    && pushed="$(skopeo inspect --tls-verify=false --format '{{.Digest}}' "$remote" 2>>"$reg_dir/push.log")" \
    && [[ "$pushed" == "sha256:$digest_a" ]]; then
    echo "ok   pushed with skopeo --preserve-digests: the registry serves sha256:$digest_a, the WasmPlugin's sha256"
else
    echo "FAIL registry push: the registry serves '${pushed:-nothing}', expected sha256:$digest_a (logs: $reg_dir/)"
    failed=1
fi
# Istio's compat reader: the manifest's last layer, tar+gzip, holding plugin.wasm.
layer=""
if skopeo copy -q --src-tls-verify=false "$remote" "oci:$reg_dir/pulled:$tag" >>"$reg_dir/push.log" 2>&1 \
    && layer="$("$venv/bin/python" -c 'import json, sys; m = json.load(open(sys.argv[1])); l = m["layers"][-1]; print(l["digest"].split(":")[1], l["mediaType"])' \
        "$reg_dir/pulled/blobs/sha256/$digest_a")" \
    && [[ "${layer#* }" == "application/vnd.oci.image.layer.v1.tar+gzip" ]] \
    && tar -xzOf "$reg_dir/pulled/blobs/sha256/${layer%% *}" plugin.wasm | cmp -s - target/wasm/filter.wasm; then
    echo "ok   pulled back: the last layer is tar+gzip and its plugin.wasm is byte for byte filter.wasm"
else
    echo "FAIL registry pull: the pulled image (${layer:-no layer}) does not unpack to filter.wasm (logs: $reg_dir/)"
    failed=1
fi
stop_registry
trap - EXIT

echo "== manifests"
"$venv/bin/python" k8s/validate/check.py --repo . --kubectl "$kubectl" --node-dir "$node_dir" \
    --stamped "$oci_a/istio" --oci-layout "$oci_a/credential-filter" --promtool "$promtool" || failed=1

echo "== the plugin configuration through the real filter (host-harness validate)"
harness="${HOST_HARNESS:-target/debug/host-harness}"
if [[ ! -x "$harness" ]]; then
    echo "building host-harness ($harness is missing)" >&2
    cargo build -p host-harness-cli >&2
fi
wasm="target/wasm/filter.wasm"
# k8s/standalone/plugin.json is also the WasmPlugin's pluginConfig and Envoy's StringValue (check.py requires
# them equal).
for plugin_json in k8s/standalone/plugin.json k8s/standalone-oauth2/plugin.json; do
    if verdict="$("$harness" validate --filter "$wasm" --config "$plugin_json" 2>&1)"; then
        echo "ok   $verdict"
    else
        echo "FAIL $plugin_json: $verdict"
        failed=1
    fi
done
sed 's/"on_missing_credential": "deny"/"on_missing_credential": "refuse"/' k8s/standalone/plugin.json > build/validate/plugin.broken.json
if "$harness" validate --filter "$wasm" --config build/validate/plugin.broken.json >/dev/null 2>&1; then
    echo "FAIL host-harness validate accepted a configuration the filter must reject (build/validate/plugin.broken.json)"
    failed=1
else
    echo "ok   host-harness validate rejects a broken copy of plugin.json"
fi
if "$harness" serve --help >/dev/null 2>&1; then
    echo "== the standalone proxy with the ConfigMaps' files, both variants (127.0.0.1 only)"
    HOST_HARNESS="$harness" k8s/validate/standalone-smoke.sh "$venv/bin/python" || failed=1
else
    echo "FAIL $harness has no \`serve\` subcommand: the Deployment's command cannot run"
    failed=1
fi

if [[ "$self_test" == 1 ]]; then
    echo "== self-test: broken manifests must be rejected"
    # The self-test depends only on these inputs; a passing run is not repeated while they are unchanged
    # (a fresh clone, as in CI, always runs it).
    selftest_stamp="$(find k8s envoy specs Dockerfile .dockerignore RUNBOOK.md Cargo.toml "$oci_a/credential-filter/index.json" \
        -type f -not -path '*/node_modules/*' -print0 | sort -z | xargs -0 sha256sum | sha256sum | cut -d' ' -f1)"
    if [[ -f build/validate/selftest.stamp && "$(cat build/validate/selftest.stamp)" == "$selftest_stamp" ]]; then
        echo "ok   self-test: passed before on exactly these inputs (build/validate/selftest.stamp)"
    elif "$venv/bin/python" k8s/validate/selftest.py --repo . --kubectl "$kubectl" --node-dir "$node_dir" \
        --stamped "$oci_a/istio" --oci-layout "$oci_a/credential-filter" --promtool "$promtool"; then
        echo "$selftest_stamp" > build/validate/selftest.stamp
    else
        rm -f build/validate/selftest.stamp
        failed=1
    fi
fi

if [[ "$failed" != 0 ]]; then
    echo "validate-manifests: FAILED (see the FAIL lines above)"
    exit 1
fi
echo "validate-manifests: all checks passed"
