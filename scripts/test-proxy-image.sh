#!/usr/bin/env bash
# Starts the standalone proxy's OCI image (scripts/build-proxy-image.sh) with a real OCI runtime (runc, from
# Debian) and checks it the way the manifests run it: as user 65532 with a read-only root file system and the
# configuration mounted at /etc/ai-proxy (k8s/standalone's proxy.toml and plugin.json, unchanged), in front of
# a loopback upstream. Checks: skopeo and umoci read the image; /healthz answers 200 and /readyz 200; a request
# reaches the upstream with the caller identified through a WhoIs stand-in on the LocalAPI socket path the
# manifests mount, the credential injected and the client's key removed; the process runs as
# 65532:65532; SIGTERM drains and the container exits 0.
#
# Usage: scripts/test-proxy-image.sh [--image DIR]   (default: build the image into build/proxy-image)
# Needs root (runc without user namespaces) and installs runc, umoci and skopeo from Debian when missing.
set -euo pipefail

repo_root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$repo_root"
image_dir=""
while [[ $# -gt 0 ]]; do
    case "$1" in
        --image) [[ $# -ge 2 ]] || { echo "--image needs a directory" >&2; exit 2; }; image_dir="$2"; shift 2 ;;
        *) echo "test-proxy-image.sh: unknown argument '$1'" >&2; exit 2 ;;
    esac
done

fail() { echo "FAIL proxy image: $*" >&2; exit 1; }
[[ "$(id -u)" == 0 ]] || fail "runc needs root here; run as root"

# shellcheck source=scripts/require-tools.sh
source scripts/require-tools.sh
require_tools test-proxy-image.sh runc umoci skopeo curl

if [[ -z "$image_dir" ]]; then
    image_dir="build/proxy-image"
    scripts/build-proxy-image.sh --out "$image_dir" >/dev/null
fi
layout="$image_dir/ai-proxy"
tag="$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["manifests"][0]["annotations"]["org.opencontainers.image.ref.name"])' "$layout/index.json")"
digest="$(cat "$image_dir/digest")"
[[ "$(skopeo inspect --format '{{.Digest}}' "oci:$layout:$tag")" == "sha256:$digest" ]] \
    || fail "skopeo reads another digest than the one written ($digest)"
echo "ok   skopeo reads $layout:$tag, digest sha256:$digest"

work="$(mktemp -d)"
name="ai-proxy-test-$$"
upstream_pid=""
whois_pid=""
cleanup() {
    runc kill "$name" KILL >/dev/null 2>&1 || true
    runc delete --force "$name" >/dev/null 2>&1 || true
    [[ -n "$upstream_pid" ]] && kill "$upstream_pid" 2>/dev/null || true
    [[ -n "$whois_pid" ]] && kill "$whois_pid" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

umoci unpack --image "$layout:$tag" "$work/bundle" >/dev/null || fail "umoci cannot unpack $layout:$tag"
echo "ok   umoci unpacks the image"

# A loopback upstream that records each request's headers as one JSON line and answers 200.
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
upstream_port="$(free_port)"
proxy_port="$(free_port)"
admin_port="$(free_port)"
cat > "$work/upstream.py" <<'EOF'
import json, sys
from http.server import BaseHTTPRequestHandler, HTTPServer
log = open(sys.argv[2], "a", buffering=1)
class Handler(BaseHTTPRequestHandler):
    def do_POST(self):
        length = int(self.headers.get("content-length", "0"))
        self.rfile.read(length)
        log.write(json.dumps({"path": self.path, "headers": [[k.lower(), v] for k, v in self.headers.items()]}) + "\n")
        body = b'{"type":"message","model":"claude-test","usage":{"input_tokens":3,"output_tokens":5}}'
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass
HTTPServer(("127.0.0.1", int(sys.argv[1])), Handler).serve_forever()
EOF
python3 "$work/upstream.py" "$upstream_port" "$work/upstream.log" &
upstream_pid=$!

# The manifests run the proxy with `[identity] mode = "whois"` against the tailscaled sidecar's LocalAPI
# socket. tailscaled cannot run here: k8s/validate/whois_standin.py answers WhoIs on a unix socket in the
# directory mounted where the sidecar's would be, in the daemon's JSON shape.
mkdir -p "$work/tailscale"
chmod 0755 "$work/tailscale"
python3 k8s/validate/whois_standin.py "$work/tailscale/tailscaled.sock" 300 &
whois_pid=$!

# The container as the manifests run it: their configuration, read-only root, the user from the image;
# the host's network, so the proxy reaches the loopback upstream and the test reaches the proxy.
python3 - "$work/bundle/config.json" "$repo_root/k8s/standalone" "$proxy_port" "$admin_port" "$upstream_port" "$work/tailscale" <<'EOF'
import json, sys
path, config_dir, proxy_port, admin_port, upstream_port, tailscale_dir = sys.argv[1:]
spec = json.load(open(path))
process = spec["process"]
assert process["user"]["uid"] == 65532 and process["user"]["gid"] == 65532, process["user"]
process["terminal"] = False
process["args"] = process["args"] + [
    "--listen", f"127.0.0.1:{proxy_port}", "--admin-listen", f"127.0.0.1:{admin_port}",
    "--upstream", f"http://127.0.0.1:{upstream_port}", "--drain-timeout", "5s"]
# Whichever variable the manifests' plugin.json reads; host_env_keys passes only that one to the filter.
process["env"] = process.get("env", []) + ["ANTHROPIC_API_KEY=image-test-token", "ANTHROPIC_OAUTH_TOKEN=image-test-token"]
spec["root"]["readonly"] = True
spec["linux"]["namespaces"] = [ns for ns in spec["linux"]["namespaces"] if ns["type"] != "network"]
spec["mounts"] = [m for m in spec["mounts"] if m["destination"] not in ("/tmp", "/etc/ai-proxy", "/var/lib/ai-proxy", "/var/run/tailscale")]
spec["mounts"] += [
    {"destination": "/etc/ai-proxy", "type": "bind", "source": config_dir, "options": ["rbind", "ro"]},
    {"destination": "/var/run/tailscale", "type": "bind", "source": tailscale_dir, "options": ["rbind", "ro"]},
    {"destination": "/tmp", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "nodev", "mode=1777", "size=16m"]},
    {"destination": "/var/lib/ai-proxy", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "nodev", "mode=0700", "uid=65532", "gid=65532", "size=16m"]},
]
json.dump(spec, open(path, "w"))
EOF

runc run --bundle "$work/bundle" "$name" > "$work/proxy.log" 2>&1 &
runc_pid=$!

wait_for() {  # wait_for SECONDS DESCRIPTION COMMAND...: poll until COMMAND succeeds
    local deadline=$((SECONDS + $1)) what="$2"; shift 2
    until "$@" >/dev/null 2>&1; do
        if ! kill -0 "$runc_pid" 2>/dev/null; then cat "$work/proxy.log" >&2; fail "the container exited while waiting for $what"; fi
        (( SECONDS < deadline )) || { cat "$work/proxy.log" >&2; fail "timed out waiting for $what"; }
        sleep 0.2
    done
}
wait_for 60 "/healthz" curl -fsS "http://127.0.0.1:$admin_port/healthz"
echo "ok   /healthz answers 200"
wait_for 30 "/readyz" curl -fsS "http://127.0.0.1:$admin_port/readyz"
echo "ok   /readyz answers 200"

pid="$(runc state "$name" | python3 -c 'import json,sys; print(json.load(sys.stdin)["pid"])')"
ids="$(awk '/^Uid:|^Gid:/ {print $2}' "/proc/$pid/status" | tr '\n' ' ')"
[[ "$ids" == "65532 65532 " ]] || fail "the proxy runs as uid/gid $ids, expected 65532 65532"
echo "ok   the proxy runs as 65532:65532"

status="$(curl -sS -o "$work/answer" -w '%{http_code}' "http://127.0.0.1:$proxy_port/v1/messages" \
    -H 'content-type: application/json' -H 'x-api-key: client-key' -d '{"model":"claude-test","max_tokens":1,"messages":[]}')"
