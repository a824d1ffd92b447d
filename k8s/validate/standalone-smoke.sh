#!/usr/bin/env bash
# Runs the real `host-harness serve` with the ConfigMap files of k8s/standalone and k8s/standalone-oauth2, on
# 127.0.0.1 only, to check what the Deployments rely on:
#   - the proxy accepts the ConfigMap's proxy.toml (only the addresses and paths that differ inside the pod
#     are overridden with flags: listeners, upstream, filter and plugin paths);
#   - /healthz answers, /readyz says ready with the token and not ready without it (readiness probe);
#   - a request reaches the upstream with the credential from the environment and without the client's;
#   - the caller is resolved through a stand-in of tailscaled's LocalAPI WhoIs on a unix socket (identity mode
#     whois, as in the pod), a client's tailscale-user-login header never reaches the upstream, and without
#     the daemon the proxy refuses with 503 identity_unavailable and counts it;
#   - an allow list on caller.id admits the caller WhoIs names and refuses one only headers name;
#   - /metrics exports the filter's and the proxy's metrics under the names the runbook and alerts use;
#   - SIGTERM ends the process cleanly within what terminationGracePeriodSeconds leaves after the preStop
#     sleep (drain_timeout + 1 s);
#   - the oauth2 variant obtains a token from a local token endpoint with the Secret's refresh token, injects
#     it, and leaves the rotated refresh token in its state file (mode 0600) at shutdown.
#
# Usage: k8s/validate/standalone-smoke.sh PYTHON   (PYTHON: an interpreter with PyYAML, from deploy_venv)
# Environment: HOST_HARNESS (default target/debug/host-harness, built when missing), FILTER_WASM.
set -euo pipefail

repo_root="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$repo_root"
python="$1"
out="build/validate/standalone"
mkdir -p "$out"
failed=0
pass() { echo "ok   $*"; }
fail() { echo "FAIL $*"; failed=1; }

harness="${HOST_HARNESS:-target/debug/host-harness}"
if [[ ! -x "$harness" ]]; then
    echo "building host-harness ($harness is missing)" >&2
    cargo build -p host-harness-cli >&2
fi
wasm="${FILTER_WASM:-target/wasm/filter.wasm}"
[[ -f "$wasm" ]] || { echo "FAIL $wasm: the filter module does not exist"; exit 1; }
if ! "$harness" serve --help >/dev/null 2>&1; then
    echo "FAIL $harness: no \`serve\` subcommand; the Deployment runs \`host-harness serve --config ...\`"
    exit 1
fi

# SIGTERM arrives after the preStop sleep: the drain gets the rest of the grace period.
grace="$("$python" -c 'import sys, yaml; s = yaml.safe_load(open(sys.argv[1]))["spec"]["template"]["spec"]; print(s["terminationGracePeriodSeconds"] - s["containers"][0].get("lifecycle", {}).get("preStop", {}).get("sleep", {}).get("seconds", 0))' k8s/standalone/deployment.yaml)"
read -r listen_port admin_port api_port < <("$python" -c '
import socket
socks = [socket.socket() for _ in range(3)]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(*(s.getsockname()[1] for s in socks))
')

pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
}
trap cleanup EXIT
rm -f "$out/token-requests" "$out/token-state.json" "$out/tailscaled.sock.log"
whois_socket="$out/tailscaled.sock"
start_whois() {
    rm -f "$whois_socket"
    "$python" k8s/validate/whois_standin.py "$whois_socket" 120 >"$out/whois.log" 2>&1 &
    whois_pid=$!
    pids+=("$whois_pid")
    for _ in $(seq 100); do [[ -S "$whois_socket" ]] && return 0; sleep 0.05; done
    return 1
}
start_whois || fail "the WhoIs stand-in did not start (log: $out/whois.log)"
ECHO_TOKEN_LOG="$out/token-requests" "$python" k8s/validate/echo_upstream.py "$api_port" 120 >"$out/upstream.log" 2>&1 &
pids+=($!)

