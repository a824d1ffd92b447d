"""Memory per client connection of `host-harness serve` beside nginx, in one run (`make bench`).

Three shapes of connection, each measured on a freshly started target (so memory a previous shape
freed cannot be reused and hide a cost):

  idle      a keep-alive connection that made one request and now waits
  head      a connection holding a maximal partial request head (60 KiB of header lines, never ended):
            what a client costs before it sends a single complete request
  sse       an open server-sent-event stream: request forwarded, response headers and a first event
            relayed, the upstream holding the stream open

Figure: the growth of the target's resident memory (all its processes) from N/4 to N such connections
open, divided by the 3N/4 added: a slope, so neither the memory a fresh process still gives back after
start-up nor one-time growth of its tables (which the first quarter absorbs) counts as per-connection
cost. The totals with none and with N open are printed too. nginx gets the same head limit (`large_client_header_buffers 4 16k`, 64 KiB)
and `proxy_buffering off`. Goals (issue 12): idle <= 8 KiB, head <= 80 KiB, 10,000 SSE streams within
256 MiB (projected from the measured streams when fewer fit in the file-descriptor limit).

Environment: BENCH_MEMORY_CONNECTIONS (idle and head connections, default 2000), BENCH_SSE_STREAMS
(default 9000, or what the descriptor limit allows: every stream is two descriptors in the proxy),
BENCH_MEMORY_SHAPES (default `idle,head,sse`).
"""

import asyncio
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import bench as b

HEAD_BYTES = 60 * 1024
CONNECTIONS = int(os.environ.get("BENCH_MEMORY_CONNECTIONS", "2000"))
PAGE = os.sysconf("SC_PAGE_SIZE")
GOALS = {"idle": 8 * 1024, "head": 80 * 1024}
SSE_GOAL_STREAMS = 10_000
SSE_GOAL_BYTES = 256 * 1024 * 1024


