"""A stand-in for tailscaled's LocalAPI in smoke runs: answers WhoIs on a unix socket.

    whois_standin.py SOCKET [SECONDS]

Serves `GET /localapi/v0/whois?addr=IP:PORT` on the unix socket SOCKET (as tailscaled does on
/var/run/tailscale/tailscaled.sock) and stops by itself after SECONDS (default 60). Every peer is the user
alice@example.com on node laptop.example.ts.net, in the shape of tailscaled's WhoIsResponse (`Node.Name`,
`Node.Tags`, `UserProfile.LoginName`, `UserProfile.DisplayName`); a request without `addr` gets 400, any
other path 404. Each address asked about is appended to SOCKET.log, one per line.
"""

import http.server
import json
import os
import socketserver
import sys
import threading
import urllib.parse


class WhoIs(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 (the http.server naming)
        url = urllib.parse.urlsplit(self.path)
        if url.path != "/localapi/v0/whois":
            self._send(404, b"not found\n", "text/plain")
            return
        addr = urllib.parse.parse_qs(url.query).get("addr", [""])[0]
        if not addr:
            self._send(400, b"missing 'addr' parameter\n", "text/plain")
            return
        with open(self.server.log_path, "a", encoding="utf-8") as log:
            log.write(addr + "\n")
        answer = {
            "Node": {"ID": 7, "Name": "laptop.example.ts.net.", "Addresses": ["100.101.102.103/32"], "Tags": None},
            "UserProfile": {"ID": 3, "LoginName": "alice@example.com", "DisplayName": "Alice Example", "ProfilePicURL": ""},
            "CapMap": {},
        }
        self._send(200, json.dumps(answer).encode(), "application/json")

    def _send(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("content-type", content_type)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def address_string(self) -> str:
        return "unix"

    def log_message(self, *args) -> None:
        pass


class Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True


def main() -> None:
    path = sys.argv[1]
    seconds = float(sys.argv[2]) if len(sys.argv) > 2 else 60.0
    if os.path.exists(path):
        os.unlink(path)
    server = Server(path, WhoIs)
    # tailscaled's socket is open to every local user; the image test's proxy runs as 65532.
    os.chmod(path, 0o666)
    server.log_path = path + ".log"
    threading.Timer(seconds, server.shutdown).start()
    try:
        server.serve_forever()
    finally:
        os.unlink(path)


if __name__ == "__main__":
    main()
