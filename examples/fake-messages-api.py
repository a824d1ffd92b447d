#!/usr/bin/env python3
"""A local stand-in for the Anthropic Messages API, for trying the proxy without internet access or a real key.

Answers like the real API in shape (not in content): `POST /v1/messages` as JSON or, with `"stream": true`, as
server-sent events (message_start, content_block_start, ping, content_block_delta, content_block_stop,
message_delta, message_stop) with a `usage` block; `POST /v1/messages/count_tokens`; `GET /v1/models`. Every
request must carry a credential (`x-api-key` or `authorization`), as the real API requires; with `--expect-key`
it must be exactly that key (sent either way), otherwise the answer is the API's 401 `authentication_error`.
Errors use the API's shape, `{"type":"error","error":{"type":...,"message":...}}`.

    python3 examples/fake-messages-api.py --port 9000 [--expect-key KEY] [--log FILE]

`--log FILE` appends one JSON line per request (method, path, the names of the headers it carried, and whether
the credential matched), never a header value. Standard library only.
"""

import argparse
import json
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

REPLY = "Hello from the local stand-in of the Messages API."


def error_body(kind, message):
    return {"type": "error", "error": {"type": kind, "message": message}}


def count_tokens(payload):
    """A rough, deterministic token count: words in the messages and the system prompt."""
    words = 0
    system = payload.get("system")
    if isinstance(system, str):
        words += len(system.split())
    for message in payload.get("messages") or []:
        content = message.get("content") if isinstance(message, dict) else None
        if isinstance(content, str):
            words += len(content.split())
        elif isinstance(content, list):
            for block in content:
                if isinstance(block, dict) and isinstance(block.get("text"), str):
                    words += len(block["text"].split())
    return max(words, 1)


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "fake-messages-api"

    def credential(self):
        key = self.headers.get("x-api-key")
        if key is not None:
            return key
        auth = self.headers.get("authorization") or ""
        return auth[7:] if auth.lower().startswith("bearer ") else None

    def record(self, accepted):
        if self.server.log is None:
            return
        line = {"method": self.command, "path": self.path,
                "headers": sorted({name.lower() for name in self.headers.keys()}), "credential_accepted": accepted}
        with open(self.server.log, "a", encoding="utf-8") as out:
            out.write(json.dumps(line) + "\n")

    def send_json(self, status, value, extra=()):
        body = json.dumps(value).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.send_header("request-id", f"req_fake_{int(time.time() * 1000)}")
        for name, value_ in extra:
            self.send_header(name, value_)
        self.end_headers()
        self.wfile.write(body)

    def authorised(self):
        key = self.credential()
        expected = self.server.expect_key
        accepted = key is not None and (expected is None or key == expected)
        self.record(accepted)
        if not accepted:
            self.send_json(401, error_body("authentication_error", "invalid x-api-key"))
        return accepted

    def read_json(self):
        length = int(self.headers.get("content-length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            payload = json.loads(raw or b"{}")
        except ValueError:
            payload = None
        if not isinstance(payload, dict):
            self.send_json(400, error_body("invalid_request_error", "the body is not a JSON object"))
            return None
        return payload

    def do_GET(self):
        if not self.authorised():
            return
        if self.path.split("?")[0] == "/v1/models":
            self.send_json(200, {"data": [{"type": "model", "id": "claude-sonnet-4-5", "display_name": "Claude Sonnet 4.5",
                                           "created_at": "2025-09-29T00:00:00Z"}],
                                 "has_more": False, "first_id": "claude-sonnet-4-5", "last_id": "claude-sonnet-4-5"})
        else:
            self.send_json(404, error_body("not_found_error", f"no route for GET {self.path.split('?')[0]}"))

    def do_POST(self):
        if not self.authorised():
            return
        path = self.path.split("?")[0]
        payload = self.read_json()
        if payload is None:
            return
        if path == "/v1/messages/count_tokens":
            self.send_json(200, {"input_tokens": count_tokens(payload)})
            return
        if path != "/v1/messages":
            self.send_json(404, error_body("not_found_error", f"no route for POST {path}"))
            return
        model = payload.get("model")
        if not isinstance(model, str) or not isinstance(payload.get("max_tokens"), int):
            self.send_json(400, error_body("invalid_request_error", "model and max_tokens are required"))
            return
        input_tokens = count_tokens(payload)
        words = REPLY.split(" ")
        message = {"id": "msg_fake", "type": "message", "role": "assistant", "model": model,
                   "content": [{"type": "text", "text": REPLY}], "stop_reason": "end_turn", "stop_sequence": None,
                   "usage": {"input_tokens": input_tokens, "cache_creation_input_tokens": 0,
                             "cache_read_input_tokens": 0, "output_tokens": len(words)}}
        if not payload.get("stream"):
            self.send_json(200, message)
            return
        self.send_response(200)
        self.send_header("content-type", "text/event-stream; charset=utf-8")
        self.send_header("cache-control", "no-cache")
        self.send_header("transfer-encoding", "chunked")
        self.end_headers()
        start = dict(message, content=[], stop_reason=None,
                     usage=dict(message["usage"], output_tokens=1))
        events = [("message_start", {"type": "message_start", "message": start}),
                  ("content_block_start", {"type": "content_block_start", "index": 0,
                                           "content_block": {"type": "text", "text": ""}}),
                  ("ping", {"type": "ping"})]
        for i, word in enumerate(words):
            text = word if i == 0 else " " + word
            events.append(("content_block_delta", {"type": "content_block_delta", "index": 0,
                                                   "delta": {"type": "text_delta", "text": text}}))
        events += [("content_block_stop", {"type": "content_block_stop", "index": 0}),
                   ("message_delta", {"type": "message_delta",
                                      "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                                      "usage": {"output_tokens": len(words)}}),
                   ("message_stop", {"type": "message_stop"})]
        for name, data in events:
            chunk = f"event: {name}\ndata: {json.dumps(data)}\n\n".encode()
            self.wfile.write(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
            self.wfile.flush()
        self.wfile.write(b"0\r\n\r\n")

    def log_message(self, *args):
        pass


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=9000)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--expect-key", help="the only credential accepted (default: any)")
    parser.add_argument("--log", help="append one JSON line per request to this file")
    args = parser.parse_args()
    server = ThreadingHTTPServer((args.host, args.port), Handler)
    server.expect_key = args.expect_key
    server.log = args.log
    print(f"fake Messages API on http://{args.host}:{server.server_address[1]}", file=sys.stderr, flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