def sse_streams():
    wanted = int(os.environ.get("BENCH_SSE_STREAMS", "9000"))
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    # The proxy holds two descriptors per stream (client and upstream); keep 500 for everything else.
    return max(100, min(wanted, (hard - 500) // 2))


def session_rss(session):
    """Resident bytes of every live process in a session (a service and its workers)."""
    total = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
            fields = text[text.rfind(")") + 2:].split()
            if int(fields[3]) != session:
                continue
            total += int((stat.parent / "statm").read_text().split()[1]) * PAGE
        except (OSError, ValueError, IndexError):
            continue
    return total


def settled_rss(session, timeout=15.0):
    """RSS once it has stopped moving (three reads 0.5 s apart within 256 KiB), or after `timeout`."""
    deadline = time.monotonic() + timeout
    reads = [session_rss(session)]
    while time.monotonic() < deadline:
        time.sleep(0.5)
        reads.append(session_rss(session))
        recent = reads[-3:]
        if len(recent) == 3 and max(recent) - min(recent) <= 256 * 1024:
            return recent[-1]
    return reads[-1]


SSE_UPSTREAM = r"""
import asyncio, sys

async def handle(reader, writer):
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            if not head:
                return
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n")
            event = b'event: message_start\ndata: {"type":"message_start"}\n\n'
            writer.write(b"%x\r\n%s\r\n" % (len(event), event))
            await writer.drain()
            await reader.read()  # hold the stream open until the proxy closes it
            return
    except (asyncio.IncompleteReadError, ConnectionError):
        return
    finally:
        writer.close()

async def main(port):
    server = await asyncio.start_server(handle, "127.0.0.1", port, backlog=4096, limit=1 << 17)
    async with server:
        await server.serve_forever()

asyncio.run(main(int(sys.argv[1])))
"""


def raise_nofile():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


async def open_all(port, count, shape):
    """Opens `count` connections of `shape` to `port` and returns their writers (kept open)."""
    gate = asyncio.Semaphore(256)
    pad = b"".join(b"x-pad-%05d: %s\r\n" % (n, b"a" * 1000) for n in range(HEAD_BYTES // 1015))

    async def one():
        async with gate:
            reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=1 << 17)
            if shape == "head":
                writer.write(b"GET /v1/messages HTTP/1.1\r\nhost: bench\r\n" + pad)
                await writer.drain()
            elif shape == "idle":
                writer.write(b"GET /v1/messages HTTP/1.1\r\nhost: bench\r\nx-api-key: client-supplied-key\r\n\r\n")
                await writer.drain()
                head = await reader.readuntil(b"\r\n\r\n")
                length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:"))
                await reader.readexactly(length)
            else:
                writer.write(b"POST /v1/messages HTTP/1.1\r\nhost: bench\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}")
                await writer.drain()
                await reader.readuntil(b"message_start")
            return writer

    return await asyncio.gather(*(one() for _ in range(count)))


def measure(name, service, port, count, shape):
    session = service.process.pid
    baseline = settled_rss(session, 20.0)
    quarter = count // 4

    async def run():
        loop = asyncio.get_running_loop()
        # Heads must be measured well inside the 30 s header read timeout: 4 s per settle at most.
        first = await open_all(port, quarter, shape)
        partial = await loop.run_in_executor(None, settled_rss, session, 4.0)
        rest = await open_all(port, count - quarter, shape)
        loaded = await loop.run_in_executor(None, settled_rss, session, 4.0)
        for writer in first + rest:
            writer.close()
        return partial, loaded

    partial, loaded = asyncio.run(run())
    service.check_alive()
    per_connection = (loaded - partial) / (count - quarter)
    b.log(f"memory {name:<8} {shape:<5} {count:>6} connections: {baseline / 2**20:7.1f} MiB with none, {partial / 2**20:7.1f} with {quarter}, {loaded / 2**20:7.1f} with {count}: {per_connection / 1024:7.1f} KiB each")
    return {"connections": count, "baseline_mib": baseline / 2**20, "loaded_mib": loaded / 2**20, "kib_per_connection": per_connection / 1024}


def start_memory_harness(port, admin_port, upstream_port, limit):
    env = dict(os.environ, ANTHROPIC_OAUTH_TOKEN=b.TOKEN)
    env.pop("RUST_LOG", None)
    argv = [
        str(b.HARNESS), "serve",
        "--listen", f"127.0.0.1:{port}",
        "--admin-listen", f"127.0.0.1:{admin_port}",
        "--upstream", f"http://127.0.0.1:{upstream_port}",
        "--filter", str(b.FILTER),
        "--workers", str(b.WORKERS),
        "--max-connections", str(limit),
        "--max-concurrency", str(limit),
        "--log-level", "warn",
    ]
    service = b.Service("harness", argv, env=env, preexec_fn=raise_nofile)
    b.wait_http(f"http://127.0.0.1:{admin_port}/readyz", what="host-harness serve")
    return service


def start_memory_nginx(directory, port, upstream_port, limit):
    directory.mkdir(parents=True, exist_ok=True)
    body = f"""
    large_client_header_buffers 4 16k;
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
            proxy_set_header Authorization "Bearer {b.TOKEN}";
            proxy_set_header X-Api-Key "";
            proxy_set_header Anthropic-Version "2023-06-01";
            proxy_set_header Anthropic-Beta "oauth-2025-04-20";
        }}
    }}"""
    conf = directory / "nginx.conf"
    text = b.nginx_config(directory, body).replace("worker_connections 4096;", f"worker_connections {limit};")
    conf.write_text(f"worker_rlimit_nofile {limit};\n" + text)
    service = b.Service("nginx", [b.nginx_binary(), "-p", str(directory), "-c", str(conf), "-e", "stderr"], preexec_fn=raise_nofile)
    b.wait_http(f"http://127.0.0.1:{port}/", accept=(200, 404, 502), what="nginx")
    return service


def memory_case(work):
    streams = sse_streams()
    limit = max(CONNECTIONS, streams) * 2 + 100
    services = []
    results = {}
    try:
        json_port = b.free_port()
        services.append(b.start_upstream(work / "memory-upstream", json_port))
        b.wait_http(f"http://127.0.0.1:{json_port}/", what="upstream nginx")
        sse_port = b.free_port()
        sse = b.Service("sse-upstream", [sys.executable, "-c", SSE_UPSTREAM, str(sse_port)], preexec_fn=raise_nofile)
        services.append(sse)
        for _ in range(100):
            try:
                with __import__("socket").create_connection(("127.0.0.1", sse_port), timeout=1):
                    break
            except OSError:
                time.sleep(0.1)
        shapes = os.environ.get("BENCH_MEMORY_SHAPES", "idle,head,sse").split(",")
        for shape, count in (("idle", CONNECTIONS), ("head", CONNECTIONS), ("sse", streams)):
            if shape not in shapes:
                continue
            upstream = sse_port if shape == "sse" else json_port
            for name in ("harness", "nginx"):
                port = b.free_port()
                if name == "harness":
                    service = start_memory_harness(port, b.free_port(), upstream, limit)
                else:
                    service = start_memory_nginx(work / f"memory-nginx-{shape}", port, upstream, limit)
                try:
                    # Warm: the first requests allocate what every later one reuses.
                    if shape != "head":
                        asyncio.run(warm(port, shape))
                    results[f"{name}/{shape}"] = measure(name, service, port, count, shape)
                finally:
                    service.stop()
    finally:
        for service in reversed(services):
            service.stop()

    print()
    print("memory per client connection (RSS of all the target's processes, N open minus none, / N), each on a fresh start;")
    print(f"head: {HEAD_BYTES // 1024} KiB of a request head, never ended; nginx with a 64 KiB head limit and proxy_buffering off")
    print(f"{'shape':<7}{'N':>7}{'harness KiB':>13}{'nginx KiB':>11}{'goal':>16}")
    for shape in ("idle", "head", "sse"):
        if f"harness/{shape}" not in results:
            continue
        harness = results[f"harness/{shape}"]
        nginx = results[f"nginx/{shape}"]
        if shape == "sse":
            projected = harness["baseline_mib"] + harness["kib_per_connection"] * SSE_GOAL_STREAMS / 1024
            goal = f"10k in {projected:.0f} MiB"
            ok = projected * 2**20 <= SSE_GOAL_BYTES
        else:
            goal = f"<= {GOALS[shape] // 1024} KiB"
            ok = harness["kib_per_connection"] * 1024 <= GOALS[shape]
        print(f"{shape:<7}{harness['connections']:>7}{harness['kib_per_connection']:>13.1f}{nginx['kib_per_connection']:>11.1f}{goal:>13} {'ok' if ok else 'MISSED'}")
    return results


async def warm(port, shape):
    writers = await open_all(port, 8, shape)
    for writer in writers:
        writer.close()
