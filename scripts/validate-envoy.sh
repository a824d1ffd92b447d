#!/usr/bin/env bash
# Validates envoy/envoy.yaml with the real Envoy (1.40, V8) and the real filter, then runs its loopback variant.
#
#   1. production config, with only the module path pointed at the built filter.wasm:
#      `envoy --mode validate` (Envoy loads the module and configures the plugin, so the filter's own parser
#      checks the plugin configuration), once with the token variable unset and once set;
#   2. the loopback test variant (envoy/derive-config.py --loopback): `envoy --mode validate`;
#   3. a smoke run of the loopback variant against a local upstream on 127.0.0.1: the credential is injected
#      and the client's own credentials are gone, Host is rewritten, the filter's metrics are exported;
#      without the token the proxy answers 503 credential_unavailable and forwards nothing.
#
# Environment: ENVOY_BIN (default: what scripts/install-envoy.sh installs), FILTER_WASM (default: the
# shipped build, target/wasm/filter.wasm, built with scripts/build-filter.sh when missing). Derived configs and logs go to build/envoy/.
set -euo pipefail

repo_root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$repo_root"
out="build/envoy"
mkdir -p "$out"
failed=0
pass() { echo "ok   $*"; }
fail() { echo "FAIL $*"; failed=1; }

envoy="${ENVOY_BIN:-}"
if [[ -z "$envoy" ]]; then
    envoy="$(scripts/install-envoy.sh)" || { echo "FAIL scripts/install-envoy.sh: could not install Envoy"; exit 1; }
fi
[[ -x "$envoy" ]] || { echo "FAIL ENVOY_BIN=$envoy: not an executable"; exit 1; }

wasm="${FILTER_WASM:-target/wasm/filter.wasm}"
if [[ ! -f "$wasm" ]]; then
    echo "building the filter ($wasm is missing)" >&2
    scripts/build-filter.sh >&2
fi
[[ -f "$wasm" ]] || { echo "FAIL $wasm: the filter module does not exist"; exit 1; }

# shellcheck source=../k8s/validate/tools.sh
source k8s/validate/tools.sh
python="$(deploy_venv)/bin/python"

# Runs `envoy --mode validate`; the log goes to $out/<name>.log.
validate() {
    local name="$1" config="$2"
    shift 2
    if env "$@" "$envoy" --mode validate -c "$config" --log-level info >"$out/$name.log" 2>&1 \
        && grep -q "configuration '$config' OK" "$out/$name.log"; then
        return 0
    fi
    grep -E "\]\[(error|critical)\]" "$out/$name.log" | sed 's/^/       /' | tail -n 8
    return 1
}

echo "== envoy/envoy.yaml with Envoy $("$envoy" --version | sed -n 's|.*version: [0-9a-f]*/\([0-9.]*\)/.*|\1|p')"
"$python" envoy/derive-config.py --wasm "$wasm" --out "$out/envoy.validate.yaml"
if validate production "$out/envoy.validate.yaml" -u ANTHROPIC_API_KEY \
    && grep -q "credential filter has no credential: environment variable ANTHROPIC_API_KEY is not set" "$out/production.log"; then
    pass "envoy/envoy.yaml: valid; the filter accepts its configuration (no token: it reports it and will answer 503)"
else
    fail "envoy/envoy.yaml: envoy --mode validate rejected it (log: $out/production.log)"
fi
if validate production-token "$out/envoy.validate.yaml" ANTHROPIC_API_KEY=not-a-real-token \
    && grep -q "credential filter configured: credential ready for header x-api-key" "$out/production-token.log"; then
    pass "envoy/envoy.yaml: with ANTHROPIC_API_KEY set, the filter reports the credential ready"
else
    fail "envoy/envoy.yaml: with ANTHROPIC_API_KEY set, the filter did not report a ready credential (log: $out/production-token.log)"
fi

# Free loopback ports for the smoke run: listener, admin, API upstream, token upstream.
read -r listen_port admin_port api_port token_port < <("$python" - <<'EOF'
import socket
socks = [socket.socket() for _ in range(4)]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(*(s.getsockname()[1] for s in socks))
for s in socks:
    s.close()
EOF
)
"$python" envoy/derive-config.py --wasm "$wasm" --loopback --out "$out/envoy.test.yaml" \
    --listen-port "$listen_port" --admin-port "$admin_port" \
    --api-upstream "127.0.0.1:$api_port" --token-upstream "127.0.0.1:$token_port"
if validate loopback "$out/envoy.test.yaml" -u ANTHROPIC_API_KEY; then
    pass "loopback test variant ($out/envoy.test.yaml): valid"
else
    fail "loopback test variant: envoy --mode validate rejected it (log: $out/loopback.log)"
fi

echo "== smoke run of the loopback variant (127.0.0.1 only)"
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
}
trap cleanup EXIT

