"""Checks the deployment artifacts: Kubernetes manifests, the Istio resources, the Dockerfile and the Envoy
configuration's plugin settings, against real schemas and against each other.

Run by scripts/validate-manifests.sh with the pinned tools of k8s/validate (requirements.txt, package.json).
Every problem is printed as `FAIL <file>: <object>: <field>: <what is wrong>`; the exit status is 1 when any
check fails. Checks:

- schemas: every rendered object against the Kubernetes OpenAPI schemas (strict: unknown fields rejected)
  for the oldest and newest Kubernetes versions supported, and every Istio object against Istio's CRD schemas;
- the restricted Pod Security Standard on every pod template, field by field;
- labels and selectors: one `app` label per deployment unit, and every selector matching the pods it targets;
- wiring: ports, probes, config paths, the Secret and the environment variable the filter reads, the grace
  period against the proxy's drain timeout, the Tailscale exposure, the Istio traffic scope;
- secrets: the Secret examples stay out of every kustomization and hold placeholders only, and no token-like
  value appears in any deployment file;
- the plugin configuration is the same for Envoy, Istio and the standalone proxy;
- the Dockerfile builds what the manifests run (paths, ports, non-root user, pinned base images, context).
- the standalone proxy's caller identity: the tailscaled sidecar, the shared LocalAPI socket, WhoIs mode, a
  loopback-only listener, no operator Service in front, the state Secret scoped by RBAC;
- the Grafana dashboard: every query parses and names only metrics the code emits.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import fnmatch
import functools
import hashlib
import json
import os
import re
import subprocess
import sys
import tempfile
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import kubernetes_validate
import kubernetes_validate.utils
import yaml

# kubernetes-validate re-reads its schema files on every call; each is read once here instead.
kubernetes_validate.utils.schema_contents = functools.cache(kubernetes_validate.utils.schema_contents)

# Kubernetes versions the manifests must be valid for: the oldest supported and the newest known.
K8S_VERSIONS = ("1.30.0", "1.37.0")
BUILTIN_GROUPS = ("v1", "apps/v1", "policy/v1", "networking.k8s.io/v1", "rbac.authorization.k8s.io/v1")
# Namespaced sysctls the restricted (and baseline) Pod Security Standard allows, and that a pod here may set.
ALLOWED_SYSCTLS = {"net.ipv4.ip_unprivileged_port_start"}
# The tailscaled image the sidecar runs (official image, pinned by tag).
TAILSCALE_IMAGE = "tailscale/tailscale:"
ISTIO_GROUP_SUFFIX = ".istio.io"
# Restricted profile: the volume types it allows.
RESTRICTED_VOLUMES = {"configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim", "projected", "secret"}
PLACEHOLDER = re.compile(r"^<placeholder[^>]*>$")
# Shapes of real credentials that must never be committed.
TOKEN_PATTERNS = (
    re.compile(r"sk-ant-[A-Za-z0-9_-]{8,}"),
    re.compile(r"\beyJ[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]{10,}"),
    re.compile(r"Bearer\s+[A-Za-z0-9._~+/=-]{20,}"),
    # `not-a-real-token` is the value the smoke runs use.
    re.compile(r"ANTHROPIC_(?:OAUTH_TOKEN|API_KEY)\s*[=:]\s*['\"]?(?!<placeholder)(?!\$)(?!not-a-real-token\b)[A-Za-z0-9._~+/=-]{12,}"),
)


@dataclass
class Report:
    """Collects problems and passes; prints each as it comes."""

    failures: int = 0
    passes: int = 0

    def fail(self, where: str, message: str) -> None:
        self.failures += 1
        print(f"FAIL {where}: {message}")

    def ok(self, message: str) -> None:
        self.passes += 1
        print(f"ok   {message}")

    def check(self, condition: bool, where: str, message: str) -> bool:
        if not condition:
            self.fail(where, message)
        return condition


@dataclass
class Rendered:
    """The objects one kustomization renders to, with the file each came from."""

    target: str
    docs: list[dict[str, Any]]
    origin: dict[tuple[str, str], str] = field(default_factory=dict)

    def where(self, doc: dict[str, Any]) -> str:
        key = (doc.get("kind", "?"), doc.get("metadata", {}).get("name", "?"))
        return f"{self.origin.get(key, self.target)}: {key[0]}/{key[1]}"

    def of_kind(self, kind: str) -> list[dict[str, Any]]:
        return [d for d in self.docs if d.get("kind") == kind]


def dig(doc: Any, *path: Any, default: Any = None) -> Any:
    """Follows keys and indexes into nested data; `default` when any step is missing."""
    for step in path:
        if isinstance(doc, dict) and step in doc:
            doc = doc[step]
        elif isinstance(doc, list) and isinstance(step, int) and 0 <= step < len(doc):
            doc = doc[step]
        else:
            return default
    return doc


# libyaml's loader when the wheel has it: the pure-Python one dominates the run time otherwise.
LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def load_yaml_docs(path: Path) -> list[dict[str, Any]]:
    with path.open(encoding="utf-8") as handle:
        return [d for d in yaml.load_all(handle, Loader=LOADER) if d]


@functools.cache
def source_map(root: Path, repo: Path) -> dict[tuple[str, str], str]:
    """(kind, name) -> the manifest file under `root` that declares it."""
    origin: dict[tuple[str, str], str] = {}
    for path in sorted(root.rglob("*.yaml")):
        if path.name == "kustomization.yaml" or path.name.endswith(".example.yaml"):
            continue
        try:
            docs = load_yaml_docs(path)
        except yaml.YAMLError:
            continue
        for doc in docs:
            if isinstance(doc, dict) and "kind" in doc:
                origin.setdefault((doc["kind"], dig(doc, "metadata", "name", default="?")), str(path.relative_to(repo)))
    return origin


def render(kubectl: str, target: Path, repo: Path, report: Report) -> Rendered | None:
    """Renders a kustomization with kubectl's built-in kustomize."""
    rel = str(target.relative_to(repo)) if target.is_relative_to(repo) else str(target)
    result = subprocess.run([kubectl, "kustomize", str(target)], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        report.fail(f"{rel}/kustomization.yaml", f"kustomize could not render it: {result.stderr.strip()}")
        return None
    docs = [d for d in yaml.load_all(result.stdout, Loader=LOADER) if d]
    origin = dict(source_map(repo / "k8s", repo))
    for doc in docs:
        name = dig(doc, "metadata", "name", default="")
        if doc.get("kind") == "ConfigMap" and name.startswith("ai-proxy-config-"):
            origin[("ConfigMap", name)] = f"{rel}/kustomization.yaml (configMapGenerator)"
    report.ok(f"{rel}: kustomize rendered {len(docs)} objects")
    return Rendered(rel, docs, origin)


# --- schemas ----------------------------------------------------------------------------------------------


def validate_builtin(rendered: Rendered, report: Report) -> None:
    for doc in rendered.docs:
        if doc.get("apiVersion") not in BUILTIN_GROUPS:
            continue
        where = rendered.where(doc)
        good = True
        for version in K8S_VERSIONS:
            try:
                kubernetes_validate.validate(doc, version, strict=True)
            except kubernetes_validate.ValidationError as err:
                path = ".".join(str(p) for p in err.path) or "<root>"
                report.fail(where, f"{path}: {err.message} (Kubernetes {version} schema, strict)")
                good = False
            except kubernetes_validate.SchemaNotFoundError:
                report.fail(where, f"no Kubernetes {version} schema for {doc.get('apiVersion')} {doc.get('kind')}")
                good = False
        if good:
            report.ok(f"{where} (Kubernetes {' and '.join(K8S_VERSIONS)} schemas, strict)")


def validate_istio(all_rendered: list[Rendered], node_dir: Path, report: Report) -> None:
    items, seen = [], set()
    for rendered in all_rendered:
        for doc in rendered.docs:
            if str(doc.get("apiVersion", "")).split("/")[0].endswith(ISTIO_GROUP_SUFFIX):
                source = rendered.where(doc).split(": ")[0]
                key = (source, json.dumps(doc, sort_keys=True))
                if key not in seen:
                    seen.add(key)
                    items.append({"source": source, "doc": doc})
    script = Path(__file__).with_name("istio.mjs")
    # The validator must resolve the pinned package from the directory it was installed into.
    runner = node_dir / "istio.mjs"
    wanted = script.read_text(encoding="utf-8")
    if not runner.is_file() or runner.read_text(encoding="utf-8") != wanted:
        staging = runner.with_name(f"istio.mjs.{os.getpid()}")
        staging.write_text(wanted, encoding="utf-8")
        os.replace(staging, runner)
    result = subprocess.run(["node", str(runner)], input=json.dumps(items), capture_output=True, text=True, check=False)
    for line in result.stdout.splitlines():
        if line.startswith("FAIL "):
            where, _, message = line[5:].partition(": ")
            rest_where, _, rest = message.partition(": ")
            report.fail(f"{where}: {rest_where}", rest)
        elif line.startswith("ok   "):
            report.ok(line[5:])
    if result.returncode not in (0, 1):
        report.fail("k8s/validate/istio.mjs", f"the Istio schema validator crashed: {result.stderr.strip()}")


def check_unknown_kinds(rendered: Rendered, report: Report) -> None:
    for doc in rendered.docs:
        api = str(doc.get("apiVersion", ""))
        if api not in BUILTIN_GROUPS and not api.split("/")[0].endswith(ISTIO_GROUP_SUFFIX):
            report.fail(rendered.where(doc), f"apiVersion {api!r} has no schema this validation knows; add one or remove the object")


# --- pod security -----------------------------------------------------------------------------------------


def check_restricted(where: str, pod: dict[str, Any], report: Report, skip_containers: frozenset[str] = frozenset()) -> None:
    """The restricted Pod Security Standard (which includes baseline), control by control."""
    before = report.failures
    spec = pod.get("spec", {})
    psc = spec.get("securityContext", {}) or {}
    for host in ("hostNetwork", "hostPID", "hostIPC"):
        report.check(not spec.get(host), where, f"spec.{host}: host namespaces are not allowed")
    report.check(psc.get("runAsNonRoot") is True, where, "spec.securityContext.runAsNonRoot: must be true at pod level")
    report.check(psc.get("runAsUser", 1) != 0, where, "spec.securityContext.runAsUser: must not be 0")
    report.check(dig(psc, "seccompProfile", "type") == "RuntimeDefault", where, "spec.securityContext.seccompProfile.type: must be RuntimeDefault at pod level")
    for sysctl in psc.get("sysctls", []) or []:
        report.check(sysctl.get("name") in ALLOWED_SYSCTLS, where, f"spec.securityContext.sysctls: {sysctl.get('name')} is not needed and not allowed here (only {sorted(ALLOWED_SYSCTLS)})")
    for volume in spec.get("volumes", []) or []:
        kinds = [k for k in volume if k != "name"]
        for kind in kinds:
            report.check(kind in RESTRICTED_VOLUMES, where, f"spec.volumes[{volume.get('name')}]: volume type {kind} is not allowed by the restricted profile")
    groups = (("containers", spec.get("containers", []) or []), ("initContainers", spec.get("initContainers", []) or []))
    for group, containers in groups:
        for container in containers:
            name = container.get("name", "?")
            if name in skip_containers:
                continue
            at = f"spec.{group}[{name}]"
            sc = container.get("securityContext", {}) or {}
            report.check(sc.get("allowPrivilegeEscalation") is False, where, f"{at}.securityContext.allowPrivilegeEscalation: must be false")
            report.check(not sc.get("privileged"), where, f"{at}.securityContext.privileged: must not be true")
            report.check(sc.get("readOnlyRootFilesystem") is True, where, f"{at}.securityContext.readOnlyRootFilesystem: must be true")
            report.check("ALL" in (dig(sc, "capabilities", "drop") or []), where, f"{at}.securityContext.capabilities.drop: must contain ALL")
            added = set(dig(sc, "capabilities", "add") or []) - {"NET_BIND_SERVICE"}
            report.check(not added, where, f"{at}.securityContext.capabilities.add: {sorted(added)} not allowed (only NET_BIND_SERVICE)")
            report.check(sc.get("runAsNonRoot", True) is not False, where, f"{at}.securityContext.runAsNonRoot: must not be false")
            report.check(sc.get("runAsUser", 1) != 0, where, f"{at}.securityContext.runAsUser: must not be 0")
            report.check(dig(sc, "seccompProfile", "type", default="RuntimeDefault") in ("RuntimeDefault", "Localhost"), where, f"{at}.securityContext.seccompProfile: must be RuntimeDefault or Localhost")
            report.check(dig(sc, "procMount", default="Default") == "Default", where, f"{at}.securityContext.procMount: must be Default")
            for port in container.get("ports", []) or []:
                report.check("hostPort" not in port, where, f"{at}.ports[{port.get('name')}].hostPort: host ports are not allowed")
            resources = container.get("resources", {}) or {}
            report.check(bool(dig(resources, "requests", "cpu")) and bool(dig(resources, "requests", "memory")), where, f"{at}.resources.requests: cpu and memory requests are required")
            report.check(bool(dig(resources, "limits", "memory")), where, f"{at}.resources.limits.memory: a memory limit is required")
            image = str(container.get("image", ""))
            report.check(":" in image.rsplit("/", 1)[-1] and not image.endswith(":latest") or "@sha256:" in image, where, f"{at}.image: {image!r} must carry a version tag or digest (not latest)")
    if report.failures == before:
        report.ok(f"{where}: restricted Pod Security Standard")


# --- the standalone proxy ---------------------------------------------------------------------------------


def parse_duration_seconds(text: Any, where: str, report: Report) -> float | None:
    if isinstance(text, (int, float)):
        return float(text)
    # The proxy's own syntax: a number with ms, s, m or h, or a bare number of seconds.
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|)\s*", str(text))
    if not match:
        report.fail(where, f"drain_timeout: {text!r} is not a duration like \"5s\"")
        return None
    value, unit = float(match.group(1)), match.group(2)
    return value * {"ms": 0.001, "s": 1, "": 1, "m": 60, "h": 3600}[unit]


