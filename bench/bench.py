#!/usr/bin/env python3
"""Throughput and latency of `host-harness serve` against nginx and Envoy, on 127.0.0.1 only.

One run measures, interleaved round by round, the same small-response workload with the same header
injection through:

  direct   the upstream itself (an nginx answering a fixed JSON body), the ceiling
  harness  `host-harness serve` (release build) running filter.wasm with the Anthropic preset
  nginx    nginx with proxy_set_header for the same headers and a keep-alive upstream pool
  envoy    Envoy with the same filter.wasm (V8), when scripts/install-envoy.sh can provide it

Load comes from wrk (one thread) at 1 and 32 connections. Every proxy gets the same number of
workers. Reported per target and connection count: requests per second, p50/p99 latency and the
target's own CPU time per request (medians over the rounds), and each proxy's ratio to nginx. CPU per
request is the steadier figure on a shared machine: it does not depend on what else got the cores.

A second case measures the cost of usage accounting on event streams: two `host-harness serve`
instances with the same filter.wasm, one with the Anthropic preset's usage accounting on and one with
`"usage": {"enabled": false}`, in front of an upstream that answers every request with a recorded-shape
Messages API event stream of realistic size (message_start, 400 content_block_delta events of a few
words each, message_delta, message_stop: about 60 KB), each event written and flushed on its own as the
API does. Interleaved rounds at 1 and 8 connections; reported: streams per second, p50/p99 of a whole
stream, CPU per stream, the throughput ratio on/off, and the added latency and CPU per event.

Environment: BENCH_HARNESS (the binary, default target/release/host-harness), BENCH_FILTER (the filter.wasm to run,
default the shipped build, target/wasm/filter.wasm), BENCH_COMPARE_FILTER (another filter.wasm, say the previous build: the streaming
case then runs it too, usage on and off, in the same interleaved rounds, and reports it beside), BENCH_ROUNDS (default 3), BENCH_DURATION seconds per measurement (default 5),
BENCH_WORKERS (default: the number of CPUs), BENCH_SKIP_ENVOY=1, BENCH_CASES (`requests,streaming,memory`,
the default, or some of them).

A third case, `memory` (bench/memory.py), measures memory per client connection beside nginx: idle
keep-alive, holding a maximal partial request head, and an open event stream.
"""

import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
HARNESS = Path(os.environ.get("BENCH_HARNESS", ROOT / "target" / "release" / "host-harness"))
FILTER = Path(os.environ.get("BENCH_FILTER", ROOT / "target" / "wasm" / "filter.wasm"))
RESULTS = ROOT / "build" / "bench" / "results.json"

TOKEN = "sk-ant-oat01-bench-token"
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "3"))
DURATION = int(os.environ.get("BENCH_DURATION", "5"))
WORKERS = int(os.environ.get("BENCH_WORKERS", str(os.cpu_count() or 2)))
CONNECTIONS = [1, 32]
RESPONSE_BODY = '{"id":"msg_bench","type":"message","role":"assistant","content":[{"type":"text","text":"ok"}]}'
PLUGIN_CONFIG = (
    '{"credential":{"header":"authorization","prefix":"Bearer ","source":{"env":"ANTHROPIC_OAUTH_TOKEN"}},'
    '"preset":"anthropic"}'
)


def log(message):
    print(message, file=sys.stderr, flush=True)


def free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def ensure_debian_tools():
    missing = [tool for tool in ("wrk", "nginx") if shutil.which(tool) is None and not Path(f"/usr/sbin/{tool}").exists()]
    if not missing:
        return
    log(f"installing {' '.join(missing)} with apt-get")
    # Keep the package's init script from starting a system nginx on port 80.
    policy = Path("/usr/sbin/policy-rc.d")
    created_policy = False
    if not policy.exists():
        policy.write_text("#!/bin/sh\nexit 101\n")
        policy.chmod(0o755)
        created_policy = True
    try:
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        subprocess.run(["apt-get", "update", "-qq"], check=True, env=env)
        subprocess.run(["apt-get", "install", "-y", "-qq", "--no-install-recommends", *missing], check=True, env=env)
    finally:
        if created_policy:
            policy.unlink()