# The upstream answers every request with the headers it received, as JSON; it stops by itself after 60 s.
"$python" k8s/validate/echo_upstream.py "$api_port" 60 >"$out/upstream.log" 2>&1 &
pids+=($!)

# Starts Envoy on the loopback variant and waits until its admin interface reports LIVE (at most 15 s).
start_envoy() {
    local log="$1"
    shift
    env "$@" "$envoy" -c "$out/envoy.test.yaml" --log-level warn --base-id-path "$out/base-id" --use-dynamic-base-id \
        >"$log" 2>&1 &
    envoy_pid=$!
    pids+=("$envoy_pid")
    for _ in $(seq 150); do
        if [[ "$(curl -s --max-time 1 "http://127.0.0.1:$admin_port/ready" 2>/dev/null)" == "LIVE" ]]; then return 0; fi
        kill -0 "$envoy_pid" 2>/dev/null || break
        sleep 0.1
    done
    return 1
}
stop_envoy() { kill "$envoy_pid" 2>/dev/null || true; wait "$envoy_pid" 2>/dev/null || true; }

if start_envoy "$out/smoke.log" ANTHROPIC_API_KEY=not-a-real-token; then
    response="$(curl -s --max-time 5 -o "$out/smoke.body" -w '%{http_code}' "http://127.0.0.1:$listen_port/v1/messages" \
        -H 'content-type: application/json' -H 'x-api-key: client-key' -H 'authorization: Bearer client-token' \
        -H 'host: ai' -d '{"model":"m","max_tokens":1,"messages":[]}')" || response="none"
    if [[ "$response" == "200" ]] && "$python" - "$out/smoke.body" <<'EOF'
import json, sys
seen = json.load(open(sys.argv[1]))
expected = {"x-api-key": "not-a-real-token", "host": "api.anthropic.com", "anthropic-version": "2023-06-01"}
problems = [f"{k}: {seen.get(k)!r}, expected {v!r}" for k, v in expected.items() if seen.get(k) != v]
if "authorization" in seen:
    problems.append("the client's authorization reached the upstream")
if "oauth-2025-04-20" in seen.get("anthropic-beta", ""):
    problems.append(f"anthropic-beta: {seen.get('anthropic-beta')!r} has the OAuth flag, which an API key must not send")
for p in problems:
    print(f"       {p}")
sys.exit(1 if problems else 0)
EOF
    then
        pass "smoke: the upstream received the proxy's credential only, Host api.anthropic.com, the Anthropic headers"
    else
        fail "smoke: request through Envoy answered $response; upstream saw $(cat "$out/smoke.body" 2>/dev/null)"
    fi
    stats="$(curl -s --max-time 5 "http://127.0.0.1:$admin_port/stats/prometheus")"
    echo "$stats" > "$out/smoke.stats"
    missing=""
    for metric in credential_filter_requests_total credential_filter_credential_injected_total \
        credential_filter_access_denied_total credential_filter_credential_unavailable_total \
        credential_filter_rules_applied_total credential_filter_credential_available; do
        grep -Eq "^${metric}(\{[^}]*\})? " <<<"$stats" || missing+=" $metric"
    done
    if [[ -z "$missing" ]] && grep -Eq '^credential_filter_credential_injected_total(\{[^}]*\})? 1$' <<<"$stats" \
        && grep -Eq '^credential_filter_credential_available(\{[^}]*\})? 1$' <<<"$stats"; then
        pass "smoke: /stats/prometheus exports the filter metrics (credential_filter_*), injected 1, available 1"
    else
        fail "smoke: /stats/prometheus lacks or miscounts filter metrics:${missing:- values differ} (see $out/smoke.stats)"
    fi
    stop_envoy
else
    fail "smoke: Envoy did not become ready (log: $out/smoke.log)"
fi

if start_envoy "$out/smoke-no-token.log" -u ANTHROPIC_API_KEY; then
    response="$(curl -s --max-time 5 -o "$out/smoke-no-token.body" -w '%{http_code}' "http://127.0.0.1:$listen_port/v1/messages" \
        -H 'content-type: application/json' -d '{}')" || response="none"
    if [[ "$response" == "503" ]] && grep -q '"type":"credential_unavailable"' "$out/smoke-no-token.body"; then
        pass "smoke: without the token Envoy answers 503 credential_unavailable"
    else
        fail "smoke: without the token Envoy answered $response: $(cat "$out/smoke-no-token.body" 2>/dev/null)"
    fi
    stop_envoy
else
    fail "smoke: Envoy without the token did not become ready (log: $out/smoke-no-token.log)"
fi

if [[ "$failed" != 0 ]]; then
    echo "validate-envoy: FAILED (see the FAIL lines above)"
    exit 1
fi
echo "validate-envoy: all checks passed"