def port_of(address: str) -> int:
    return int(str(address).rsplit(":", 1)[-1])


def credential_env_names(plugin: dict[str, Any]) -> list[str]:
    """The VM environment variables the plugin configuration reads its secrets from."""
    source = dig(plugin, "credential", "source", default={}) or {}
    names = [source["env"]] if "env" in source else []
    oauth2 = source.get("oauth2") or {}
    for key in ("refresh_token", "client_id", "client_secret"):
        value = oauth2.get(key)
        if isinstance(value, dict) and "env" in value:
            names.append(value["env"])
    return names


def check_standalone(rendered: Rendered, directory: str, repo: Path, report: Report) -> dict[str, Any]:
    """The standalone proxy's kustomization in `directory`, whose proxy.toml and plugin.json it mounts."""
    base = repo / directory
    toml_where = f"{directory}/proxy.toml"
    facts: dict[str, Any] = {}
    try:
        proxy_text = (base / "proxy.toml").read_text(encoding="utf-8")
        proxy = tomllib.loads(proxy_text)
    except (OSError, tomllib.TOMLDecodeError) as err:
        report.fail(toml_where, f"not valid TOML: {err}")
        return facts
    plugin_text = (base / "plugin.json").read_text(encoding="utf-8")
    try:
        plugin = json.loads(plugin_text)
    except json.JSONDecodeError as err:
        report.fail(f"{directory}/plugin.json", f"not valid JSON: {err}")
        return facts
    facts["proxy"] = proxy

    deployments = rendered.of_kind("Deployment")
    if not report.check(len(deployments) == 1, rendered.target, f"expected exactly one Deployment, found {len(deployments)}"):
        return facts
    dep = deployments[0]
    where = rendered.where(dep)
    pod = dig(dep, "spec", "template")
    spec = pod["spec"]
    container = spec["containers"][0]
    selector = dig(dep, "spec", "selector", "matchLabels", default={})
    check_restricted(where, pod, report)

    # Labels: one `app` value everywhere, selectors equal to the Deployment's.
    app = selector.get("app")
    report.check(app == "ai-proxy", where, f"spec.selector.matchLabels.app: expected 'ai-proxy', found {app!r}")
    report.check(selector.items() <= dig(pod, "metadata", "labels", default={}).items(), where, "spec.template.metadata.labels: must include every selector label")
    for doc in rendered.docs:
        if doc.get("kind") == "Namespace":
            continue
        report.check(dig(doc, "metadata", "labels", "app") == app, rendered.where(doc), f"metadata.labels.app: expected {app!r}, found {dig(doc, 'metadata', 'labels', 'app')!r}")
    for svc in rendered.of_kind("Service"):
        report.check(dig(svc, "spec", "selector") == selector, rendered.where(svc), f"spec.selector: {dig(svc, 'spec', 'selector')} does not equal the Deployment selector {selector}")
    for pdb in rendered.of_kind("PodDisruptionBudget"):
        report.check(dig(pdb, "spec", "selector", "matchLabels") == selector, rendered.where(pdb), "spec.selector.matchLabels: does not equal the Deployment selector")
        min_available = dig(pdb, "spec", "minAvailable")
        max_unavailable = dig(pdb, "spec", "maxUnavailable")
        evictable = (isinstance(min_available, int) and min_available < dig(dep, "spec", "replicas", default=1)) or (isinstance(max_unavailable, int) and max_unavailable >= 1)
        report.check(evictable, rendered.where(pdb), f"spec: minAvailable {min_available!r} / maxUnavailable {max_unavailable!r} would never let a pod be evicted (node drains would block)")
    for tsc in spec.get("topologySpreadConstraints", []) or []:
        report.check(dig(tsc, "labelSelector", "matchLabels") == selector, where, "spec.template.spec.topologySpreadConstraints.labelSelector: does not equal the Deployment selector")
    ports = {p["name"]: p["containerPort"] for p in container.get("ports", [])}

    # Network policy: selects the proxy pods, default-denies both directions, names real ports.
    policies = rendered.of_kind("NetworkPolicy")
    report.check(len(policies) >= 1, rendered.target, "a NetworkPolicy for the proxy pods is required")
    for pol in policies:
        pw = rendered.where(pol)
        report.check(dig(pol, "spec", "podSelector", "matchLabels") == selector, pw, "spec.podSelector.matchLabels: does not equal the Deployment selector")
        report.check(set(dig(pol, "spec", "policyTypes", default=[])) == {"Ingress", "Egress"}, pw, "spec.policyTypes: must list Ingress and Egress")
        for rule in dig(pol, "spec", "ingress", default=[]) or []:
            for port in rule.get("ports", []) or []:
                named = port.get("port")
                report.check(named in ports or named in ports.values(), pw, f"spec.ingress.ports: {named!r} is not a port of the proxy container")

    # proxy.toml <-> container ports, probes, mounts, grace period.
    report.check(ports.get("admin") == port_of(proxy.get("admin_listen", ":9901")), where, f"ports[admin]: containerPort {ports.get('admin')} differs from proxy.toml admin_listen {proxy.get('admin_listen')!r}")
    for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
        report.check(dig(container, probe, "httpGet", "path") == path, where, f"{probe}.httpGet.path: must be {path}")
        report.check(dig(container, probe, "httpGet", "port") in ("admin", ports.get("admin")), where, f"{probe}.httpGet.port: must be the admin port")
    drain = parse_duration_seconds(proxy.get("drain_timeout", "600s"), toml_where, report)
    grace = spec.get("terminationGracePeriodSeconds")
    pre_stop = dig(container, "lifecycle", "preStop", "sleep", "seconds", default=0) or 0
    report.check(pre_stop > 0, where, "lifecycle.preStop.sleep.seconds: must give the endpoint removal time to propagate before SIGTERM")
    if drain is not None:
        report.check(grace == pre_stop + int(drain) + 1, where, f"spec.template.spec.terminationGracePeriodSeconds: {grace} must be the preStop sleep ({pre_stop} s) + drain_timeout ({drain:g} s) + 1 s")
    args = container.get("args", [])
    config_path = args[args.index("--config") + 1] if "--config" in args else None
    report.check(config_path is not None, where, "args: must pass --config <path of proxy.toml>")
    mounts = {m["name"]: m for m in container.get("volumeMounts", [])}
    volumes = {v["name"]: v for v in spec.get("volumes", [])}
    config_volume = next((v for v in volumes.values() if dig(v, "configMap", "name", default="").startswith("ai-proxy-config")), None)
    if report.check(config_volume is not None, where, "volumes: the ai-proxy-config ConfigMap must be mounted"):
        mount = mounts.get(config_volume["name"], {})
        report.check(mount.get("readOnly") is True, where, f"volumeMounts[{config_volume['name']}].readOnly: must be true")
        directory = mount.get("mountPath", "")
        for file_path, label in ((config_path, "--config"), (proxy.get("plugin_config"), "proxy.toml plugin_config")):
            report.check(file_path is not None and str(Path(file_path).parent) == directory, where, f"{label}: {file_path!r} is not in the config mount {directory!r}")
        cm = next((c for c in rendered.of_kind("ConfigMap") if c["metadata"]["name"] == config_volume["configMap"]["name"]), None)
        if report.check(cm is not None, where, "volumes: the mounted ConfigMap is not rendered by the kustomization"):
            for file_path in (config_path, proxy.get("plugin_config")):
                if file_path:
                    report.check(Path(file_path).name in cm.get("data", {}), rendered.where(cm), f"data: no key {Path(file_path).name!r} for {file_path}")
            report.check(dig(cm, "data", "proxy.toml") == proxy_text and dig(cm, "data", "plugin.json") == plugin_text, rendered.where(cm), f"data: the mounted files are not {directory}/proxy.toml and plugin.json")
    state_file = proxy.get("state_file")
    state_volume = None
    if state_file:
        writable = [m for m in mounts.values() if not m.get("readOnly") and str(state_file).startswith(m["mountPath"].rstrip("/") + "/")]
        report.check(bool(writable), where, f"volumeMounts: state_file {state_file!r} needs a writable mount (the root filesystem is read-only)")
        state_volume = volumes.get(writable[0]["name"]) if writable else None

    # The credential: Secret -> container env -> host_env_keys -> plugin source.
    env_names = credential_env_names(plugin)
    report.check(bool(env_names), f"{directory}/plugin.json", "credential.source: the standalone proxy takes its secrets from the environment (env), never inline")
    env = {e["name"]: e for e in container.get("env", [])}
    refs = []
    for env_name in env_names:
        report.check(env_name in (proxy.get("host_env_keys") or []), toml_where, f"host_env_keys: must include {env_name!r}, a variable plugin.json reads")
        ref = dig(env.get(env_name, {}), "valueFrom", "secretKeyRef", default={})
        report.check(bool(ref), where, f"env[{env_name}]: must come from a secretKeyRef, never a literal value")
        refs.append((ref.get("name"), ref.get("key")))
    for e in container.get("env", []):
        report.check("value" not in e or not re.search(r"token|key|secret", e["name"], re.I), where, f"env[{e['name']}]: credentials are never literal values")
        if dig(e, "valueFrom", "fieldRef"):
            continue  # the downward API (the pod's own address), not a credential
        report.check(e["name"] in env_names, where, f"env[{e['name']}]: not read by plugin.json; a credential the filter does not use must not be in the pod")
    facts["secret_refs"] = refs
    facts["plugin"] = plugin

    # oauth2: the token endpoint is a configured cluster; a rotating refresh token lives in one process and
    # its state file survives restarts.
    oauth2 = dig(plugin, "credential", "source", "oauth2")
    if isinstance(oauth2, dict):
        cluster = dig(oauth2, "token_endpoint", "cluster")
        report.check(cluster == "upstream" or cluster in (proxy.get("clusters") or {}), toml_where, f"clusters: no cluster {cluster!r}, the token endpoint plugin.json calls")
        if oauth2.get("grant_type") == "refresh_token":
            report.check(dig(dep, "spec", "replicas") == 1, where, "spec.replicas: a rotating refresh token must be used by one process only (two would spend each other's tokens)")
            report.check(dig(dep, "spec", "strategy", "type") == "Recreate", where, "spec.strategy.type: must be Recreate, so a rollout never runs two pods with the same refresh token")
            report.check(bool(state_file), toml_where, "state_file: required with a rotating refresh token, or a restart goes back to a spent token")
            claim = dig(state_volume, "persistentVolumeClaim", "claimName")
            report.check(bool(claim) and any(dig(c, "metadata", "name") == claim for c in rendered.of_kind("PersistentVolumeClaim")), where, f"volumes: the state_file {state_file!r} must be on a PersistentVolumeClaim the kustomization renders")

    # Tailnet exposure and caller identity: a tailscaled sidecar hands tailnet connections to the proxy on
    # loopback and answers its WhoIs; nothing else can reach the proxy's listener.
    facts["tailscale_secret_refs"] = check_tailscale_sidecar(rendered, dep, container, proxy, toml_where, report)

    namespaces = rendered.of_kind("Namespace")
    for ns in namespaces:
        report.check(dig(ns, "metadata", "labels", "pod-security.kubernetes.io/enforce") == "restricted", rendered.where(ns), "metadata.labels.pod-security.kubernetes.io/enforce: must be restricted")
    report.check(not rendered.of_kind("Secret"), rendered.target, "the kustomization must not render a Secret (apply -k would overwrite the real one)")
    report.check(dig(spec, "automountServiceAccountToken") is False, where, "spec.template.spec.automountServiceAccountToken: must be false (the proxy never calls the API server)")
    facts["container"] = container
    return facts


