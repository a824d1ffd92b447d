#!/usr/bin/env bash
# Packages the filter as an OCI image for Istio's WasmPlugin, without a container engine, and prints the hex
# digest of the image manifest: the value of the WasmPlugin's `sha256` field.
#
# Usage: scripts/build-oci.sh [--wasm FILE] [--out DIR] [--ref REGISTRY/REPOSITORY:TAG]
#   --wasm  the filter module (default: target/wasm/filter.wasm, built if missing)
#   --out   output directory (default: build/oci)
#   --ref   where the image will be pushed (default: registry.example.com/ai-proxy/credential-filter:VERSION,
#           VERSION being the workspace version in Cargo.toml)
#
# Writes, under DIR:
#   credential-filter/    an OCI image layout holding one image, tagged with the TAG of --ref
#   istio/                a kustomization overlay of k8s/istio/base whose WasmPlugin has url oci://REF and
#                         sha256 DIGEST: the manifests to apply once the image is pushed
#   digest                the digest, also printed on stdout (progress goes to stderr)
#
# Image format: Istio's "compat" variant. One layer, media type application/vnd.oci.image.layer.v1.tar+gzip,
# holding a single file `plugin.wasm`; an OCI image manifest and config. Istio's agent takes the last layer,
# un-gzips and un-tars it and loads `plugin.wasm`; it checks `sha256` against the manifest digest.
#
# The build is deterministic: fixed tar metadata (owner 0, mode 0644, mtime 0, ustar), gzip without name or
# timestamp, JSON written byte for byte by this script. The same filter.wasm always gives the same digest.
#
# After writing the layout, the script checks it: skopeo (installed from Debian if missing) must read the
# manifest and report the same digest, and the layer must unpack, as Istio unpacks it, to the exact bytes of
# the input module.
#
# Push: skopeo copy --preserve-digests oci:DIR/credential-filter:TAG docker://REGISTRY/REPOSITORY:TAG
set -euo pipefail

repo_root="$(cd "$(dirname "$0")/.." && pwd)"
# shellcheck source=scripts/require-tools.sh
source "$repo_root/scripts/require-tools.sh"
wasm="$repo_root/target/wasm/filter.wasm"
out="$repo_root/build/oci"
ref=""

die() { echo "build-oci.sh: $*" >&2; exit 1; }