def nginx_binary():
    return shutil.which("nginx") or "/usr/sbin/nginx"


def wait_http(url, accept=(200,), timeout=60.0, what="service"):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status in accept:
                    return
                last = f"status {response.status}"
        except urllib.error.HTTPError as error:
            if error.code in accept:
                return
            last = f"status {error.code}"
        except OSError as error:
            last = str(error)
        time.sleep(0.1)
    raise RuntimeError(f"{what} at {url} did not come up: {last}")


class Service:
    """A child process started for the benchmark and stopped at the end, whatever happens."""

    def __init__(self, name, argv, env=None, cwd=None, preexec_fn=None):
        self.name = name
        self.log_path = Path(tempfile.mkstemp(prefix=f"bench-{name}-", suffix=".log")[1])
        self.log_file = open(self.log_path, "wb")
        self.process = subprocess.Popen(argv, env=env, cwd=cwd, stdout=self.log_file, stderr=subprocess.STDOUT, start_new_session=True, preexec_fn=preexec_fn)

    def check_alive(self):
        if self.process.poll() is not None:
            output = self.log_path.read_text(errors="replace")[-2000:]
            raise RuntimeError(f"{self.name} exited with {self.process.returncode}:\n{output}")

    def stop(self):
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.log_file.close()


def nginx_config(directory, body):
    return f"""
worker_processes {WORKERS};
daemon off;
pid {directory}/nginx.pid;
error_log stderr warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {directory}/body;
    proxy_temp_path {directory}/proxy;
    fastcgi_temp_path {directory}/fastcgi;
    uwsgi_temp_path {directory}/uwsgi;
    scgi_temp_path {directory}/scgi;
    keepalive_requests 1000000;
    keepalive_timeout 120s;
{body}
}}
"""


def start_upstream(directory, port):
    directory.mkdir(parents=True, exist_ok=True)
    body = f"""
    server {{
        listen 127.0.0.1:{port} reuseport;
        location / {{
            default_type application/json;
            return 200 '{RESPONSE_BODY}';
        }}
    }}"""
    conf = directory / "nginx.conf"
    # The upstream gets one worker in every measurement, so it costs every target the same.
    conf.write_text(nginx_config(directory, body).replace(f"worker_processes {WORKERS};", "worker_processes 1;"))
    return Service("upstream", [nginx_binary(), "-p", str(directory), "-c", str(conf), "-e", "stderr"])


def start_nginx_proxy(directory, port, upstream_port):
    directory.mkdir(parents=True, exist_ok=True)
    body = f"""
    upstream backend {{
        server 127.0.0.1:{upstream_port};
        keepalive 256;
    }}
    server {{
        listen 127.0.0.1:{port} reuseport;
        location / {{
            proxy_pass http://backend;
            proxy_http_version 1.1;
            proxy_buffering off;
            proxy_set_header Connection "";
            proxy_set_header Host 127.0.0.1:{upstream_port};
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_set_header Authorization "Bearer {TOKEN}";
            proxy_set_header X-Api-Key "";
            proxy_set_header Anthropic-Version "2023-06-01";
            proxy_set_header Anthropic-Beta "oauth-2025-04-20";
        }}
    }}"""
    conf = directory / "nginx.conf"
    conf.write_text(nginx_config(directory, body))
    return Service("nginx", [nginx_binary(), "-p", str(directory), "-c", str(conf), "-e", "stderr"])


def start_harness(port, admin_port, upstream_port):
    env = dict(os.environ, ANTHROPIC_OAUTH_TOKEN=TOKEN)
    env.pop("RUST_LOG", None)
    argv = [
        str(HARNESS), "serve",
        "--listen", f"127.0.0.1:{port}",
        "--admin-listen", f"127.0.0.1:{admin_port}",
        "--upstream", f"http://127.0.0.1:{upstream_port}",
        "--filter", str(FILTER),
        "--workers", str(WORKERS),
        "--log-level", "warn",
    ]
    service = Service("harness", argv, env=env)
    wait_http(f"http://127.0.0.1:{admin_port}/readyz", what="host-harness serve")
    return service