def check_tailscale_sidecar(rendered: Rendered, dep: dict[str, Any], proxy_container: dict[str, Any], proxy: dict[str, Any], toml_where: str, report: Report) -> list[tuple[str | None, str | None]]:
    """The identity chain of the standalone proxy: tailscaled as a native sidecar (userspace networking, node
    `ai`, state in one Secret it alone may touch, auth key from a Secret), its LocalAPI socket shared with the
    proxy, the proxy in WhoIs mode listening on loopback only, and no Service or operator proxy in front that
    would hide the caller. Returns the (Secret, key) the sidecar reads its auth key from."""
    where = rendered.where(dep)
    before = report.failures
    spec = dig(dep, "spec", "template", "spec", default={})
    identity = proxy.get("identity") or {}
    report.check(identity.get("mode") == "whois", toml_where, f"identity.mode: {identity.get('mode')!r}; the standalone proxy must resolve callers with tailscaled's WhoIs (\"whois\")")
    listen = str(proxy.get("listen", ""))
    report.check(listen.rsplit(":", 1)[0] in ("127.0.0.1", "[::1]"), toml_where, f"listen: {listen!r} must be loopback: only the tailscaled sidecar may reach the proxy, or a client around it would have no identity")
    for svc in rendered.of_kind("Service"):
        sw = rendered.where(svc)
        report.check(dig(svc, "spec", "loadBalancerClass") != "tailscale" and dig(svc, "metadata", "annotations", "tailscale.com/expose") != "true", sw, "the Tailscale operator must not expose the proxy: its proxy would hide the caller (WhoIs would see the operator's address)")
        report.check(all(p.get("targetPort") not in ("http", port_of(listen)) for p in dig(svc, "spec", "ports", default=[])), sw, "spec.ports: no Service may target the proxy's client port; clients come through the tailnet sidecar")
    args = proxy_container.get("args", [])
    admin_flag = args[args.index("--admin-listen") + 1] if "--admin-listen" in args else None
    admin_port = next((p["containerPort"] for p in proxy_container.get("ports", []) if p.get("name") == "admin"), None)
    report.check(admin_flag == f"$(POD_IP):{admin_port}", where, f"containers[proxy].args: --admin-listen must be $(POD_IP):{admin_port}; on loopback (or 0.0.0.0) tailscaled would hand tailnet connections to the admin port")
    pod_ip = {e.get("name"): e for e in proxy_container.get("env", [])}.get("POD_IP", {})
    report.check(dig(pod_ip, "valueFrom", "fieldRef", "fieldPath") == "status.podIP", where, "containers[proxy].env[POD_IP]: must come from fieldRef status.podIP (used by --admin-listen)")

    sidecars = [c for c in spec.get("initContainers", []) or [] if str(c.get("image", "")).startswith(TAILSCALE_IMAGE)]
    if not report.check(len(sidecars) == 1, where, f"spec.template.spec.initContainers: exactly one {TAILSCALE_IMAGE}<version> sidecar is required, found {len(sidecars)}"):
        return []
    ts = sidecars[0]
    at = f"initContainers[{ts.get('name')}]"
    report.check(ts.get("restartPolicy") == "Always", where, f"{at}.restartPolicy: must be Always (a native sidecar: up before the proxy starts, stopped after it exits)")
    env = {e.get("name"): e for e in ts.get("env", [])}
    value = lambda name: dig(env, name, "value")  # noqa: E731
    report.check(value("TS_HOSTNAME") == "ai", where, f"{at}.env[TS_HOSTNAME]: must be 'ai' (clients call http://ai/)")
    report.check(value("TS_USERSPACE") == "true", where, f"{at}.env[TS_USERSPACE]: must be \"true\": userspace networking hands tailnet connections to loopback and remembers their peer for WhoIs")
    auth = dig(env, "TS_AUTHKEY", "valueFrom", "secretKeyRef", default={})
    report.check(bool(auth) and "value" not in env.get("TS_AUTHKEY", {}), where, f"{at}.env[TS_AUTHKEY]: must come from a secretKeyRef, never a literal value")
    socket = value("TS_SOCKET") or "/tmp/tailscaled.sock"
    whois_socket = str(identity.get("whois_socket", "/var/run/tailscale/tailscaled.sock"))
    report.check(socket == whois_socket, where, f"{at}.env[TS_SOCKET]: {socket!r} is not proxy.toml identity.whois_socket {whois_socket!r}")
    volumes = {v["name"]: v for v in spec.get("volumes", [])}
    ts_mounts = {m["mountPath"]: m["name"] for m in ts.get("volumeMounts", [])}
    proxy_mounts = {m["mountPath"]: m["name"] for m in proxy_container.get("volumeMounts", [])}
    directory = str(Path(whois_socket).parent)
    shared = ts_mounts.get(directory)
    report.check(shared is not None and proxy_mounts.get(directory) == shared and "emptyDir" in volumes.get(shared, {}), where, f"volumes: the LocalAPI socket directory {directory} must be one emptyDir mounted by both the proxy and {at}")
    # State: one Secret, which the sidecar's service account may read and write and nothing more.
    state_secret = value("TS_KUBE_SECRET")
    report.check(bool(state_secret), where, f"{at}.env[TS_KUBE_SECRET]: the node state belongs in a Secret (a restart must not register a new node)")
    account = spec.get("serviceAccountName")
    bound_roles = {dig(b, "roleRef", "name") for b in rendered.of_kind("RoleBinding") if any(s.get("kind") == "ServiceAccount" and s.get("name") == account for s in b.get("subjects", []))}
    rules = [r for role in rendered.of_kind("Role") if dig(role, "metadata", "name") in bound_roles for r in role.get("rules", [])]
    report.check(any("secrets" in r.get("resources", []) and state_secret in (r.get("resourceNames") or []) for r in rules), rendered.target, f"Role: the pod's service account {account!r} must be allowed to read and write the Secret {state_secret!r}")
    for rule in rules:
        names = rule.get("resourceNames") or []
        report.check(bool(names) and set(names) <= {state_secret}, rendered.target, f"Role: rule {rule} must name the state Secret {state_secret!r} and nothing else")
        report.check(set(rule.get("verbs", [])) <= {"get", "update", "patch"}, rendered.target, f"Role: verbs {rule.get('verbs')} beyond get, update, patch")
    # The API token: only in the tailscale container.
    token_volumes = {n for n, v in volumes.items() if any("serviceAccountToken" in src for src in dig(v, "projected", "sources", default=[]) or [])}
    report.check(bool(token_volumes & set(ts_mounts.values())), where, f"{at}.volumeMounts: the projected service account token must be mounted (its state lives in a Secret)")
    report.check(not (token_volumes & set(proxy_mounts.values())), where, "containers[proxy].volumeMounts: the service account token must not be mounted in the proxy container")
    if report.failures == before:
        report.ok(f"{where}: tailscaled sidecar checked (WhoIs over a shared socket, loopback listener, state Secret scoped by RBAC)")
    return [(auth.get("name"), auth.get("key"))]