[[ "$status" == 200 ]] || { cat "$work/answer" >&2; fail "a proxied request got $status, expected 200"; }
python3 - "$work/upstream.log" "$repo_root/k8s/standalone/plugin.json" <<'EOF' || fail "the upstream did not see the request as the filter should have left it"
import json, sys
lines = [json.loads(line) for line in open(sys.argv[1])]
credential = json.load(open(sys.argv[2]))["credential"]
header = credential.get("header", "authorization")
prefix = credential.get("prefix", "Bearer " if header == "authorization" else "")
assert len(lines) == 1, f"{len(lines)} requests reached the upstream"
headers = lines[0]["headers"]
assert [v for k, v in headers if k == header] == [prefix + "image-test-token"], "credential not injected exactly once"
assert "client-key" not in [v for k, v in headers], "the client's key reached the upstream"
assert lines[0]["path"] == "/v1/messages", lines[0]["path"]
EOF
[[ -s "$work/tailscale/tailscaled.sock.log" ]] || fail "the proxy never asked the WhoIs stand-in who the caller is"
echo "ok   a request is proxied with the caller looked up by WhoIs, the credential injected and the client key removed"

runc kill "$name" TERM
deadline=$((SECONDS + 20))
while kill -0 "$runc_pid" 2>/dev/null; do
    (( SECONDS < deadline )) || fail "the proxy did not exit within 20 s of SIGTERM"
    sleep 0.2
done
wait "$runc_pid" && code=0 || code=$?
[[ "$code" == 0 ]] || { cat "$work/proxy.log" >&2; fail "the container exited $code after SIGTERM, expected 0"; }
echo "ok   SIGTERM drains the proxy and the container exits 0"