while [[ $# -gt 0 ]]; do
    case "$1" in
        --wasm) [[ $# -ge 2 ]] || die "--wasm needs a file"; wasm="$2"; shift 2 ;;
        --out) [[ $# -ge 2 ]] || die "--out needs a directory"; out="$2"; shift 2 ;;
        --ref) [[ $# -ge 2 ]] || die "--ref needs REGISTRY/REPOSITORY:TAG"; ref="$2"; shift 2 ;;
        -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) die "unknown argument '$1' (see --help)" ;;
    esac
done

if [[ -z "$ref" ]]; then
    version="$(sed -n '/^\[workspace.package\]/,/^\[/{s/^version *= *"\([^"]*\)".*/\1/p}' "$repo_root/Cargo.toml")"
    [[ -n "$version" ]] || die "Cargo.toml: no version in [workspace.package]"
    ref="registry.example.com/ai-proxy/credential-filter:$version"
fi
# REGISTRY/REPOSITORY:TAG, where a port in the registry is not a tag.
tag="${ref##*:}"
[[ "$ref" == *:* && "$tag" != */* && -n "$tag" ]] || die "--ref '$ref': expected REGISTRY/REPOSITORY:TAG"
[[ "$tag" =~ ^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$ ]] || die "--ref '$ref': '$tag' is not a valid tag"

if [[ ! -f "$wasm" && "$wasm" == "$repo_root/target/wasm/filter.wasm" ]]; then
    echo "building the filter ($wasm is missing)" >&2
    "$repo_root/scripts/build-filter.sh" >&2
fi
[[ -f "$wasm" ]] || die "--wasm: $wasm does not exist"
[[ "$(head -c 4 "$wasm" | od -An -tx1 | tr -d ' \n')" == "0061736d" ]] || die "--wasm: $wasm is not a WebAssembly module (bad magic number)"

mkdir -p "$out"
out="$(cd "$out" && pwd)"
layout="$out/credential-filter"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

# --- layer: plugin.wasm in a deterministic tar.gz -------------------------------------------------------
mkdir -p "$work/rootfs"
cp "$wasm" "$work/rootfs/plugin.wasm"
tar --create --file "$work/layer.tar" --directory "$work/rootfs" \
    --format=ustar --sort=name --owner=0 --group=0 --numeric-owner --mode=0644 --mtime=@0 \
    plugin.wasm
gzip -9 -n -c "$work/layer.tar" > "$work/layer.tar.gz"

sha() { sha256sum "$1" | cut -d' ' -f1; }
size() { stat -c %s "$1"; }

diff_id="$(sha "$work/layer.tar")"
layer_digest="$(sha "$work/layer.tar.gz")"
layer_size="$(size "$work/layer.tar.gz")"

# --- config, manifest, index: JSON written byte for byte ------------------------------------------------
printf '{"architecture":"wasm","os":"wasip1","config":{},"rootfs":{"type":"layers","diff_ids":["sha256:%s"]}}' \
    "$diff_id" > "$work/config.json"
config_digest="$(sha "$work/config.json")"
config_size="$(size "$work/config.json")"

printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:%s","size":%s},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"sha256:%s","size":%s,"annotations":{"org.opencontainers.image.title":"plugin.wasm"}}]}' \
    "$config_digest" "$config_size" "$layer_digest" "$layer_size" > "$work/manifest.json"
manifest_digest="$(sha "$work/manifest.json")"
manifest_size="$(size "$work/manifest.json")"

rm -rf "$layout"
mkdir -p "$layout/blobs/sha256"
cp "$work/layer.tar.gz" "$layout/blobs/sha256/$layer_digest"
cp "$work/config.json" "$layout/blobs/sha256/$config_digest"
cp "$work/manifest.json" "$layout/blobs/sha256/$manifest_digest"
printf '{"imageLayoutVersion":"1.0.0"}' > "$layout/oci-layout"
printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:%s","size":%s,"annotations":{"org.opencontainers.image.ref.name":"%s"}}]}' \
    "$manifest_digest" "$manifest_size" "$tag" > "$layout/index.json"
echo "$manifest_digest" > "$out/digest"

# --- check the image the way its consumers read it ------------------------------------------------------
require_tools build-oci.sh skopeo
inspected="$(skopeo inspect --format '{{.Digest}}' "oci:$layout:$tag")" \
    || die "$layout: skopeo cannot read the image layout"
[[ "$inspected" == "sha256:$manifest_digest" ]] \
    || die "$layout: skopeo reports digest $inspected, the manifest written is sha256:$manifest_digest"
skopeo inspect --raw "oci:$layout:$tag" | cmp -s - "$layout/blobs/sha256/$manifest_digest" \
    || die "$layout: the manifest skopeo reads differs from the one written"
# Istio's compat reader: the last layer, gzip, tar, the entry named plugin.wasm, a Wasm magic number.
mkdir -p "$work/unpacked"
tar --extract --gzip --file "$layout/blobs/sha256/$layer_digest" --directory "$work/unpacked"
[[ "$(ls -A "$work/unpacked")" == "plugin.wasm" ]] || die "$layout: the layer must hold plugin.wasm and nothing else"
cmp -s "$work/unpacked/plugin.wasm" "$wasm" || die "$layout: plugin.wasm in the layer differs from $wasm"
echo "checked $layout: skopeo reads digest sha256:$manifest_digest; the layer unpacks to $(basename "$wasm") ($(size "$wasm") bytes)" >&2

# --- the overlay that pins the WasmPlugin to this image -------------------------------------------------
mkdir -p "$out/istio"
base_rel="$(realpath --relative-to="$out/istio" "$repo_root/k8s/istio/base")"
cat > "$out/istio/kustomization.yaml" <<EOF
# Written by scripts/build-oci.sh: k8s/istio/base with the WasmPlugin pinned to the image built from
# $(basename "$wasm") (sha256 of plugin.wasm: $(sha "$wasm")).
apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources:
  - $base_rel
patches:
  - target:
      group: extensions.istio.io
      kind: WasmPlugin
      name: credential-filter
    patch: |-
      - op: replace
        path: /spec/url
        value: oci://$ref
      - op: add
        path: /spec/sha256
        value: $manifest_digest
EOF
echo "wrote $layout (tag $tag) and $out/istio (WasmPlugin url oci://$ref, sha256 $manifest_digest)" >&2
echo "$manifest_digest"