# Starts the proxy with a ConfigMap's files (variant directory first, extra flags after --); waits (at most
# 60 s) for /healthz.
start_proxy() {
    local dir="$1" log="$2"
    shift 2
    local envs=() flags=()
    while [[ $# -gt 0 && "$1" != "--" ]]; do envs+=("$1"); shift; done
    [[ $# -gt 0 ]] && shift
    flags=("$@")
    env "${envs[@]}" "$harness" serve --config "$dir/proxy.toml" \
        --listen "127.0.0.1:$listen_port" --admin-listen "127.0.0.1:$admin_port" \
        --upstream "http://127.0.0.1:$api_port" --filter "$wasm" --plugin-config "$dir/plugin.json" \
        --whois-socket "$whois_socket" "${flags[@]}" \
        >"$log" 2>&1 &
    proxy_pid=$!
    pids+=("$proxy_pid")
    for _ in $(seq 600); do
        [[ "$(curl -s -o /dev/null -w '%{http_code}' --max-time 1 "http://127.0.0.1:$admin_port/healthz" 2>/dev/null)" == "200" ]] && return 0
        kill -0 "$proxy_pid" 2>/dev/null || return 1
        sleep 0.1
    done
    return 1
}
readyz() { curl -s -o /dev/null -w '%{http_code}' --max-time 2 "http://127.0.0.1:$admin_port/readyz" 2>/dev/null || true; }

if start_proxy k8s/standalone "$out/proxy.log" ANTHROPIC_API_KEY=not-a-real-token; then
    pass "host-harness serve accepts k8s/standalone/proxy.toml and plugin.json; /healthz answers"
    ready=""
    for _ in $(seq 100); do
        ready="$(readyz)"
        [[ "$ready" == "200" ]] && break
        sleep 0.1
    done
    if [[ "$ready" == "200" ]]; then pass "/readyz: ready with the token"; else fail "/readyz answered ${ready:-nothing} with the token set (log: $out/proxy.log)"; fi
    code="$(curl -s --max-time 10 -o "$out/echo.json" -w '%{http_code}' "http://127.0.0.1:$listen_port/v1/messages" \
        -H 'content-type: application/json' -H 'x-api-key: client-key' -H 'authorization: Bearer client-token' \
        -H 'tailscale-user-login: mallory@example.com' -d '{"model":"m","max_tokens":1,"messages":[]}')" || code="none"
    if [[ "$code" == "200" ]] && "$python" - "$out/echo.json" <<'EOF'
import json, sys
seen = json.load(open(sys.argv[1]))
problems = []
if seen.get("x-api-key") != "not-a-real-token":
    problems.append("x-api-key is not the proxy's API key (the client's reached the upstream, or none was set)")
if "authorization" in seen:
    problems.append("the client's authorization reached the upstream")
if "tailscale-user-login" in seen:
    problems.append("the client's tailscale-user-login reached the upstream")
if seen.get("anthropic-version") != "2023-06-01":
    problems.append(f"anthropic-version: {seen.get('anthropic-version')!r}")
for p in problems:
    print(f"       {p}")
sys.exit(1 if problems else 0)
EOF
    then
        pass "a request through the proxy reaches the upstream with the proxy's credential only, no client identity header"
    else
        fail "request through the proxy answered $code; upstream saw $(cat "$out/echo.json" 2>/dev/null)"
    fi
    if grep -q '^127\.0\.0\.1:' "$out/tailscaled.sock.log" 2>/dev/null; then
        pass "identity mode whois: the proxy asked the LocalAPI socket who its loopback peer is"
    else
        fail "identity mode whois: no WhoIs lookup reached the stand-in (log: $out/tailscaled.sock.log)"
    fi
    metrics="$(curl -s --max-time 5 "http://127.0.0.1:$admin_port/metrics")"
    echo "$metrics" > "$out/metrics.txt"
    if grep -Eq '^credential_filter_credential_injected_total(\{[^}]*\})? 1(\.0)?$' <<<"$metrics" \
        && grep -Eq '^credential_filter_credential_available(\{[^}]*\})? 1(\.0)?$' <<<"$metrics" \
        && grep -Eq '^proxy_requests_total\{class="2xx"\} 1(\.0)?$' <<<"$metrics" \
        && grep -Eq '^proxy_in_flight_requests ' <<<"$metrics"; then
        pass "/metrics: credential_filter_* and proxy_* series as the runbook names them (injected 1, 2xx 1)"
    else
        fail "/metrics lacks the expected series (see $out/metrics.txt)"
    fi
    # tailscaled down: the proxy refuses rather than serve an unidentified caller, and counts it.
    kill "$whois_pid" 2>/dev/null || true
    wait "$whois_pid" 2>/dev/null || true
    code="$(curl -s --max-time 10 -o "$out/no-whois.json" -w '%{http_code}' "http://127.0.0.1:$listen_port/v1/messages" \
        -H 'content-type: application/json' -d '{}')" || code="none"
    errors="$(curl -s --max-time 5 "http://127.0.0.1:$admin_port/metrics" | grep '^proxy_errors_total{kind="identity_unavailable"}' || true)"
    if [[ "$code" == "503" ]] && grep -q '"api_error"' "$out/no-whois.json" && grep -q 'caller identity lookup failed' "$out/no-whois.json" \
        && [[ "$errors" =~ \ 1(\.0)?$ ]]; then
        pass "tailscaled down: 503 api_error \"caller identity lookup failed\", counted as proxy_errors_total{kind=\"identity_unavailable\"}"
    else
        fail "tailscaled down: answered $code $(cat "$out/no-whois.json" 2>/dev/null); metric: ${errors:-none}"
    fi
    start_whois || fail "the WhoIs stand-in did not restart (log: $out/whois.log)"
    started="$(date +%s.%N)"
    kill -TERM "$proxy_pid"
    status=0
    wait "$proxy_pid" || status=$?
    elapsed="$("$python" -c "import sys; print(f'{float(sys.argv[2]) - float(sys.argv[1]):.1f}')" "$started" "$(date +%s.%N)")"
    if [[ "$status" == 0 ]] && "$python" -c "import sys; sys.exit(0 if float(sys.argv[1]) < float(sys.argv[2]) else 1)" "$elapsed" "$grace"; then
        pass "SIGTERM: clean exit in ${elapsed} s, within the $grace s terminationGracePeriodSeconds leaves after the preStop sleep"
    else
        fail "SIGTERM: exit status $status after ${elapsed} s; the pod allows $grace s (log: $out/proxy.log)"
    fi
else
    fail "host-harness serve did not start with k8s/standalone/proxy.toml (log: $out/proxy.log): $(tail -n 3 "$out/proxy.log")"
fi

# The filter's allow list on caller.id, as an overlay would add it: the caller is who WhoIs says (the
# stand-in answers alice@example.com for every peer), whatever identity headers the client sends.
allow_dir="$out/allow"
mkdir -p "$allow_dir"
cp k8s/standalone/proxy.toml "$allow_dir/proxy.toml"
allow_case() {
    local allowed="$1" want="$2"
    "$python" -c '
import json, sys
plugin = json.load(open(sys.argv[2]))
plugin["access"] = {"identity": {"property": "caller.id", "allow": [sys.argv[1]]}}
json.dump(plugin, open(sys.argv[3], "w"))
' "$allowed" k8s/standalone/plugin.json "$allow_dir/plugin.json"
    if ! start_proxy "$allow_dir" "$out/proxy-allow.log" ANTHROPIC_API_KEY=not-a-real-token; then
        fail "host-harness serve did not start with an allow list (log: $out/proxy-allow.log)"
        return
    fi
    code="$(curl -s --max-time 10 -o "$out/allow.json" -w '%{http_code}' "http://127.0.0.1:$listen_port/v1/messages" \
        -H 'content-type: application/json' -H 'tailscale-user-login: bob@example.com' -H 'caller.id: bob@example.com' \
        -d '{}')" || code="none"
    if [[ "$code" == "$want" ]]; then
        pass "allow list [$allowed] on caller.id, WhoIs naming alice, headers naming bob: $want"
    else
        fail "allow list [$allowed], WhoIs alice, headers naming bob: answered $code, expected $want: $(cat "$out/allow.json" 2>/dev/null)"
    fi
    kill -TERM "$proxy_pid" 2>/dev/null || true
    wait "$proxy_pid" 2>/dev/null || true
}
allow_case bob@example.com 403
allow_case ALICE@example.com 200

if start_proxy k8s/standalone "$out/proxy-no-token.log" -u ANTHROPIC_API_KEY; then
    sleep 1
    ready="$(readyz)"
    if [[ "$ready" != "200" && -n "$ready" && "$ready" != "000" ]]; then
        pass "/readyz: not ready ($ready) without the token, so Kubernetes sends such a pod no traffic"
    else
        fail "/readyz answered ${ready:-nothing} without the token; the readiness probe would admit a pod that answers 503"
    fi
    kill -TERM "$proxy_pid" 2>/dev/null || true
    wait "$proxy_pid" 2>/dev/null || true
else
    fail "host-harness serve without the token did not start (log: $out/proxy-no-token.log)"
fi

# The oauth2 variant: the token endpoint (cluster anthropic_oauth) is the local stand-in, the state file a
# local path; everything else is k8s/standalone-oauth2's proxy.toml and plugin.json.
if start_proxy k8s/standalone-oauth2 "$out/proxy-oauth2.log" -u ANTHROPIC_OAUTH_TOKEN ANTHROPIC_REFRESH_TOKEN=not-a-real-token \
    -- --cluster "anthropic_oauth=http://127.0.0.1:$api_port" --state-file "$out/token-state.json"; then
    code="$(curl -s --max-time 20 -o "$out/echo-oauth2.json" -w '%{http_code}' "http://127.0.0.1:$listen_port/v1/messages" \
        -H 'content-type: application/json' -H 'authorization: Bearer client-token' -d '{}')" || code="none"
    if [[ "$code" == "200" ]] && grep -q '"authorization": "Bearer smoke-access-' "$out/echo-oauth2.json" \
        && grep -Eq '"refresh_token": ?"not-a-real-token"' "$out/token-requests" \
        && grep -Eq '"grant_type": ?"refresh_token"' "$out/token-requests"; then
        pass "oauth2 variant: the refresh token from the environment buys an access token, which is injected"
    else
        fail "oauth2 variant: request answered $code; upstream saw $(cat "$out/echo-oauth2.json" 2>/dev/null); token requests: $(cat "$out/token-requests" 2>/dev/null)"
    fi
    [[ "$(readyz)" == "200" ]] && pass "oauth2 variant: /readyz ready once a token is held" || fail "oauth2 variant: /readyz not ready with a token (log: $out/proxy-oauth2.log)"
    kill -TERM "$proxy_pid" 2>/dev/null || true
    wait "$proxy_pid" 2>/dev/null || true
    if [[ -f "$out/token-state.json" && "$(stat -c %a "$out/token-state.json")" == "600" ]] \
        && grep -q 'smoke-refresh-' "$out/token-state.json"; then
        pass "oauth2 variant: at shutdown the state file holds the rotated refresh token, mode 0600"
    else
        fail "oauth2 variant: no state file with the rotated refresh token at $out/token-state.json (log: $out/proxy-oauth2.log)"
    fi
else
    fail "host-harness serve did not start with k8s/standalone-oauth2 (log: $out/proxy-oauth2.log): $(tail -n 3 "$out/proxy-oauth2.log")"
fi

exit "$failed"