# --- Istio ------------------------------------------------------------------------------------------------


def check_istio(base: Rendered, example: Rendered | None, plugin: dict[str, Any], report: Report) -> dict[str, Any]:
    facts: dict[str, Any] = {}
    plugins = base.of_kind("WasmPlugin")
    if not report.check(len(plugins) == 1, base.target, f"expected one WasmPlugin, found {len(plugins)}"):
        return facts
    wp = plugins[0]
    ww = base.where(wp)
    spec = wp["spec"]
    report.check(str(spec.get("url", "")).startswith("oci://"), ww, "spec.url: must be an oci:// image reference")
    report.check(spec.get("failStrategy") == "FAIL_CLOSE", ww, "spec.failStrategy: must be FAIL_CLOSE")
    report.check(spec.get("phase") == "AUTHN", ww, "spec.phase: must be AUTHN")
    report.check(spec.get("pluginConfig") == plugin, ww, "spec.pluginConfig: differs from k8s/standalone/plugin.json (one plugin configuration for every deployment)")
    env_name = dig(plugin, "credential", "source", "env")
    env = {e.get("name"): e for e in dig(spec, "vmConfig", "env", default=[])}
    report.check(dig(env, env_name, "valueFrom") == "HOST" and "value" not in env.get(env_name, {}), ww, f"spec.vmConfig.env[{env_name}]: must be valueFrom: HOST (read from the istio-proxy environment), never an inline value")
    match_ports = sorted(p.get("number") for m in spec.get("match", []) for p in m.get("ports", []))
    report.check(bool(match_ports) and all(m.get("mode") == "CLIENT" for m in spec.get("match", [])), ww, "spec.match: must select outbound (CLIENT) traffic on the dedicated port")
    selector = dig(spec, "selector", "matchLabels", default={})
    facts.update(selector=selector, env_name=env_name)

    se = base.of_kind("ServiceEntry")
    dr = base.of_kind("DestinationRule")
    sc = base.of_kind("Sidecar")
    if report.check(len(se) == 1 and len(dr) == 1 and len(sc) == 1, base.target, "expected one ServiceEntry, DestinationRule and Sidecar"):
        se_ports = sorted(p["number"] for p in dig(se[0], "spec", "ports", default=[]))
        report.check(se_ports == match_ports, base.where(se[0]), f"spec.ports: {se_ports} must be exactly the WasmPlugin's match ports {match_ports}")
        report.check(all(p.get("targetPort") == 443 and p.get("protocol") == "HTTP" for p in dig(se[0], "spec", "ports", default=[])), base.where(se[0]), "spec.ports: the plain-HTTP port must target 443 (TLS originated by the DestinationRule)")
        host = dig(dr[0], "spec", "host")
        report.check(host in dig(se[0], "spec", "hosts", default=[]), base.where(dr[0]), f"spec.host: {host!r} is not a ServiceEntry host")
        for pls in dig(dr[0], "spec", "trafficPolicy", "portLevelSettings", default=[]):
            report.check(dig(pls, "port", "number") in match_ports, base.where(dr[0]), "portLevelSettings.port: not the dedicated port")
            report.check(dig(pls, "tls", "mode") == "SIMPLE" and dig(pls, "tls", "sni") == host, base.where(dr[0]), "portLevelSettings.tls: must be SIMPLE with sni equal to the host")
        report.check(dig(sc[0], "spec", "workloadSelector", "labels") == selector, base.where(sc[0]), "spec.workloadSelector.labels: must equal the WasmPlugin selector")
        report.check(dig(sc[0], "spec", "outboundTrafficPolicy", "mode") == "REGISTRY_ONLY", base.where(sc[0]), "spec.outboundTrafficPolicy.mode: must be REGISTRY_ONLY (no pass-through with the credential attached)")
        scoped = [e for e in dig(sc[0], "spec", "egress", default=[]) if dig(e, "port", "number") in match_ports]
        report.check(len(scoped) == 1 and scoped[0].get("hosts") == [f"./{host}"], base.where(sc[0]), f"spec.egress: the dedicated port must reach ./{host} and nothing else")
    for doc in base.docs:
        report.check(dig(doc, "metadata", "labels", "app") == "credential-filter", base.where(doc), "metadata.labels.app: expected 'credential-filter'")

    if example is not None:
        report.check(not example.of_kind("Secret"), example.target, "the kustomization must not render a Secret")
        for dep in example.of_kind("Deployment"):
            where = example.where(dep)
            pod = dig(dep, "spec", "template")
            labels = dig(pod, "metadata", "labels", default={})
            report.check(selector.items() <= labels.items(), where, f"spec.template.metadata.labels: must carry the WasmPlugin selector {selector}")
            proxy_config = yaml.load(dig(pod, "metadata", "annotations", "proxy.istio.io/config", default="") or "{}", Loader=LOADER)
            report.check("wasmcustom" in (dig(proxy_config, "proxyStatsMatcher", "inclusionPrefixes") or []), where, "spec.template.metadata.annotations.proxy.istio.io/config: proxyStatsMatcher.inclusionPrefixes must include wasmcustom, or the filter metrics are not exported")
            report.check(not dig(pod, "spec", "shareProcessNamespace"), where, "spec.template.spec.shareProcessNamespace: must stay off (it would expose the sidecar's environment)")
            containers = {c["name"]: c for c in dig(pod, "spec", "containers", default=[])}
            proxy = containers.get("istio-proxy")
            if report.check(proxy is not None, where, "spec.template.spec.containers: the istio-proxy entry carrying the credential is missing"):
                ref = next((dig(e, "valueFrom", "secretKeyRef") for e in proxy.get("env", []) if e.get("name") == env_name), None)
                report.check(bool(ref), where, f"containers[istio-proxy].env[{env_name}]: must come from a secretKeyRef")
                facts["secret_refs"] = [(dig(ref, "name"), dig(ref, "key"))]
            for name, container in containers.items():
                if name == "istio-proxy":
                    continue
                leaks = [e["name"] for e in container.get("env", []) if dig(e, "valueFrom", "secretKeyRef") or e.get("name") == env_name]
                report.check(not leaks, where, f"containers[{name}].env: application containers must not receive the credential ({leaks})")
                report.check(not container.get("envFrom"), where, f"containers[{name}].envFrom: application containers must not import Secrets")
            check_restricted(where, pod, report, skip_containers=frozenset({"istio-proxy"}))
    return facts