def envoy_binary():
    if os.environ.get("BENCH_SKIP_ENVOY") == "1":
        return None
    script = ROOT / "scripts" / "install-envoy.sh"
    if not script.exists():
        log("envoy: scripts/install-envoy.sh is missing; skipping Envoy")
        return None
    result = subprocess.run([str(script)], capture_output=True, text=True)
    path = result.stdout.strip().splitlines()[-1] if result.stdout.strip() else ""
    if result.returncode != 0 or not path or not Path(path).exists():
        log(f"envoy: not available ({result.stderr.strip()[-300:]}); skipping Envoy")
        return None
    return path


def start_envoy(binary, directory, port, admin_port, upstream_port):
    directory.mkdir(parents=True, exist_ok=True)
    bootstrap = {
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": admin_port}}},
        "static_resources": {
            "listeners": [{
                "name": "ingress",
                "address": {"socket_address": {"address": "127.0.0.1", "port_value": port}},
                "filter_chains": [{"filters": [{
                    "name": "envoy.filters.network.http_connection_manager",
                    "typed_config": {
                        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
                        "stat_prefix": "ingress",
                        "codec_type": "AUTO",
                        "route_config": {"name": "local", "virtual_hosts": [{
                            "name": "all", "domains": ["*"],
                            "routes": [{"match": {"prefix": "/"}, "route": {"cluster": "upstream", "auto_host_rewrite": True}}],
                        }]},
                        "http_filters": [
                            {"name": "envoy.filters.http.wasm", "typed_config": {
                                "@type": "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm",
                                "config": {
                                    "name": "credential-filter",
                                    "root_id": "",
                                    "configuration": {"@type": "type.googleapis.com/google.protobuf.StringValue", "value": PLUGIN_CONFIG},
                                    "vm_config": {
                                        "vm_id": "credential-filter",
                                        "runtime": "envoy.wasm.runtime.v8",
                                        "environment_variables": {"key_values": {"ANTHROPIC_OAUTH_TOKEN": TOKEN}},
                                        "code": {"local": {"filename": str(FILTER)}},
                                    },
                                },
                            }},
                            {"name": "envoy.filters.http.router", "typed_config": {
                                "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}},
                        ],
                    },
                }]}],
            }],
            "clusters": [{
                "name": "upstream",
                "type": "STATIC",
                "connect_timeout": "5s",
                "load_assignment": {"cluster_name": "upstream", "endpoints": [{"lb_endpoints": [{"endpoint": {
                    "address": {"socket_address": {"address": "127.0.0.1", "port_value": upstream_port}}}}]}]},
            }],
        },
    }
    config = directory / "envoy.json"
    config.write_text(json.dumps(bootstrap))
    argv = [binary, "-c", str(config), "--concurrency", str(WORKERS), "--log-level", "warn", "--base-id", str(os.getpid() % 60000)]
    service = Service("envoy", argv)
    wait_http(f"http://127.0.0.1:{admin_port}/ready", what="envoy")
    return service


CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def session_cpu_seconds(session):
    """User plus system CPU time of every live process in a session (a service and its workers)."""
    total = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        # Fields after the command name, which is in parentheses and may contain spaces.
        fields = text[text.rfind(")") + 2:].split()
        if int(fields[3]) == session:
            total += int(fields[11]) + int(fields[12])
    return total / CLOCK_TICKS


def to_ms(text):
    for unit, factor in (("us", 0.001), ("ms", 1.0), ("s", 1000.0)):
        if text.endswith(unit):
            return float(text[: -len(unit)]) * factor
    return float(text)


def run_wrk(port, connections, duration):
    argv = [
        "wrk", "-t1", f"-c{connections}", f"-d{duration}s", "--latency", "--timeout", "5s",
        "-H", "x-api-key: client-supplied-key",
        "-H", "content-type: application/json",
        f"http://127.0.0.1:{port}/v1/messages",
    ]
    output = subprocess.run(argv, capture_output=True, text=True, timeout=duration + 30).stdout
    result = {"rps": 0.0, "p50_ms": None, "p99_ms": None, "errors": 0, "requests": 0}
    in_distribution = False
    for line in output.splitlines():
        stripped = line.strip()
        if stripped.startswith("Latency Distribution"):
            in_distribution = True
            continue
        if in_distribution and stripped.startswith("50%"):
            result["p50_ms"] = to_ms(stripped.split()[1])
        elif in_distribution and stripped.startswith("99%"):
            result["p99_ms"] = to_ms(stripped.split()[1])
            in_distribution = False
        elif "requests in" in stripped:
            result["requests"] = int(stripped.split()[0])
        elif stripped.startswith("Requests/sec:"):
            result["rps"] = float(stripped.split()[1])
        elif stripped.startswith("Non-2xx or 3xx responses:"):
            result["errors"] += int(stripped.split()[-1])
        elif stripped.startswith("Socket errors:"):
            result["errors"] += sum(int(part.strip().split()[-1]) for part in stripped.split(":", 1)[1].split(","))
    if result["p99_ms"] is None:
        raise RuntimeError(f"could not read wrk's output:\n{output}")
    return result


def check_target(name, port):
    request = urllib.request.Request(f"http://127.0.0.1:{port}/v1/messages", headers={"x-api-key": "client-supplied-key"})
    with urllib.request.urlopen(request, timeout=5) as response:
        body = response.read().decode()
        if response.status != 200 or "msg_bench" not in body:
            raise RuntimeError(f"{name}: unexpected answer {response.status} {body[:200]}")


STREAM_DELTAS = 400
STREAM_CONNECTIONS = [1, 8]
USAGE_OFF_CONFIG = PLUGIN_CONFIG[:-1] + ',"usage":{"enabled":false}}'


def stream_events():
    """A recorded-shape Messages API event stream: one bytes object per event."""
    usage = '{"input_tokens":1200,"cache_creation_input_tokens":0,"cache_read_input_tokens":800,"output_tokens":1,"service_tier":"standard"}'
    events = [
        'event: message_start\ndata: {"type":"message_start","message":{"id":"msg_bench","type":"message","role":"assistant",'
        f'"model":"claude-sonnet-4-5-20250929","content":[],"stop_reason":null,"stop_sequence":null,"usage":{usage}}}}}\n\n',
        'event: content_block_start\ndata: {"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}\n\n',
        'event: ping\ndata: {"type": "ping"}\n\n',
    ]
    words = ["The", " proxy", " reads", " usage", " as", " events", " pass,", " never", " holding", " them."]
    for index in range(STREAM_DELTAS):
        text = "".join(words[(index + k) % len(words)] for k in range(3))
        events.append(
            'event: content_block_delta\ndata: {"type":"content_block_delta","index":0,'
            f'"delta":{{"type":"text_delta","text":"{text}"}}}}\n\n'
        )
    events.append('event: content_block_stop\ndata: {"type":"content_block_stop","index":0}\n\n')
    events.append(
        'event: message_delta\ndata: {"type":"message_delta","delta":{"stop_reason":"end_turn","stop_sequence":null},'
        f'"usage":{{"output_tokens":{STREAM_DELTAS * 3}}}}}\n\n'
    )
    events.append('event: message_stop\ndata: {"type":"message_stop"}\n\n')
    return [event.encode() for event in events]


def serve_event_streams(port):
    """The streaming upstream (run as its own process): every request on every keep-alive connection is
    answered with the event stream, one chunked-encoding chunk per event, each sent on its own."""
    import socketserver

    head = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream; charset=utf-8\r\ncache-control: no-cache\r\ntransfer-encoding: chunked\r\n\r\n"
    chunks = [b"%x\r\n%s\r\n" % (len(event), event) for event in stream_events()] + [b"0\r\n\r\n"]

    class Handler(socketserver.BaseRequestHandler):
        def handle(self):
            sock = self.request
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            buffered = b""
            while True:
                while b"\r\n\r\n" not in buffered:
                    data = sock.recv(65536)
                    if not data:
                        return
                    buffered += data
                header, buffered = buffered.split(b"\r\n\r\n", 1)
                length = 0
                for line in header.split(b"\r\n")[1:]:
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value.strip())
                while len(buffered) < length:
                    data = sock.recv(65536)
                    if not data:
                        return
                    buffered += data
                buffered = buffered[length:]
                sock.sendall(head)
                for chunk in chunks:
                    sock.sendall(chunk)

    class Server(socketserver.ThreadingTCPServer):
        daemon_threads = True
        allow_reuse_address = True

    with Server(("127.0.0.1", port), Handler) as server:
        server.serve_forever()


def start_stream_upstream(port):
    service = Service("sse-upstream", [sys.executable, str(Path(__file__).resolve()), "--serve-event-streams", str(port)])
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return service
        service.check_alive()
        time.sleep(0.05)
    raise RuntimeError("the streaming upstream did not come up")


def start_streaming_harness(directory, name, port, admin_port, upstream_port, plugin_config, wasm=FILTER):
    directory.mkdir(parents=True, exist_ok=True)
    config = directory / f"{name}.json"
    config.write_text(plugin_config)
    env = dict(os.environ, ANTHROPIC_OAUTH_TOKEN=TOKEN)
    env.pop("RUST_LOG", None)
    argv = [
        str(HARNESS), "serve",
        "--listen", f"127.0.0.1:{port}",
        "--admin-listen", f"127.0.0.1:{admin_port}",
        "--upstream", f"http://127.0.0.1:{upstream_port}",
        "--filter", str(wasm),
        "--plugin-config", str(config),
        "--workers", str(WORKERS),
        # The per-request usage line is an info line: off here, so the case measures the accounting,
        # not the log writer (which is the same for every info line).
        "--log-level", "warn",
    ]
    service = Service(name, argv, env=env)
    wait_http(f"http://127.0.0.1:{admin_port}/readyz", what=f"host-harness serve ({name})")
    return service


def check_stream(name, port, admin_port, counted):
    request = urllib.request.Request(f"http://127.0.0.1:{port}/v1/messages", headers={"x-api-key": "client-supplied-key"})
    with urllib.request.urlopen(request, timeout=10) as response:
        body = response.read()
    if response.status != 200 or body != b"".join(stream_events()):
        raise RuntimeError(f"{name}: the stream arrived changed ({response.status}, {len(body)} bytes)")
    with urllib.request.urlopen(f"http://127.0.0.1:{admin_port}/metrics", timeout=5) as response:
        metrics = response.read().decode()
    counting = "credential_filter_usage_tokens_total" in metrics
    if counting != counted:
        raise RuntimeError(f"{name}: usage metrics {'missing' if counted else 'present'}:\n{metrics[-1500:]}")


def streaming_case():
    work = Path(tempfile.mkdtemp(prefix="proxy-bench-streams-"))
    builds = [("", FILTER)]
    if os.environ.get("BENCH_COMPARE_FILTER"):
        builds.append(("compare-", Path(os.environ["BENCH_COMPARE_FILTER"])))
    services = []
    events = len(stream_events())
    size = sum(len(event) for event in stream_events())
    try:
        upstream_port = free_port()
        services.append(start_stream_upstream(upstream_port))
        targets, owners = {}, {}
        for prefix, wasm in builds:
            for usage, config, counted in (("on", PLUGIN_CONFIG, True), ("off", USAGE_OFF_CONFIG, False)):
                name = f"{prefix}usage-{usage}"
                port, admin = free_port(), free_port()
                services.append(start_streaming_harness(work, name, port, admin, upstream_port, config, wasm))
                check_stream(name, port, admin, counted)
                targets[name], owners[name] = port, services[-1]
        log("streaming: warming up")
        for port in targets.values():
            run_wrk(port, 8, 2)
        samples = {(name, c): [] for name in targets for c in STREAM_CONNECTIONS}
        names = list(targets)
        for round_index in range(ROUNDS):
            order = names if round_index % 2 == 0 else names[::-1]
            for connections in STREAM_CONNECTIONS:
                for name in order:
                    for service in services:
                        service.check_alive()
                    session = owners[name].process.pid
                    cpu_before = session_cpu_seconds(session)
                    result = run_wrk(targets[name], connections, DURATION)
                    cpu = session_cpu_seconds(session) - cpu_before
                    result["cpu_us"] = cpu * 1e6 / result["requests"] if result["requests"] else float("nan")
                    samples[(name, connections)].append(result)
                    log(f"streaming round {round_index + 1}/{ROUNDS} c={connections} {name:<17} {result['rps']:>8.1f} streams/s  p50 {result['p50_ms']:.2f} ms  p99 {result['p99_ms']:.2f} ms  cpu {result['cpu_us']:.0f} us/stream")
    finally:
        for service in reversed(services):
            service.stop()
        shutil.rmtree(work, ignore_errors=True)

    summary = {}
    for (name, connections), results in samples.items():
        summary[f"{name}/c{connections}"] = {
            "streams_per_s": statistics.median(r["rps"] for r in results),
            "p50_ms": statistics.median(r["p50_ms"] for r in results),
            "p99_ms": statistics.median(r["p99_ms"] for r in results),
            "errors": sum(r["errors"] for r in results),
            "cpu_us": statistics.median(r["cpu_us"] for r in results),
        }
    print()
    print(f"streaming: {events}-event answers ({size / 1024:.0f} KiB), usage on vs off, {ROUNDS} rounds x {DURATION}s, {WORKERS} workers, medians")
    print(f"{'target':<18}{'conns':>6}{'streams/s':>11}{'p50 ms':>9}{'p99 ms':>9}{'cpu us/stream':>15}{'errors':>8}")
    for connections in STREAM_CONNECTIONS:
        for name in targets:
            row = summary[f"{name}/c{connections}"]
            print(f"{name:<18}{connections:>6}{row['streams_per_s']:>11.1f}{row['p50_ms']:>9.2f}{row['p99_ms']:>9.2f}{row['cpu_us']:>15.0f}{row['errors']:>8}")
    derived = {}
    for (prefix, wasm), connections in ((build, c) for build in builds for c in STREAM_CONNECTIONS):
        on, off = summary[f"{prefix}usage-on/c{connections}"], summary[f"{prefix}usage-off/c{connections}"]
        derived[f"{prefix}c{connections}"] = {
            "throughput_ratio": on["streams_per_s"] / off["streams_per_s"] if off["streams_per_s"] else float("nan"),
            "added_latency_us_per_event": (on["p50_ms"] - off["p50_ms"]) * 1000 / events,
            "added_cpu_us_per_event": (on["cpu_us"] - off["cpu_us"]) / events,
        }
        row = derived[f"{prefix}c{connections}"]
        print(f"{prefix}c={connections} ({wasm.name}): throughput on/off {row['throughput_ratio']:.3f}; added per event: {row['added_latency_us_per_event']:.2f} us latency (p50 of a stream / events), {row['added_cpu_us_per_event']:.2f} us CPU")
    return {"events": events, "bytes": size, "results": summary, "usage_cost": derived}


def main():
    if len(sys.argv) == 3 and sys.argv[1] == "--serve-event-streams":
        serve_event_streams(int(sys.argv[2]))
        return
    for path, hint in ((HARNESS, "make build"), (FILTER, "make filter")):
        if not path.exists():
            sys.exit(f"bench: {path} is missing; run `{hint}` first")
    ensure_debian_tools()
    cases = set(os.environ.get("BENCH_CASES", "requests,streaming,memory").split(","))
    streaming = streaming_case() if "streaming" in cases else None
    memory_results = None
    if "memory" in cases:
        import memory

        memory_work = Path(tempfile.mkdtemp(prefix="proxy-bench-memory-"))
        try:
            memory_results = memory.memory_case(memory_work)
        finally:
            shutil.rmtree(memory_work, ignore_errors=True)
    if "requests" not in cases:
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(json.dumps({"rounds": ROUNDS, "duration_s": DURATION, "workers": WORKERS, "streaming": streaming, "memory": memory_results}, indent=2))
        print(f"\nresults: {RESULTS.relative_to(ROOT)}")
        return
    envoy = envoy_binary()

    work = Path(tempfile.mkdtemp(prefix="proxy-bench-"))
    services = []
    try:
        upstream_port = free_port()
        services.append(start_upstream(work / "upstream", upstream_port))
        owners = {"direct": services[-1]}
        wait_http(f"http://127.0.0.1:{upstream_port}/", what="upstream nginx")
        targets = {"direct": upstream_port}

        harness_port, harness_admin = free_port(), free_port()
        services.append(start_harness(harness_port, harness_admin, upstream_port))
        targets["harness"] = harness_port
        owners["harness"] = services[-1]

        nginx_port = free_port()
        services.append(start_nginx_proxy(work / "nginx", nginx_port, upstream_port))
        wait_http(f"http://127.0.0.1:{nginx_port}/", what="nginx")
        targets["nginx"] = nginx_port
        owners["nginx"] = services[-1]

        if envoy:
            envoy_port, envoy_admin = free_port(), free_port()
            try:
                services.append(start_envoy(envoy, work / "envoy", envoy_port, envoy_admin, upstream_port))
                targets["envoy"] = envoy_port
                owners["envoy"] = services[-1]
            except RuntimeError as error:
                log(f"envoy: {error}; skipping Envoy")

        for name, port in targets.items():
            check_target(name, port)

        log(f"warming up ({', '.join(targets)})")
        for port in targets.values():
            run_wrk(port, 32, 2)

        samples = {(name, c): [] for name in targets for c in CONNECTIONS}
        names = list(targets)
        for round_index in range(ROUNDS):
            # Rotate the order every round so no target always runs right after another.
            order = names[round_index % len(names):] + names[: round_index % len(names)]
            for connections in CONNECTIONS:
                for name in order:
                    for service in services:
                        service.check_alive()
                    session = owners[name].process.pid
                    cpu_before = session_cpu_seconds(session)
                    result = run_wrk(targets[name], connections, DURATION)
                    cpu = session_cpu_seconds(session) - cpu_before
                    result["cpu_us"] = cpu * 1e6 / result["requests"] if result["requests"] else float("nan")
                    samples[(name, connections)].append(result)
                    log(f"round {round_index + 1}/{ROUNDS} c={connections:>2} {name:<8} {result['rps']:>10.0f} rps  p50 {result['p50_ms']:.3f} ms  p99 {result['p99_ms']:.3f} ms  cpu {result['cpu_us']:.1f} us/req")
    finally:
        for service in reversed(services):
            service.stop()
        shutil.rmtree(work, ignore_errors=True)

    summary = {}
    for (name, connections), results in samples.items():
        summary[f"{name}/c{connections}"] = {
            "rps": statistics.median(r["rps"] for r in results),
            "p50_ms": statistics.median(r["p50_ms"] for r in results),
            "p99_ms": statistics.median(r["p99_ms"] for r in results),
            "errors": sum(r["errors"] for r in results),
            "cpu_us": statistics.median(r["cpu_us"] for r in results),
        }

    print()
    print(f"{ROUNDS} rounds x {DURATION}s, {WORKERS} workers per proxy, wrk -t1, medians; ratios are target/nginx;")
    print("cpu: the target's own CPU time (user + system, all its processes) per request; for direct, the upstream's")
    print(f"{'target':<9}{'conns':>6}{'rps':>12}{'p50 ms':>10}{'p99 ms':>10}{'rps/nginx':>11}{'p99/nginx':>11}{'cpu us':>9}{'errors':>8}")
    for connections in CONNECTIONS:
        reference = summary.get(f"nginx/c{connections}")
        for name in targets:
            row = summary[f"{name}/c{connections}"]
            rps_ratio = row["rps"] / reference["rps"] if reference and reference["rps"] else float("nan")
            p99_ratio = row["p99_ms"] / reference["p99_ms"] if reference and reference["p99_ms"] else float("nan")
            print(f"{name:<9}{connections:>6}{row['rps']:>12.0f}{row['p50_ms']:>10.3f}{row['p99_ms']:>10.3f}{rps_ratio:>11.2f}{p99_ratio:>11.2f}{row['cpu_us']:>9.1f}{row['errors']:>8}")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({"rounds": ROUNDS, "duration_s": DURATION, "workers": WORKERS, "results": summary, "streaming": streaming, "memory": memory_results}, indent=2))
    print(f"\nresults: {RESULTS.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
