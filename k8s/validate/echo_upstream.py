"""A stand-in for the upstream API in smoke runs: answers every request with the headers it received.

    echo_upstream.py PORT [SECONDS]

Listens on 127.0.0.1:PORT only and stops by itself after SECONDS (default 60), so a run that is interrupted
never leaves it behind. The response body is a JSON object of the request headers (names lower-cased) plus
":path" and ":method".

`POST /v1/oauth/token` plays an OAuth2 token endpoint instead: it answers a JSON body with grant_type
refresh_token by a new access token (`smoke-access-1`, `smoke-access-2`, ...), valid for an hour, and a
rotated refresh token; every body it received is appended to `token-requests` in JSON lines when the
environment names a file in ECHO_TOKEN_LOG.
"""

import http.server
import itertools
import json
import os
import sys
import threading

TOKENS = itertools.count(1)


class Echo(http.server.BaseHTTPRequestHandler):
    def _answer(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        body_in = self.rfile.read(length) if length else b""
        if self.command == "POST" and self.path == "/v1/oauth/token":
            self._token(body_in)
            return
        seen = {key.lower(): value for key, value in self.headers.items()}
        seen.update({":path": self.path, ":method": self.command})
        body = json.dumps(seen).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _token(self, body_in: bytes) -> None:
        log = os.environ.get("ECHO_TOKEN_LOG")
        if log:
            with open(log, "a", encoding="utf-8") as handle:
                handle.write(body_in.decode("utf-8", "replace") + "\n")
        try:
            grant = json.loads(body_in).get("grant_type")
        except (ValueError, AttributeError):
            grant = None
        if grant != "refresh_token":
            status, answer = 400, {"error": "unsupported_grant_type"}
        else:
            n = next(TOKENS)
            status, answer = 200, {"access_token": f"smoke-access-{n}", "expires_in": 3600, "refresh_token": f"smoke-refresh-{n}", "token_type": "Bearer"}
        body = json.dumps(answer).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = _answer

    def log_message(self, *args: object) -> None:
        pass


def main() -> None:
    port = int(sys.argv[1])
    lifetime = float(sys.argv[2]) if len(sys.argv) > 2 else 60.0
    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Echo)
    threading.Timer(lifetime, server.shutdown).start()
    server.serve_forever()


if __name__ == "__main__":
    main()