def check_stamped(stamped: Rendered, oci_layout: Path, report: Report) -> None:
    """The overlay written by scripts/build-oci.sh pins the WasmPlugin to the image that was built."""
    plugins = stamped.of_kind("WasmPlugin")
    if not report.check(len(plugins) == 1, stamped.target, "expected one WasmPlugin"):
        return
    wp = plugins[0]
    before = report.failures
    index = json.loads((oci_layout / "index.json").read_text(encoding="utf-8"))
    manifest = index["manifests"][0]
    digest = manifest["digest"].split(":", 1)[1]
    blob = oci_layout / "blobs" / "sha256" / digest
    actual = hashlib.sha256(blob.read_bytes()).hexdigest()
    report.check(actual == digest, str(oci_layout), f"index.json: manifest digest {digest} does not match the blob's sha256 {actual}")
    where = stamped.where(wp)
    report.check(dig(wp, "spec", "sha256") == digest, where, f"spec.sha256: {dig(wp, 'spec', 'sha256')!r} is not the built image's manifest digest {digest}")
    ref = dig(manifest, "annotations", "org.opencontainers.image.ref.name")
    url = str(dig(wp, "spec", "url", default=""))
    report.check(url.startswith("oci://") and url.endswith(f":{ref}"), where, f"spec.url: {url!r} does not name the built tag {ref!r}")
    if report.failures == before:
        report.ok(f"{where}: sha256 is the digest of the built OCI image ({digest[:12]}...)")


