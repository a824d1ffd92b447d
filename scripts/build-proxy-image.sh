#!/usr/bin/env bash
# Builds the standalone proxy's OCI image (`host-harness serve` with the credential filter) without a
# container engine or a base image from a registry, and prints the hex digest of its image manifest.
#
# Usage: scripts/build-proxy-image.sh [--binary FILE] [--wasm FILE] [--out DIR] [--ref REGISTRY/REPOSITORY:TAG]
#        scripts/build-proxy-image.sh --rootfs DIR [--binary FILE] [--wasm FILE]
#   --rootfs  only lay out the image's file system in DIR (as root: the Dockerfile's build stage does this, so
#             both images hold the same files), no OCI layout
#   --binary  the proxy (default: target/release/host-harness; `make build` builds it)
#   --wasm    the filter (default: target/wasm/filter.wasm)
#   --out     output directory (default: build/proxy-image)
#   --ref     the name the manifests use (default: registry.example.com/ai-proxy:VERSION, VERSION being the
#             workspace version in Cargo.toml; k8s/standalone/kustomization.yaml names the same image)
#
# Writes DIR/ai-proxy, an OCI image layout holding one image tagged with the TAG of --ref, and DIR/digest.
#
# Contents (one layer, the same files the Dockerfile's runtime stage holds, minus Debian's userland):
#   /usr/local/bin/host-harness        the proxy, mode 0755
#   /usr/lib/ai-proxy/filter.wasm      the filter, mode 0644
#   the shared libraries the proxy links (glibc's loader, libc, libm, libgcc_s: whatever `ldd` lists),
#   copied from the build machine, so the image runs the binary exactly as it was tested
#   /etc/passwd, /etc/group            the numeric non-root user 65532 (`nonroot`)
#   /tmp (1777), /var/lib/ai-proxy (65532), /etc/ai-proxy (the manifests mount the configuration here)
# No CA bundle: the proxy's TLS roots are compiled in (webpki-roots).
# Config: user 65532:65532, entrypoint /usr/local/bin/host-harness, cmd `serve --config
# /etc/ai-proxy/proxy.toml`, ports 8080 and 9901. The build is deterministic for the same inputs: fixed tar
# metadata, gzip without name or time, JSON written byte for byte, no creation time.
#
# Push: skopeo copy oci:DIR/ai-proxy:TAG docker://REGISTRY/REPOSITORY:TAG
set -euo pipefail

repo_root="$(cd "$(dirname "$0")/.." && pwd)"
binary="$repo_root/target/release/host-harness"
wasm="$repo_root/target/wasm/filter.wasm"
out="$repo_root/build/proxy-image"
ref=""
rootfs_only=""

die() { echo "build-proxy-image.sh: $*" >&2; exit 1; }

