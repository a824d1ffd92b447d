#!/usr/bin/env bash
# Runs the real clients the README points at the proxy, configured exactly as the README says, through
# `host-harness serve` with its embedded default configuration, in front of the local stand-in of the Messages
# API (examples/fake-messages-api.py, which accepts only the proxy's own credential):
#   - the Python SDK (`anthropic`) and the TypeScript SDK (`@anthropic-ai/sdk`): one plain and one streaming
#     request each, with ANTHROPIC_BASE_URL and a placeholder ANTHROPIC_API_KEY;
#   - Claude Code (`claude -p`), with ANTHROPIC_BASE_URL, a placeholder ANTHROPIC_AUTH_TOKEN and
#     CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC=1;
# first with the proxy holding ANTHROPIC_API_KEY (sent as x-api-key), then with only ANTHROPIC_OAUTH_TOKEN
# (sent as a bearer token). /readyz must name the credential in use, never its value.
#
# The clients are pinned in tests/clients (requirements.txt, package.json and package-lock.json) and installed
# under build/clients on first use, from PyPI and the npm registry.
#
# Usage: scripts/test-clients.sh [--harness PATH]   (default: target/debug/host-harness)
set -euo pipefail

repo_root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$repo_root"
harness="target/debug/host-harness"
while [[ $# -gt 0 ]]; do
    case "$1" in
        --harness) [[ $# -ge 2 ]] || { echo "--harness needs a path" >&2; exit 2; }; harness="$2"; shift 2 ;;
        *) echo "test-clients.sh: unknown argument '$1'" >&2; exit 2 ;;
    esac
done
fail() { echo "FAIL clients: $*" >&2; exit 1; }
[[ -x "$harness" ]] || fail "$harness is missing: build it with \`cargo build -p host-harness-cli\`"
filter="target/wasm/filter.wasm"
[[ -f "$filter" ]] || fail "$filter is missing: build it with \`make filter\`"

clients="build/clients"
mkdir -p "$clients"
if ! cmp -s tests/clients/requirements.txt "$clients/venv/requirements.txt" 2>/dev/null; then
    echo "installing the Python client (tests/clients/requirements.txt)"
    rm -rf "$clients/venv"
    python3 -m venv "$clients/venv"
    "$clients/venv/bin/pip" install -q --disable-pip-version-check -r tests/clients/requirements.txt
    cp tests/clients/requirements.txt "$clients/venv/requirements.txt"
fi
if ! cmp -s tests/clients/package-lock.json "$clients/node/package-lock.json" 2>/dev/null; then
    echo "installing the TypeScript SDK and Claude Code (tests/clients/package-lock.json)"
    rm -rf "$clients/node"
    mkdir -p "$clients/node"
    cp tests/clients/package.json tests/clients/package-lock.json "$clients/node/"
    (cd "$clients/node" && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
fi
claude="$clients/node/node_modules/.bin/claude"
[[ -x "$claude" ]] || fail "Claude Code did not install ($claude is missing)"

work="$(mktemp -d)"
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_for_url() {  # wait_for_url SECONDS URL PID: until URL answers 2xx, while PID lives
    local deadline=$((SECONDS + $1))
    until curl -fsS -o /dev/null "$2" 2>/dev/null; do
        kill -0 "$3" 2>/dev/null || fail "the process behind $2 exited"
        (( SECONDS < deadline )) || fail "timed out waiting for $2"
        sleep 0.1
    done
}

api_port="$(free_port)"
python3 examples/fake-messages-api.py --port "$api_port" --expect-key proxy-held-credential \
    --log "$work/api.log" 2>"$work/api.err" &
pids+=($!)
api_pid=$!

reply="Hello from the local stand-in of the Messages API."
python_client='
import sys, anthropic
client = anthropic.Anthropic()
args = dict(model="claude-sonnet-4-5", max_tokens=64, messages=[{"role": "user", "content": "hi"}])
print(client.messages.create(**args).content[0].text)
with client.messages.stream(**args) as stream:
    print(stream.get_final_message().content[0].text)
'
node_client='
const Anthropic = require("@anthropic-ai/sdk");
const client = new Anthropic();
const args = {model: "claude-sonnet-4-5", max_tokens: 64, messages: [{role: "user", content: "hi"}]};
(async () => {
  console.log((await client.messages.create(args)).content[0].text);
  console.log((await client.messages.stream(args).finalMessage()).content[0].text);
})().catch(error => { console.error(String(error)); process.exit(1); });
'

run_round() {  # run_round VARIABLE HEADER: the proxy holds VARIABLE, sent upstream as HEADER
    local variable="$1" header="$2" port admin log
    port="$(free_port)"; admin="$(free_port)"; log="$work/proxy-$variable.log"
    : > "$work/api.log"
    env -u ANTHROPIC_API_KEY -u ANTHROPIC_OAUTH_TOKEN "$variable=proxy-held-credential" \
        "$harness" serve --filter "$filter" --listen "127.0.0.1:$port" --admin-listen "127.0.0.1:$admin" \
        --upstream "http://127.0.0.1:$api_port" --workers 1 > "$log" 2>&1 &
    local proxy_pid=$!
    pids+=("$proxy_pid")
    wait_for_url 60 "http://127.0.0.1:$admin/readyz" "$proxy_pid"
    local ready
    ready="$(curl -fsS "http://127.0.0.1:$admin/readyz")"
    [[ "$ready" == "ready: credential $variable as $header" ]] || fail "/readyz says '$ready', expected the credential $variable as $header"
    grep -q "proxy-held-credential" "$log" && fail "the proxy's log shows the credential's value"
    echo "ok   serve with $variable: /readyz says '$ready'"

    local out
    out="$(env -u ANTHROPIC_AUTH_TOKEN ANTHROPIC_BASE_URL="http://127.0.0.1:$port" ANTHROPIC_API_KEY=placeholder \
        "$clients/venv/bin/python" -c "$python_client" 2>&1)" || fail "Python SDK: $out"
    [[ "$out" == "$reply"$'\n'"$reply" ]] || fail "Python SDK printed: $out"
    echo "ok   Python SDK $( "$clients/venv/bin/python" -c 'import anthropic; print(anthropic.__version__)'): a plain and a streaming request"

    out="$(cd "$clients/node" && env -u ANTHROPIC_AUTH_TOKEN ANTHROPIC_BASE_URL="http://127.0.0.1:$port" \
        ANTHROPIC_API_KEY=placeholder node -e "$node_client" 2>&1)" || fail "TypeScript SDK: $out"
    [[ "$out" == "$reply"$'\n'"$reply" ]] || fail "TypeScript SDK printed: $out"
    echo "ok   TypeScript SDK: a plain and a streaming request"

    mkdir -p "$work/home"
    out="$(env -u ANTHROPIC_API_KEY HOME="$work/home" ANTHROPIC_BASE_URL="http://127.0.0.1:$port" \
        ANTHROPIC_AUTH_TOKEN=placeholder CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC=1 \
        timeout 120 "$claude" -p "say hi" 2>&1)" || fail "Claude Code: $out"
    [[ "$out" == *"$reply"* ]] || fail "Claude Code printed: $out"
    echo "ok   Claude Code: claude -p answered through the proxy"

    # Every request reached the stand-in with the proxy's credential only (it refuses anything else).
    python3 - "$work/api.log" "$header" <<'EOF' || fail "the stand-in saw a request without the proxy's credential"
import json, sys
lines = [json.loads(line) for line in open(sys.argv[1])]
assert len(lines) >= 5, f"only {len(lines)} requests reached the stand-in"
for line in lines:
    assert line["credential_accepted"], line
    other = "authorization" if sys.argv[2] == "x-api-key" else "x-api-key"
    assert other not in line["headers"], f"the client's {other} reached the API: {line}"
EOF
    echo "ok   the API saw only the proxy's credential ($header), never a client's placeholder"
    kill "$proxy_pid"
    wait "$proxy_pid" || fail "serve did not exit 0 on SIGTERM"
}

wait_for_port() {
    local deadline=$((SECONDS + 10))
    until grep -q "fake Messages API on" "$work/api.err" 2>/dev/null; do
        kill -0 "$api_pid" 2>/dev/null || fail "the stand-in exited: $(cat "$work/api.err")"
        (( SECONDS < deadline )) || fail "the stand-in did not start"
        sleep 0.1
    done
}
wait_for_port
run_round ANTHROPIC_API_KEY x-api-key
run_round ANTHROPIC_OAUTH_TOKEN authorization