# --- secrets, plugin configuration, Dockerfile ------------------------------------------------------------


def check_secret_examples(repo: Path, expected: dict[str, list[tuple[str | None, str | None]]], report: Report) -> None:
    referenced: set[str] = set()

    def strings(node: Any) -> None:
        if isinstance(node, str):
            referenced.add(Path(node).name)
        elif isinstance(node, dict):
            for value in node.values():
                strings(value)
        elif isinstance(node, list):
            for value in node:
                strings(value)

    for kustomization in (repo / "k8s").rglob("kustomization.yaml"):
        for doc in load_yaml_docs(kustomization):
            strings(doc)
    for example, refs in expected.items():
        path = repo / example
        if not report.check(path.is_file(), example, "the Secret example file is missing"):
            continue
        before = report.failures
        report.check(path.name not in referenced, example, "is referenced by a kustomization: `kubectl apply -k` would overwrite the real Secret")
        docs = load_yaml_docs(path)
        if not report.check(len(docs) == 1 and docs[0].get("kind") == "Secret", example, "must hold exactly one Secret"):
            continue
        secret = docs[0]
        for version in K8S_VERSIONS:
            try:
                kubernetes_validate.validate(secret, version, strict=True)
            except kubernetes_validate.ValidationError as err:
                report.fail(example, f"{'.'.join(str(p) for p in err.path)}: {err.message} (Kubernetes {version})")
        values = {**(secret.get("stringData") or {}), **(secret.get("data") or {})}
        report.check(bool(refs), example, "no workload reads this Secret")
        for name, key in refs:
            report.check(dig(secret, "metadata", "name") == name, example, f"metadata.name: {dig(secret, 'metadata', 'name')!r} is not the Secret the workload reads ({name!r})")
            report.check(key in values, example, f"stringData: no key {key!r}, which the workload reads")
        for k, v in values.items():
            report.check(bool(PLACEHOLDER.match(str(v))), example, f"stringData.{k}: must be a <placeholder ...>, never a real value")
        if report.failures == before:
            report.ok(f"{example}: Secret example (placeholders only, outside every kustomization)")


def scan_for_tokens(repo: Path, report: Report) -> None:
    files = [p for d in ("k8s", "envoy") for p in (repo / d).rglob("*") if p.is_file()]
    files += [repo / "Dockerfile", repo / "RUNBOOK.md", repo / ".dockerignore"]
    found = 0
    for path in files:
        if not path.is_file() or path.name == "package-lock.json":
            continue
        text = path.read_text(encoding="utf-8", errors="replace")
        for number, line in enumerate(text.splitlines(), 1):
            for pattern in TOKEN_PATTERNS:
                if pattern.search(line):
                    found += 1
                    report.fail(f"{path.relative_to(repo)}:{number}", "looks like a real credential; use a <placeholder> instead")
    if not found:
        report.ok(f"no credential-like values in {len(files)} deployment files")


def envoy_plugin_configs(repo: Path) -> list[Any]:
    configs = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if dig(node, "configuration", "@type") == "type.googleapis.com/google.protobuf.StringValue":
                configs.append(json.loads(node["configuration"]["value"]))
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(yaml.load((repo / "envoy/envoy.yaml").read_text(encoding="utf-8"), Loader=LOADER))
    return configs


def check_stats_tags(repo: Path, istio_base: Rendered | None, report: Report) -> None:
    """The usage metrics' tag extraction is the same in every Envoy: envoy/envoy.yaml, the test bootstrap and
    the Istio sidecars' bootstrap patch (a difference would label the same series differently)."""
    def tags(doc: Any) -> Any:
        return dig(doc, "stats_config", "stats_tags")
    expected = tags(yaml.load((repo / "envoy/envoy.yaml").read_text(encoding="utf-8"), Loader=LOADER))
    report.check(bool(expected), "envoy/envoy.yaml", "stats_config.stats_tags: missing; the usage metrics' labels would stay in their names")
    test_bootstrap = repo / "tests/envoy/bootstrap.yaml"
    if test_bootstrap.exists():
        # A template with placeholders, not YAML yet: compare its flow-style tag entries as text.
        written = re.findall(r'\{tag_name: (\w+), regex: "((?:[^"\\]|\\.)*)"\}', test_bootstrap.read_text(encoding="utf-8"))
        pairs = [(tag.get("tag_name"), tag.get("regex")) for tag in expected or []]
        report.check([(name, regex.replace("\\\\", "\\")) for name, regex in written] == pairs,
                     str(test_bootstrap.relative_to(repo)), "stats_config.stats_tags: differs from envoy/envoy.yaml")
    if istio_base:
        patches = [dig(patch, "patch", "value") for doc in istio_base.of_kind("EnvoyFilter")
                   for patch in dig(doc, "spec", "configPatches", default=[]) if patch.get("applyTo") == "BOOTSTRAP"]
        report.check(any(tags(value) == expected for value in patches), "k8s/istio/base",
                     "EnvoyFilter: no BOOTSTRAP patch with envoy/envoy.yaml's stats_tags; the sidecars would export usage without labels")
    report.ok("stats_tags: envoy/envoy.yaml, the test bootstrap and the Istio bootstrap patch agree")


