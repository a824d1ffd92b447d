"""A stand-in for the upstream API in smoke runs: answers every request with the headers it received.

    echo_upstream.py PORT [SECONDS]

Listens on 127.0.0.1:PORT only and stops by itself after SECONDS (default 60), so a run that is interrupted
never leaves it behind. The response body is a JSON object of the request headers (names lower-cased) plus
":path" and ":method".
"""

import http.server
import json
import sys
import threading


class Echo(http.server.BaseHTTPRequestHandler):
    def _answer(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        if length:
            self.rfile.read(length)
        seen = {key.lower(): value for key, value in self.headers.items()}
        seen.update({":path": self.path, ":method": self.command})
        body = json.dumps(seen).encode()
        self.send_response(200)
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
