#!/usr/bin/env python3
"""Checks that the specs name everything the code defines: every configuration field, every value of a
configuration enum, every metric, every command-line flag and every ABI import.

The names are read from the Rust sources (the configuration reader's known-field lists, serde structs that deny
unknown fields, the oauth2 field list,
metric name literals, clap long flags, the harness import table), so a field added to the code without a
line in the spec fails `make test`. A name counts as documented when it appears in backticks in the spec
(`name`, or as part of a backticked path or flag such as `credential.source.oauth2` or `--listen`).

Usage: scripts/check-specs.py [--self-test | --list]
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

ITEM = re.compile(
    r"#\[derive\(([^)]*)\)\]\s*((?:#\[[^\]]*(?:\][^\]]*)*?\]\s*)*)(?:pub(?:\([^)]*\))?\s+)?(struct|enum)\s+(\w+)[^{;]*\{",
    re.S,
)


def body_of(source: str, open_brace: int) -> str:
    """The text between the brace at `open_brace` and its matching close."""
    depth = 0
    for index in range(open_brace, len(source)):
        char = source[index]
        if char == "{":
            depth += 1
        elif char == "}":
            depth -= 1
            if depth == 0:
                return source[open_brace + 1 : index]
    return source[open_brace + 1 :]


def snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def serde_names(path: Path) -> list[str]:
    """Field names of `deny_unknown_fields` structs and variant names of snake_case enums that derive Deserialize."""
    source = path.read_text()
    names: list[str] = []
    for match in ITEM.finditer(source):
        derives, attrs, kind, _name = match.groups()
        if "Deserialize" not in derives:
            continue
        body = body_of(source, match.end() - 1)
        body = re.sub(r"//[^\n]*", "", body)
        if kind == "struct" and "deny_unknown_fields" in attrs:
            rename_next = None
            for line in body.splitlines():
                line = line.strip()
                renamed = re.match(r'#\[serde\(.*rename\s*=\s*"([^"]+)"', line)
                if renamed:
                    rename_next = renamed.group(1)
                    continue
                field = re.match(r"(?:pub(?:\([^)]*\))?\s+)?(\w+)\s*:", line)
                if field:
                    names.append(rename_next or field.group(1))
                    rename_next = None
        elif kind == "enum" and 'rename_all = "snake_case"' in attrs:
            for line in body.splitlines():
                variant = re.match(r"\s*([A-Z]\w*)\s*[,({]?", line)
                if variant and not line.strip().startswith("#"):
                    names.append(snake(variant.group(1)))
    return names


def const_list(path: Path, const: str) -> list[str]:
    source = path.read_text()
    match = re.search(rf"const\s+{const}\s*:\s*&\[&str\]\s*=\s*&\[(.*?)\];", source, re.S)
    return re.findall(r'"([^"]+)"', match.group(1)) if match else []


def literals(path: Path, pattern: str) -> list[str]:
    return sorted(set(re.findall(pattern, path.read_text())))


def clap_flags(path: Path) -> list[str]:
    """`--flag` names of clap fields marked `#[arg(long ...)]` (explicit `long = "x"` honoured)."""
    source = path.read_text()
    flags = []
    for match in re.finditer(r"#\[arg\(([^\]]*)\)\]\s*(?:///[^\n]*\n\s*)*(?:pub\s+)?(\w+)\s*:", source):
        args, field = match.groups()
        if not re.search(r"\blong\b", args):
            continue
        explicit = re.search(r'long\s*=\s*"([^"]+)"', args)
        flags.append("--" + (explicit.group(1) if explicit else field.replace("_", "-")))
    return flags


def object_fields(*paths: Path) -> list[str]:
    """The keys each `read::object(path, value, ..., &["a", "b"])` call accepts: the configuration reader's
    list of known fields per object (anything else is an unknown-field error)."""
    names: list[str] = []
    for path in paths:
        source = path.read_text()
        for call in re.finditer(r"read::object\(", source):
            depth, index = 0, call.end() - 1
            for index in range(call.end() - 1, len(source)):
                if source[index] == "(":
                    depth += 1
                elif source[index] == ")":
                    depth -= 1
                    if depth == 0:
                        break
            arguments = source[call.end():index]
            for field_list in re.findall(r"&\[([^\]]*)\]", arguments):
                for name in re.findall(r'"([a-z_][a-z0-9_]*)"', field_list):
                    if name not in names:
                        names.append(name)
    return names


def backticked(spec: Path) -> set[str]:
    """Every token that appears inside backticks in the spec, split on dots, brackets, spaces and '='."""
    tokens: set[str] = set()
    for span in re.findall(r"`([^`\n]+)`", spec.read_text()):
        tokens.add(span.strip())
        for part in re.split(r"[\s.=\[\]{}(),:\"'/]+", span):
            if part:
                tokens.add(part)
    return tokens


def checks() -> list[tuple[str, Path, list[str]]]:
    filter_src = ROOT / "filter/src"
    proxy_src = ROOT / "host-harness/cli/src/proxy"
    specs = ROOT / "specs"
    return [
        ("filter configuration field", specs / "filter.md", object_fields(filter_src / "config.rs", filter_src / "token/config.rs")),
        ("oauth2 configuration field", specs / "filter.md", const_list(filter_src / "token/config.rs", "FIELDS")),
        ("filter metric", specs / "filter.md", literals(filter_src / "metrics.rs", r'"(credential_filter_[a-z0-9_]+)"')),
        ("proxy configuration field", specs / "proxy.md", serde_names(proxy_src / "config.rs")),
        ("proxy flag", specs / "proxy.md", clap_flags(proxy_src / "cli.rs")),
        ("proxy metric", specs / "proxy.md", literals(proxy_src / "prometheus.rs", r'register\(\s*"([a-z0-9_]+)"')),
        ("ABI import", specs / "host-harness.md", literals(ROOT / "host-harness/src/abi/mod.rs", r'"(proxy_[a-z0-9_]+)"')),
    ]


def run() -> int:
    missing = []
    counted = 0
    for what, spec, names in checks():
        if not names:
            missing.append(f"{what}: no names found in the code (has the source moved?)")
            continue
        documented = backticked(spec)
        for name in names:
            counted += 1
            # Counters are exposed with a `_total` suffix that the registry adds to the registered name.
            found = name in documented or (what == "proxy metric" and f"{name}_total" in documented)
            if not found:
                missing.append(f"{spec.relative_to(ROOT)}: {what} `{name}` is not documented")
    for line in missing:
        print(line)
    print(f"specs: {counted - len(missing)} names documented, {len(missing)} missing")
    return 1 if missing else 0


def self_test() -> int:
    """The extractors must find names that are known to exist, or the check above could pass vacuously."""
    expected = {
        "filter configuration field": {"credential", "strip_request_headers", "on_missing_credential", "path_prefix"},
        "filter metric": {"credential_filter_requests_total"},
        "proxy configuration field": {"listen", "drain_timeout"},
        "proxy flag": {"--listen", "--admin-listen"},
        "ABI import": {"proxy_http_call", "proxy_log"},
    }
    failures = 0
    for what, _spec, names in checks():
        absent = expected.get(what, set()) - set(names)
        if absent:
            failures += 1
            print(f"self-test: {what} extractor missed {sorted(absent)}")
    print(f"self-test: {len(expected) - failures} passed, {failures} failed")
    return 1 if failures else 0


def list_names() -> int:
    for what, spec, names in checks():
        print(f"{what} ({spec.relative_to(ROOT)}): {', '.join(names)}")
    return 0


if __name__ == "__main__":
    if "--list" in sys.argv:
        sys.exit(list_names())
    sys.exit(self_test() or run() if "--self-test" in sys.argv else run())