def parse_dockerfile(path: Path) -> list[tuple[int, str, str]]:
    """(line, INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    out, buffer, start = [], "", 0
    for number, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        line = raw.strip()
        if not buffer and (not line or line.startswith("#")):
            continue
        if not buffer:
            start = number
        if line.endswith("\\"):
            buffer += line[:-1] + " "
            continue
        buffer += line
        word, _, args = buffer.partition(" ")
        out.append((start, word.upper(), args.strip()))
        buffer = ""
    return out


def dockerignored(rel: str, patterns: list[str]) -> bool:
    ignored = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        pat = pattern[1:] if negate else pattern
        pat = pat.rstrip("/")
        parts = rel.split("/")
        hit = any(fnmatch.fnmatch("/".join(parts[:i]), pat) for i in range(1, len(parts) + 1))
        if pat.startswith("**/"):
            hit = hit or fnmatch.fnmatch(parts[-1], pat[3:])
        if hit:
            ignored = not negate
    return ignored


def check_dockerfile(repo: Path, proxy: dict[str, Any], report: Report) -> None:
    where = "Dockerfile"
    instructions = parse_dockerfile(repo / "Dockerfile")
    ignore = [l.strip() for l in (repo / ".dockerignore").read_text(encoding="utf-8").splitlines() if l.strip() and not l.strip().startswith("#")]
    stages = [i for i in instructions if i[1] == "FROM"]
    report.check(len(stages) >= 2, where, "must be multi-stage (build stage and runtime stage)")
    for line, _, args in stages:
        image = args.split()[0]
        tag = image.rsplit("/", 1)[-1]
        report.check(image == "scratch" or ("@sha256:" in image) or (":" in tag and not tag.endswith(":latest") and re.search(r":.*\d", tag)), f"{where}:{line}", f"FROM {image}: base images must be pinned to a version (or digest)")
    final_start = max(i for i, ins in enumerate(instructions) if ins[1] == "FROM")
    final = instructions[final_start:]
    users = [args for _, word, args in final if word == "USER"]
    report.check(bool(users) and re.fullmatch(r"[1-9]\d*(:[1-9]\d*)?", users[-1] or "") is not None, where, "USER: the runtime stage must run as a numeric non-root user")
    copies = [args for _, word, args in final if word == "COPY"]
    destinations = [c.split()[-1] for c in copies]
    report.check(proxy.get("filter") in destinations, where, f"COPY: the runtime image has no {proxy.get('filter')!r}, the filter path proxy.toml names")
    entry = " ".join(args for _, word, args in final if word in ("ENTRYPOINT", "CMD"))
    report.check("host-harness" in entry and "serve" in entry, where, "ENTRYPOINT/CMD: must run `host-harness serve`")
    exposed = {int(p.split("/")[0]) for _, word, args in final if word == "EXPOSE" for p in args.split()}
    for key in ("listen", "admin_listen"):
        # A loopback listener (the client port behind the tailscaled sidecar) is reached inside the pod only.
        if key in proxy and str(proxy[key]).rsplit(":", 1)[0] not in ("127.0.0.1", "[::1]"):
            report.check(port_of(proxy[key]) in exposed, where, f"EXPOSE: port {port_of(proxy[key])} (proxy.toml {key}) is not exposed")
    copied_dirs = []
    for line, word, args in instructions:
        if word != "COPY" or "--from=" in args:
            continue
        for source in args.split()[:-1]:
            if source.startswith("--"):
                continue
            copied_dirs.append(source.rstrip("/"))
            report.check((repo / source).exists(), f"{where}:{line}", f"COPY {source}: not in the build context")
            report.check(not dockerignored(source, ignore), f"{where}:{line}", f"COPY {source}: excluded by .dockerignore")
    # Every workspace member the build needs must be in the copied directories.
    cargo = tomllib.loads((repo / "Cargo.toml").read_text(encoding="utf-8"))
    for member in cargo.get("workspace", {}).get("members", []):
        report.check(any(member == d or member.startswith(d + "/") for d in copied_dirs), where, f"COPY: workspace member {member!r} is not copied into the build stage")
    # Files that crates embed at compile time must be inside what is copied.
    for crate_dir in copied_dirs:
        base = repo / crate_dir
        if not base.is_dir():
            continue
        for source in base.rglob("*.rs"):
            for match in re.finditer(r"include_(?:str|bytes)!\(\s*\"([^\"]+)\"", source.read_text(encoding="utf-8", errors="replace")):
                target = (source.parent / match.group(1)).resolve()
                inside = any(target.is_relative_to((repo / d).resolve()) for d in copied_dirs)
                report.check(inside, str(source.relative_to(repo)), f"include of {match.group(1)!r} is outside the Docker build context the Dockerfile copies")
    report.ok("Dockerfile: pinned multi-stage build, non-root runtime, paths and ports match proxy.toml, context complete")


def spec_metrics(repo: Path) -> set[str]:
    """The metric names the filter's spec defines (its Metrics table). A templated row such as
    `credential_filter_token_refresh_failures_<reason>_total` expands to one name per back-quoted reason
    its text lists."""
    text = (repo / "specs/filter.md").read_text(encoding="utf-8")
    section = text.split("## Metrics", 1)[-1].split("\n## ", 1)[0]
    names: set[str] = set()
    for row in re.findall(r"^\| `(credential_filter_[a-z_<>]+)(?:\{[^`]*\})?` \|(.*)$", section, flags=re.M):
        name, rest = row
        template = re.fullmatch(r"([a-z_]*)<([a-z]+)>([a-z_]*)", name)
        if template:
            after_colon = rest.split(":", 1)[-1]
            for value in re.findall(r"`([a-z_]+)`", after_colon):
                names.add(f"{template.group(1)}{value}{template.group(3)}")
        else:
            names.add(name)
    return names


def check_monitoring(repo: Path, promtool: str, report: Report) -> None:
    """Alert rules parse and pass their unit tests; the runbook's PromQL parses; metric names exist."""
    rules = repo / "k8s/monitoring/alerts.yaml"
    tests = repo / "k8s/monitoring/alerts.test.yaml"
    for args, label in ((["check", "rules", str(rules)], "k8s/monitoring/alerts.yaml"), (["test", "rules", str(tests)], "k8s/monitoring/alerts.test.yaml")):
        result = subprocess.run([promtool, *args], capture_output=True, text=True, check=False, cwd=tests.parent)
        if result.returncode == 0:
            report.ok(f"{label}: promtool {' '.join(args[:2])}")
        else:
            report.fail(label, f"promtool {' '.join(args[:2])} failed:\n" + (result.stdout + result.stderr).strip())
    runbook = (repo / "RUNBOOK.md").read_text(encoding="utf-8")
    queries = [line.strip() for block in re.findall(r"```promql\n(.*?)```", runbook, flags=re.S) for line in block.splitlines() if line.strip()]
    if report.check(bool(queries), "RUNBOOK.md", "no ```promql block found; the runbook's PromQL examples are checked from there"):
        recording = {"groups": [{"name": "runbook", "rules": [{"record": f"runbook:query_{i}", "expr": q} for i, q in enumerate(queries, 1)]}]}
        with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as handle:
            yaml.safe_dump(recording, handle)
        result = subprocess.run([promtool, "check", "rules", handle.name], capture_output=True, text=True, check=False)
        Path(handle.name).unlink()
        if result.returncode == 0:
            report.ok(f"RUNBOOK.md: {len(queries)} PromQL queries parse (promtool)")
        else:
            report.fail("RUNBOOK.md", "a PromQL query does not parse:\n" + (result.stdout + result.stderr).strip())
    known = spec_metrics(repo)
    if report.check(len(known) >= 6, "specs/filter.md", f"the Metrics table lists {sorted(known)}; expected at least the filter's six core metrics"):
        for path in (rules, repo / "RUNBOOK.md", repo / "envoy/README.md", repo / "k8s/README.md"):
            used = set(re.findall(r"\bcredential_filter_[a-z_]*[a-z](?![a-z_]*<)", path.read_text(encoding="utf-8")))
            # A histogram's series: <name>_bucket, _sum, _count.
            used = {re.sub(r"_(bucket|sum|count)$", "", n) if re.sub(r"_(bucket|sum|count)$", "", n) in known else n for n in used}
            unknown = sorted(used - known)
            report.check(not unknown, str(path.relative_to(repo)), f"metric names not defined in specs/filter.md: {unknown}")
        documented = set(re.findall(r"credential_filter_[a-z_]*[a-z]", runbook))
        families = re.findall(r"(credential_filter_[a-z_]*)<[a-z]+>([a-z_]*)", runbook)
        missing = sorted(n for n in known - documented if not any(n.startswith(a) and n.endswith(b) for a, b in families))
        report.check(not missing, "RUNBOOK.md", f"metrics from specs/filter.md not documented: {missing}")
    # The standalone proxy's own metrics, as specs/proxy.md names them, in every query and rule.
    proxy_spec = (repo / "specs/proxy.md").read_text(encoding="utf-8").split("## Metrics", 1)[-1].split("\n## ", 1)[0]
    proxy_known = set(re.findall(r"^\| `(proxy_[a-z_]+)[{`]", proxy_spec, flags=re.M))
    if report.check(bool(proxy_known), "specs/proxy.md", "no metric names found in its Metrics table"):
        expressions = queries + [r.get("expr", "") for g in (yaml.load(rules.read_text(encoding="utf-8"), Loader=LOADER) or {}).get("groups", []) for r in g.get("rules", [])]
        used = {m for e in expressions for m in re.findall(r"\b(proxy_[a-z_]+)", e)}
        unknown = sorted(m for m in used if re.sub(r"_(bucket|sum|count)$", "", m) not in proxy_known)
        report.check(not unknown, "RUNBOOK.md / k8s/monitoring/alerts.yaml", f"proxy metric names not defined in specs/proxy.md: {unknown}")


# Grafana's built-in interval variables, replaced by a fixed duration so promtool can parse a query.
GRAFANA_DURATIONS = {"$__rate_interval": "5m", "$__interval": "1m", "$__range": "1d"}