while [[ $# -gt 0 ]]; do
    case "$1" in
        --binary) [[ $# -ge 2 ]] || die "--binary needs a file"; binary="$2"; shift 2 ;;
        --wasm) [[ $# -ge 2 ]] || die "--wasm needs a file"; wasm="$2"; shift 2 ;;
        --out) [[ $# -ge 2 ]] || die "--out needs a directory"; out="$2"; shift 2 ;;
        --ref) [[ $# -ge 2 ]] || die "--ref needs REGISTRY/REPOSITORY:TAG"; ref="$2"; shift 2 ;;
        --rootfs) [[ $# -ge 2 ]] || die "--rootfs needs a directory"; rootfs_only="$2"; shift 2 ;;
        -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) die "unknown argument '$1' (see --help)" ;;
    esac
done

if [[ -z "$ref" ]]; then
    version="$(sed -n '/^\[workspace.package\]/,/^\[/{s/^version *= *"\([^"]*\)".*/\1/p}' "$repo_root/Cargo.toml")"
    [[ -n "$version" ]] || die "Cargo.toml: no version in [workspace.package]"
    ref="registry.example.com/ai-proxy:$version"
fi
tag="${ref##*:}"
[[ "$ref" == *:* && "$tag" != */* && -n "$tag" ]] || die "--ref '$ref': expected REGISTRY/REPOSITORY:TAG"
[[ "$tag" =~ ^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$ ]] || die "--ref '$ref': '$tag' is not a valid tag"

[[ -x "$binary" ]] || die "--binary: $binary does not exist or is not executable (build it with \`make build\`)"
[[ -f "$wasm" ]] || die "--wasm: $wasm does not exist (build it with \`make filter\`)"
[[ "$(head -c 4 "$wasm" | od -An -tx1 | tr -d ' \n')" == "0061736d" ]] || die "--wasm: $wasm is not a WebAssembly module"
[[ "$(head -c 4 "$binary" | od -An -tx1 | tr -d ' \n')" == "7f454c46" ]] || die "--binary: $binary is not an ELF executable"

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
root="${rootfs_only:-$work/rootfs}"

# --- the file system ------------------------------------------------------------------------------------
install -D -m 0755 "$binary" "$root/usr/local/bin/host-harness"
install -D -m 0644 "$wasm" "$root/usr/lib/ai-proxy/filter.wasm"
# Every library the dynamic loader resolves for the binary, at the path it resolved, plus the loader
# itself at the path the ELF header names.
libraries=()
while read -r line; do
    case "$line" in
        *"=> not found"*) die "ldd: $binary needs a library this machine does not have: $line" ;;
        *"=> /"*) path="${line#*=> }"; libraries+=("${path%% (*}") ;;
        /*) libraries+=("${line%% (*}") ;;
    esac
done < <(ldd "$binary")
[[ ${#libraries[@]} -gt 0 ]] || die "ldd lists no library for $binary (a static binary needs no copy step; adapt the script)"
for library in "${libraries[@]}"; do
    install -D -m 0755 "$(readlink -f "$library")" "$root$library"
done
mkdir -p "$root/etc" "$root/etc/ai-proxy" "$root/tmp" "$root/var/lib/ai-proxy"
printf 'root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n' > "$root/etc/passwd"
printf 'root:x:0:\nnonroot:x:65532:\n' > "$root/etc/group"
chmod 0644 "$root/etc/passwd" "$root/etc/group"
chmod 1777 "$root/tmp"
if [[ -n "$rootfs_only" ]]; then
    chown 65532:65532 "$root/var/lib/ai-proxy" || die "--rootfs: cannot give /var/lib/ai-proxy to 65532 (run as root)"
    echo "laid out the image's file system in $root (${#libraries[@]} libraries)" >&2
    exit 0
fi
mkdir -p "$out"
out="$(cd "$out" && pwd)"
layout="$out/ai-proxy"

# --- layer: a deterministic tar.gz; /var/lib/ai-proxy belongs to the runtime user ----------------------
(cd "$root" && find . -mindepth 1 ! -path ./var/lib/ai-proxy | LC_ALL=C sort) > "$work/files"
tar --create --file "$work/layer.tar" --directory "$root" --no-recursion --files-from "$work/files" \
    --format=posix --pax-option=exthdr.name=%d/PaxHeaders/%f,delete=atime,delete=ctime \
    --owner=0 --group=0 --numeric-owner --mtime=@0
# The state directory belongs to the runtime user: tar sets one owner per run, so it is appended on its own.
tar --append --file "$work/layer.tar" --directory "$root" --no-recursion \
    --format=posix --pax-option=exthdr.name=%d/PaxHeaders/%f,delete=atime,delete=ctime \
    --owner=65532 --group=65532 --numeric-owner --mtime=@0 ./var/lib/ai-proxy
gzip -9 -n -c "$work/layer.tar" > "$work/layer.tar.gz"

sha() { sha256sum "$1" | cut -d' ' -f1; }
size() { stat -c %s "$1"; }
diff_id="$(sha "$work/layer.tar")"
layer_digest="$(sha "$work/layer.tar.gz")"
layer_size="$(size "$work/layer.tar.gz")"

printf '{"architecture":"amd64","os":"linux","config":{"User":"65532:65532","ExposedPorts":{"8080/tcp":{},"9901/tcp":{}},"Env":["PATH=/usr/local/bin:/usr/bin:/bin"],"Entrypoint":["/usr/local/bin/host-harness"],"Cmd":["serve","--config","/etc/ai-proxy/proxy.toml"],"WorkingDir":"/"},"rootfs":{"type":"layers","diff_ids":["sha256:%s"]}}' \
    "$diff_id" > "$work/config.json"
config_digest="$(sha "$work/config.json")"
config_size="$(size "$work/config.json")"
printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:%s","size":%s},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"sha256:%s","size":%s}]}' \
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
echo "wrote $layout (tag $tag, $(du -sh "$layout" | cut -f1), layer $layer_size bytes, ${#libraries[@]} libraries)" >&2
echo "$manifest_digest"
