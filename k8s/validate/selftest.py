"""Proves that k8s/validate/check.py rejects what it claims to reject.

Each case copies the deployment files into a scratch directory, breaks one thing with a plain text edit, runs
check.py on the copy and requires a failure whose message contains the expected text. A case whose edit no
longer applies (the manifest changed) fails too, so the self-test cannot silently stop testing anything.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

# (name, file, text to replace, replacement, text the failure must contain)
CASES = [
    ("pod may run as root", "k8s/standalone/deployment.yaml",
     "      securityContext:\n        runAsNonRoot: true\n", "      securityContext:\n",
     "spec.securityContext.runAsNonRoot: must be true"),
    ("writable root filesystem", "k8s/standalone/deployment.yaml",
     "readOnlyRootFilesystem: true", "readOnlyRootFilesystem: false",
     "readOnlyRootFilesystem: must be true"),
    ("misspelt Kubernetes field", "k8s/standalone/deployment.yaml",
     "          imagePullPolicy: IfNotPresent\n", "          imagePullPolicy: IfNotPresent\n          imagePullPolicies: Always\n",
     "imagePullPolicies"),
    ("grace period shorter than the drain", "k8s/standalone/deployment.yaml",
     "terminationGracePeriodSeconds: 606", "terminationGracePeriodSeconds: 6",
     "terminationGracePeriodSeconds: 6 must be the preStop sleep"),
    ("no preStop sleep before SIGTERM", "k8s/standalone/deployment.yaml",
     "              sleep:\n                seconds: 5\n", "              sleep:\n                seconds: 0\n",
     "lifecycle.preStop.sleep.seconds: must give"),
    ("rotating refresh token in two replicas", "k8s/standalone-oauth2/deployment-patch.yaml",
     "  replicas: 1", "  replicas: 2",
     "a rotating refresh token must be used by one process only"),
    ("token state on an emptyDir", "k8s/standalone-oauth2/deployment-patch.yaml",
     "          emptyDir: null\n          persistentVolumeClaim:\n            claimName: ai-proxy-state\n", "          emptyDir: {}\n",
     "must be on a PersistentVolumeClaim"),
    ("wrong tailnet hostname", "k8s/standalone/deployment.yaml",
     "            - name: TS_HOSTNAME\n              value: ai\n", "            - name: TS_HOSTNAME\n              value: ai-proxy\n",
     "env[TS_HOSTNAME]: must be 'ai'"),
    ("proxy reachable around the tailscaled sidecar", "k8s/standalone/proxy.toml",
     'listen = "127.0.0.1:80"', 'listen = "0.0.0.0:80"',
     "must be loopback"),
    ("caller identity not resolved by WhoIs", "k8s/standalone/proxy.toml",
     'mode = "whois"', 'mode = "none"',
     "identity.mode: 'none'"),
    ("admin port handed to the tailnet", "k8s/standalone/deployment.yaml",
     '"--admin-listen", "$(POD_IP):9901"', '"--admin-listen", "0.0.0.0:9901"',
     "--admin-listen must be $(POD_IP):9901"),
    ("LocalAPI socket not shared", "k8s/standalone/proxy.toml",
     'whois_socket = "/var/run/tailscale/tailscaled.sock"', 'whois_socket = "/run/tailscaled.sock"',
     "is not proxy.toml identity.whois_socket"),
    ("sidecar may read every Secret", "k8s/standalone/rbac.yaml",
     '    verbs: ["get", "update", "patch"]', '    verbs: ["get", "update", "patch", "list"]',
     "beyond get, update, patch"),
    ("Tailscale operator in front of the proxy", "k8s/standalone/service.yaml",
     "  type: ClusterIP\n", "  type: LoadBalancer\n  loadBalancerClass: tailscale\n",
     "the Tailscale operator must not expose the proxy"),
    ("selector that matches no pod", "k8s/standalone/pdb.yaml",
     "      app: ai-proxy", "      app: ai-prxy",
     "spec.selector.matchLabels: does not equal the Deployment selector"),
    ("Secret example in the kustomization", "k8s/standalone/kustomization.yaml",
     "  - networkpolicy.yaml\n", "  - networkpolicy.yaml\n  - secret.example.yaml\n",
     "is referenced by a kustomization"),
    ("Istio sidecars tag usage metrics differently", "k8s/istio/base/usage-stats-tags.yaml",
     '{tag_name: caller, regex: "(;caller=([^;]*))"}', '{tag_name: user, regex: "(;caller=([^;]*))"}',
     "no BOOTSTRAP patch with envoy/envoy.yaml's stats_tags"),
    ("plugin fails open", "k8s/istio/base/wasmplugin.yaml",
     "failStrategy: FAIL_CLOSE", "failStrategy: FAIL_OPEN",
     "spec.failStrategy: must be FAIL_CLOSE"),
    ("enum value Istio does not know", "k8s/istio/base/wasmplugin.yaml",
     "phase: AUTHN", "phase: AUTHENTICATION",
     "spec/phase must be equal to one of the allowed values"),
    ("misspelt Istio field", "k8s/istio/base/wasmplugin.yaml",
     "  imagePullPolicy: IfNotPresent\n", "  imagePullPolicy: IfNotPresent\n  imagePullPolicyy: Always\n",
     "spec.imagePullPolicyy: unknown field"),
    ("credential inlined into the WasmPlugin", "k8s/istio/base/wasmplugin.yaml",
     "        valueFrom: HOST", "        valueFrom: INLINE\n        value: \"<placeholder>\"",
     "must be valueFrom: HOST"),
    ("pass-through left open on the credential port", "k8s/istio/base/sidecar.yaml",
     "mode: REGISTRY_ONLY", "mode: ALLOW_ANY",
     "spec.outboundTrafficPolicy.mode: must be REGISTRY_ONLY"),
    ("plugin configurations drift apart", "k8s/standalone/plugin.json",
     "\"on_missing_credential\": \"deny\"", "\"on_missing_credential\": \"forward\"",
     "differs from k8s/standalone/plugin.json"),
    ("WasmPlugin digest not the built image", "STAMPED/kustomization.yaml",
     "value: DIGEST", "value: " + "0" * 64,
     "is not the built image's manifest digest"),
    ("token committed in a comment", "envoy/envoy.yaml",
     "# Envoy in front of the Anthropic API", "# Envoy in front of the Anthropic API " + "sk-" + "ant-oat01-abcdefghijklmnopqrstuv",
     "looks like a real credential"),
    ("alert that no longer fires as tested", "k8s/monitoring/alerts.yaml",
     "credential_filter_credential_available) == 0", "credential_filter_credential_available) < 0",
     "promtool test rules failed"),
    ("runbook query that does not parse", "RUNBOOK.md",
     "sum by (job) (rate(credential_filter_access_denied_total[5m]))", "sum by (job) (rate(credential_filter_access_denied_total[5m])",
     "a PromQL query does not parse"),
    ("metric name the filter does not define", "RUNBOOK.md",
     "min by (job, instance) (credential_filter_credential_available)", "min by (job, instance) (credential_filter_credentials_available)",
     "metric names not defined in specs/filter.md"),
    ("proxy metric name the proxy does not define", "RUNBOOK.md",
     "sum by (kind) (rate(proxy_errors_total{job=\"ai-proxy\"}[5m]))", "sum by (kind) (rate(proxy_error_total{job=\"ai-proxy\"}[5m]))",
     "proxy metric names not defined in specs/proxy.md"),
    ("dashboard queries a metric the code does not emit", "k8s/monitoring/dashboard.json",
     "credential_filter_usage_unparsed_total{", "credential_filter_usage_unparsed_count{",
     "credential_filter_usage_unparsed_count is not a metric the code emits"),
    ("metric renamed in the code but not in the dashboard", "filter/src/metrics.rs",
     '"credential_filter_usage_tokens_total"', '"credential_filter_usage_token_total"',
     "credential_filter_usage_tokens_total is not a metric the code emits"),
    ("dashboard query that does not parse", "k8s/monitoring/dashboard.json",
     "histogram_quantile(0.5, sum by (le, model) (", "histogram_quantile(0.5, sum by (le, model (",
     "k8s/monitoring/dashboard.json: a PromQL query does not parse"),
    ("runtime image runs as root", "Dockerfile",
     "USER 65532:65532", "USER 0",
     "numeric non-root user"),
    ("unpinned base image", "Dockerfile",
     "rust:1.95.0-slim-bookworm", "rust:latest",
     "must be pinned to a version"),
]

COPIED = ["k8s", "envoy", "Dockerfile", ".dockerignore", "Cargo.toml", "Cargo.lock", "durations", "filter", "host-harness", "tests", "specs", "scripts", "RUNBOOK.md"]


def prepare(repo: Path, scratch: Path, stamped: Path, layout: Path) -> Path:
    """Copies the files check.py reads; returns the copied stamped overlay, re-pointed at the copied base."""
    for name in COPIED:
        source = repo / name
        if source.is_dir():
            shutil.copytree(source, scratch / name, ignore=shutil.ignore_patterns("target", "node_modules"))
        elif source.is_file():
            shutil.copy2(source, scratch / name)
    overlay = scratch / "stamped"
    overlay.mkdir()
    text = (stamped / "kustomization.yaml").read_text(encoding="utf-8")
    lines = []
    for line in text.splitlines():
        if line.strip().endswith("k8s/istio/base"):
            line = "  - ../k8s/istio/base"
        if line.strip().startswith("value:") and len(line.split()[-1]) == 64:
            line = line.replace(line.split()[-1], "DIGEST")
        lines.append(line)
    (overlay / "kustomization.yaml").write_text("\n".join(lines) + "\n", encoding="utf-8")
    shutil.copytree(layout, scratch / "layout")
    return overlay


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repo", type=Path, required=True)
    parser.add_argument("--kubectl", required=True)
    parser.add_argument("--node-dir", type=Path, required=True)
    parser.add_argument("--stamped", type=Path, required=True)
    parser.add_argument("--oci-layout", type=Path, required=True)
    parser.add_argument("--promtool", required=True)
    args = parser.parse_args()
    repo = args.repo.resolve()
    digest = (args.oci_layout / "index.json").read_text(encoding="utf-8").split('"digest":"sha256:')[1][:64]
    check = Path(__file__).with_name("check.py")
    passed = failed = 0
    # The untouched copy must pass, or every rejection below would prove nothing.
    with tempfile.TemporaryDirectory() as tmp:
        scratch = Path(tmp)
        overlay = prepare(repo, scratch, args.stamped, args.oci_layout)
        stamped_text = (overlay / "kustomization.yaml").read_text(encoding="utf-8")
        (overlay / "kustomization.yaml").write_text(stamped_text.replace("DIGEST", digest), encoding="utf-8")
        result = subprocess.run(
            [sys.executable, str(check), "--repo", str(scratch), "--kubectl", args.kubectl, "--node-dir", str(args.node_dir),
             "--stamped", str(overlay), "--oci-layout", str(scratch / "layout"), "--promtool", args.promtool],
            capture_output=True, text=True, check=False,
        )
        if result.returncode != 0:
            print("FAIL self-test: the unmodified copy of the manifests does not pass check.py:")
            for line in result.stdout.splitlines() + result.stderr.splitlines():
                if not line.startswith("ok"):
                    print(f"       {line}")
            return 1
        print("ok   self-test: the unmodified copy passes")
    def run_case(case: tuple[str, str, str, str, str]) -> list[str]:
        name, rel, old, new, expected = case
        with tempfile.TemporaryDirectory() as tmp:
            scratch = Path(tmp)
            overlay = prepare(repo, scratch, args.stamped, args.oci_layout)
            target = overlay / "kustomization.yaml" if rel.startswith("STAMPED/") else scratch / rel
            if not rel.startswith("STAMPED/"):
                # Every other case keeps the real digest, so only its own edit can fail.
                stamped_text = (overlay / "kustomization.yaml").read_text(encoding="utf-8")
                (overlay / "kustomization.yaml").write_text(stamped_text.replace("DIGEST", digest), encoding="utf-8")
            text = target.read_text(encoding="utf-8")
            if old not in text:
                return [f"FAIL self-test '{name}': {rel} no longer contains the text this case edits; update k8s/validate/selftest.py"]
            target.write_text(text.replace(old, new, 1), encoding="utf-8")
            result = subprocess.run(
                [sys.executable, str(check), "--repo", str(scratch), "--kubectl", args.kubectl, "--node-dir", str(args.node_dir),
                 "--stamped", str(overlay), "--oci-layout", str(scratch / "layout"), "--promtool", args.promtool],
                capture_output=True, text=True, check=False,
            )
            fails = [line for line in result.stdout.splitlines() if line.startswith("FAIL")]
            if result.returncode == 1 and any(expected in line for line in fails):
                return [f"ok   self-test '{name}' is rejected"]
            lines = [f"FAIL self-test '{name}': check.py did not reject it with a message containing {expected!r}"]
            for line in fails or result.stdout.splitlines()[-3:] + result.stderr.splitlines()[-3:]:
                lines.append(f"       {line}")
            return lines

    # Two at a time: each case is mostly waiting on kustomize and node.
    with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
        for lines in pool.map(run_case, CASES):
            print("\n".join(lines))
            if lines[0].startswith("ok"):
                passed += 1
            else:
                failed += 1
    print(f"self-test: {passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