def emitted_metrics(repo: Path) -> set[str]:
    """The series names the standalone proxy's /metrics can carry, read from the code that defines them (not
    from a list kept by hand): the filter's `pub const ...: &str = "credential_filter_..."` names in
    filter/src/metrics.rs (a histogram, named with `MetricKind::Histogram` next to its constant, as
    `_bucket`, `_sum` and `_count`), and the proxy's `registry.register("proxy_...", ...)` calls in
    host-harness/cli/src/proxy/prometheus.rs (a Counter family gains `_total`, a Histogram the three series)."""
    names: set[str] = set()
    histogram_suffixes = ("_bucket", "_sum", "_count")
    filter_src = (repo / "filter/src/metrics.rs").read_text(encoding="utf-8")
    constants = dict(re.findall(r'pub const ([A-Z0-9_]+): &str =\s*"(credential_filter_[a-z0-9_]+)";', filter_src))
    histograms = set(re.findall(r"\(\s*([A-Z0-9_]+),\s*MetricKind::Histogram\s*\)", filter_src))
    for constant, name in constants.items():
        if constant in histograms:
            names.update(name + suffix for suffix in histogram_suffixes)
        else:
            names.add(name)
    proxy_src = (repo / "host-harness/cli/src/proxy/prometheus.rs").read_text(encoding="utf-8")
    for name, variable in re.findall(r'register\(\s*"(proxy_[a-z0-9_]+)",\s*"[^"]*",\s*([a-z_]+)', proxy_src):
        declaration = re.search(rf"let {variable}\b[^;]*;", proxy_src)
        text = declaration.group(0) if declaration else ""
        if "Histogram" in text:
            names.update(name + suffix for suffix in histogram_suffixes)
        elif "Counter" in text:
            names.add(name if name.endswith("_total") else name + "_total")
        else:
            names.add(name)
    return names


def check_dashboard(repo: Path, promtool: str, report: Report) -> None:
    """k8s/monitoring/dashboard.json: valid JSON with panels; every query parses (promtool, with Grafana's
    variables replaced) and names only metrics the code emits (`emitted_metrics`), so renaming a metric in
    the code fails here until the dashboard follows."""
    where = "k8s/monitoring/dashboard.json"
    try:
        dashboard = json.loads((repo / where).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        report.fail(where, f"not valid JSON: {err}")
        return
    variables = {v.get("name") for v in dig(dashboard, "templating", "list", default=[]) or []}
    exprs: list[tuple[str, str]] = []

    def collect(panels: list[dict[str, Any]]) -> None:
        for panel in panels:
            collect(panel.get("panels", []) or [])
            for target in panel.get("targets", []) or []:
                if target.get("expr"):
                    exprs.append((f"panel {panel.get('title')!r} target {target.get('refId')}", target["expr"]))
    collect(dashboard.get("panels", []) or [])
    for variable in dig(dashboard, "templating", "list", default=[]) or []:
        query = dig(variable, "query", "query") if isinstance(variable.get("query"), dict) else None
        if variable.get("type") == "query" and query:
            inner = re.fullmatch(r"label_values\((.*),\s*[a-z_]+\)", query) or re.fullmatch(r"label_values\(([a-z_]+)\)", query)
            if report.check(inner is not None, where, f"templating {variable.get('name')!r}: {query!r} is not label_values(<selector>, <label>)"):
                exprs.append((f"variable {variable.get('name')!r}", inner.group(1)))
    if not report.check(bool(exprs), where, "no PromQL expression found in the panels"):
        return
    known = emitted_metrics(repo)
    if not report.check(any(n.startswith("credential_filter_usage_") for n in known) and any(n.startswith("proxy_") for n in known), "filter/src/metrics.rs, host-harness/cli/src/proxy/prometheus.rs", f"could not read the emitted metric names from the code (found {sorted(known)})"):
        return
    rules = []
    before = report.failures
    for label, expr in exprs:
        for used in sorted(set(re.findall(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)", expr)) - {v.lstrip("$") for v in GRAFANA_DURATIONS}):
            report.check(used in variables, where, f"{label}: ${used} is not a dashboard variable")
        for name in sorted(set(re.findall(r"\b((?:credential_filter|proxy)_[a-z0-9_]+)", expr))):
            report.check(name in known, where, f"{label}: {name} is not a metric the code emits (filter/src/metrics.rs, host-harness/cli/src/proxy/prometheus.rs)")
        parsed = expr
        for variable, duration in GRAFANA_DURATIONS.items():
            parsed = parsed.replace(variable, duration)
        parsed = re.sub(r"\$\{?[A-Za-z_][A-Za-z0-9_]*\}?", ".*", parsed)
        rules.append({"record": f"dashboard:query_{len(rules) + 1}", "expr": parsed})
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as handle:
        yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}, handle)
    result = subprocess.run([promtool, "check", "rules", handle.name], capture_output=True, text=True, check=False)
    Path(handle.name).unlink()
    if result.returncode != 0:
        report.fail(where, "a PromQL query does not parse:\n" + (result.stdout + result.stderr).strip())
    elif report.failures == before:
        report.ok(f"{where}: {len(rules)} queries parse (promtool) and use only the {len(known)} series names the code emits")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repo", type=Path, required=True)
    parser.add_argument("--kubectl", required=True, help="kubectl with built-in kustomize")
    parser.add_argument("--node-dir", type=Path, required=True, help="directory holding node_modules with the Istio schemas")
    parser.add_argument("--stamped", type=Path, help="the overlay written by scripts/build-oci.sh")
    parser.add_argument("--oci-layout", type=Path, help="the OCI image layout written by scripts/build-oci.sh")
    parser.add_argument("--promtool", required=True, help="promtool, to check the alert rules and the runbook's PromQL")
    args = parser.parse_args()
    repo = args.repo.resolve()
    report = Report()

    targets = [repo / "k8s/standalone", repo / "k8s/standalone-oauth2", repo / "k8s/istio/base", repo / "k8s/istio/example"]
    targets.append(args.stamped.resolve() if args.stamped else None)
    with concurrent.futures.ThreadPoolExecutor(max_workers=len(targets)) as pool:
        futures = [pool.submit(render, args.kubectl, t, repo, report) if t else None for t in targets]
        standalone, standalone_oauth2, istio_base, istio_example, stamped = [f.result() if f else None for f in futures]
    all_rendered = [r for r in (standalone, standalone_oauth2, istio_base, istio_example, stamped) if r]

    for rendered in all_rendered:
        validate_builtin(rendered, report)
        check_unknown_kinds(rendered, report)
    validate_istio(all_rendered, args.node_dir, report)

    plugin: dict[str, Any] = {}
    proxy: dict[str, Any] = {}
    secrets: dict[str, list[tuple[str | None, str | None]]] = {}
    if standalone:
        facts = check_standalone(standalone, "k8s/standalone", repo, report)
        plugin, proxy = facts.get("plugin", {}), facts.get("proxy", {})
        secrets["k8s/standalone/secret.example.yaml"] = facts.get("secret_refs", [])
        secrets["k8s/standalone/tailscale-secret.example.yaml"] = facts.get("tailscale_secret_refs", [])
    if standalone_oauth2:
        facts = check_standalone(standalone_oauth2, "k8s/standalone-oauth2", repo, report)
        secrets["k8s/standalone-oauth2/secret.example.yaml"] = facts.get("secret_refs", [])
    if istio_base:
        facts = check_istio(istio_base, istio_example, plugin, report)
        secrets["k8s/istio/secret.example.yaml"] = facts.get("secret_refs", [])
    if stamped and args.oci_layout:
        check_stamped(stamped, args.oci_layout, report)

    for envoy_config in envoy_plugin_configs(repo):
        report.check(envoy_config == plugin, "envoy/envoy.yaml", "configuration (StringValue): differs from k8s/standalone/plugin.json (one plugin configuration for every deployment)")
    check_stats_tags(repo, istio_base, report)
    promtool = str(Path(args.promtool).resolve()) if "/" in args.promtool else args.promtool
    check_monitoring(repo, promtool, report)
    check_dashboard(repo, promtool, report)
    check_secret_examples(repo, secrets, report)
    scan_for_tokens(repo, report)
    if proxy:
        check_dockerfile(repo, proxy, report)

    print(f"manifests: {report.passes} passed, {report.failures} failed")
    return 1 if report.failures else 0


if __name__ == "__main__":
    sys.exit(main())
