"""Derives a runnable variant of envoy/envoy.yaml for this machine, leaving everything else as it is.

    derive-config.py --wasm FILE [--loopback [options]] [--in envoy/envoy.yaml] [--out FILE]

--wasm FILE      the filter module every Wasm filter loads (production uses /etc/envoy/filter.wasm).
--loopback       the test variant: everything on 127.0.0.1 and plain HTTP, for tests against local servers.
  --listen-port N       the listener's port (default 10000; 0 lets the kernel choose)
  --admin-port N        the admin port (default 9901; 0 lets the kernel choose)
  --api-upstream H:P    where cluster anthropic_api points (default 127.0.0.1:18081)
  --token-upstream H:P  where cluster anthropic_oauth points (default 127.0.0.1:18082)

In the loopback variant the clusters become STATIC with plain-HTTP endpoints, and each endpoint keeps the
production host name as its `hostname`, so `auto_host_rewrite` still sends `Host: api.anthropic.com`.
Everything the filter sees (configuration, VM settings, failure policy) is unchanged.

Bad input (a missing file, an element the production config no longer has) exits 1 naming the file and
the field.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import yaml

CLUSTERS = {"anthropic_api": "api_upstream", "anthropic_oauth": "token_upstream"}
WASM_FILTER = "envoy.filters.http.wasm"


class DeriveError(Exception):
    """The input configuration lacks something the derivation needs."""


def host_port(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise argparse.ArgumentTypeError(f"{text!r} is not HOST:PORT")
    return host, int(port)


def port(text: str) -> int:
    if not text.isdigit() or int(text) > 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number (0-65535)")
    return int(text)


def wasm_filters(config: dict[str, Any]) -> list[dict[str, Any]]:
    found = []
    for listener in config.get("static_resources", {}).get("listeners", []):
        for chain in listener.get("filter_chains", []):
            for network_filter in chain.get("filters", []):
                for http_filter in network_filter.get("typed_config", {}).get("http_filters", []):
                    if http_filter.get("name") == WASM_FILTER:
                        found.append(http_filter)
    return found


def set_wasm(config: dict[str, Any], wasm: Path, source: str) -> None:
    filters = wasm_filters(config)
    if not filters:
        raise DeriveError(f"{source}: static_resources.listeners[].filter_chains[].filters[].typed_config.http_filters: no {WASM_FILTER} filter")
    for http_filter in filters:
        local = http_filter.get("typed_config", {}).get("config", {}).get("vm_config", {}).get("code", {}).get("local")
        if not isinstance(local, dict) or "filename" not in local:
            raise DeriveError(f"{source}: {WASM_FILTER}.typed_config.config.vm_config.code.local.filename: missing")
        local["filename"] = str(wasm)


def to_loopback(config: dict[str, Any], args: argparse.Namespace, source: str) -> None:
    try:
        config["admin"]["address"]["socket_address"].update(address="127.0.0.1", port_value=args.admin_port)
    except (KeyError, TypeError) as err:
        raise DeriveError(f"{source}: admin.address.socket_address: missing") from err
    listeners = config.get("static_resources", {}).get("listeners", [])
    if not listeners:
        raise DeriveError(f"{source}: static_resources.listeners: empty")
    for listener in listeners:
        address = listener.get("address", {}).get("socket_address")
        if not isinstance(address, dict):
            raise DeriveError(f"{source}: listeners[{listener.get('name')}].address.socket_address: missing")
        address.update(address="127.0.0.1", port_value=args.listen_port)
    clusters = {c.get("name"): c for c in config.get("static_resources", {}).get("clusters", [])}
    for name, option in CLUSTERS.items():
        cluster = clusters.get(name)
        if cluster is None:
            raise DeriveError(f"{source}: static_resources.clusters: no cluster named {name}")
        host, number = getattr(args, option)
        try:
            endpoint = cluster["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]
            production_host = endpoint["address"]["socket_address"]["address"]
        except (KeyError, IndexError, TypeError) as err:
            raise DeriveError(f"{source}: clusters[{name}].load_assignment.endpoints[0].lb_endpoints[0].endpoint.address: missing") from err
        endpoint["address"]["socket_address"].update(address=host, port_value=number)
        endpoint["hostname"] = production_host
        cluster["type"] = "STATIC"
        cluster.pop("dns_lookup_family", None)
        cluster.pop("transport_socket", None)
        # Protocol auto-selection needs TLS (ALPN); the local servers speak HTTP/1.1.
        cluster.pop("typed_extension_protocol_options", None)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--in", dest="source", type=Path, default=Path(__file__).with_name("envoy.yaml"))
    parser.add_argument("--out", type=Path)
    parser.add_argument("--wasm", type=Path, required=True)
    parser.add_argument("--loopback", action="store_true")
    parser.add_argument("--listen-port", type=port, default=10000)
    parser.add_argument("--admin-port", type=port, default=9901)
    parser.add_argument("--api-upstream", type=host_port, default=("127.0.0.1", 18081))
    parser.add_argument("--token-upstream", type=host_port, default=("127.0.0.1", 18082))
    args = parser.parse_args()

    if not args.wasm.is_file():
        print(f"derive-config.py: --wasm {args.wasm}: no such file", file=sys.stderr)
        return 1
    try:
        config = yaml.safe_load(args.source.read_text(encoding="utf-8"))
        if not isinstance(config, dict):
            raise DeriveError(f"{args.source}: not a YAML mapping")
        set_wasm(config, args.wasm.resolve(), str(args.source))
        if args.loopback:
            to_loopback(config, args, str(args.source))
    except (OSError, yaml.YAMLError, DeriveError) as err:
        print(f"derive-config.py: {err}", file=sys.stderr)
        return 1
    header = f"# Derived from {args.source.name} by derive-config.py{' (loopback test variant)' if args.loopback else ''}; do not edit.\n"
    text = header + yaml.safe_dump(config, sort_keys=False, default_flow_style=False)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text, encoding="utf-8")
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
