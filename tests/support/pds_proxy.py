"""A loopback HTTP front for the real PDS that forwards every request and, on demand, loses answers.

Publishing must be exactly once even when the PDS has taken a record and its answer never arrives
(a dropped connection, or our process killed while waiting). This front makes both happen on purpose:

    proxy = PdsProxy(network.pds_url).start()      # then use proxy.url as the account's pds_uri
    proxy.drop_answers(1)        # the next createRecord reaches the PDS; its answer is dropped
    proxy.hold_answers(1)        # ... its answer is held back (until release_held or stop); `proxy.held`
                                 # is set once the PDS has answered, so a test can kill the client then
    proxy.fail_requests(503, 2)  # the next 2 createRecords are answered 503 without reaching the PDS
    proxy.forwarded              # [(xrpc method, PDS status)] of every request that reached the PDS

The PDS names its own URL in the DID document it returns with a session, and the atproto SDK switches
to that URL after login; the front puts its own URL there instead, as a front on a public host would be
the URL in the document, so the client keeps talking through it.
"""

from __future__ import annotations

import http.client
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

CREATE_RECORD = "com.atproto.repo.createRecord"
SESSION_METHODS = ("com.atproto.server.createSession", "com.atproto.server.refreshSession",
                   "com.atproto.server.getSession")
HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "host", "proxy-connection"}


class PdsProxy:
    def __init__(self, upstream: str) -> None:
        self.upstream = upstream.rstrip("/")
        self.server: ThreadingHTTPServer | None = None
        self.thread: threading.Thread | None = None
        self.lock = threading.Lock()
        self.drops = 0
        self.holds = 0
        self.failures: tuple[int, int] = (0, 0)  # (status, how many more)
        self.method = CREATE_RECORD
        self.held = threading.Event()
        self.release = threading.Event()
        self.forwarded: list[tuple[str, int]] = []

    @property
    def url(self) -> str:
        assert self.server is not None, "proxy not started"
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def start(self) -> PdsProxy:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                proxy.handle(self)

            def do_POST(self) -> None:
                proxy.handle(self)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, name="pds-proxy", daemon=True)
        self.thread.start()
        return self

    def stop(self) -> None:
        self.release.set()
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()

    def drop_answers(self, count: int = 1, method: str = CREATE_RECORD) -> None:
        with self.lock:
            self.drops, self.method = count, method

    def hold_answers(self, count: int = 1, method: str = CREATE_RECORD) -> None:
        with self.lock:
            self.holds, self.method = count, method
            self.held.clear()

    def release_held(self) -> None:
        """Let the held answers go at last: their connections close without an answer."""
        self.release.set()

    def fail_requests(self, status: int, count: int, method: str = CREATE_RECORD) -> None:
        with self.lock:
            self.failures, self.method = (status, count), method

    def calls(self, method: str = CREATE_RECORD) -> list[int]:
        """The PDS's status for each `method` request that reached it."""
        return [status for name, status in self.forwarded if name == method]

    # -- serving ----------------------------------------------------------------------------------

    def handle(self, request: BaseHTTPRequestHandler) -> None:
        method = urlsplit(request.path).path.removeprefix("/xrpc/")
        body = request.rfile.read(int(request.headers.get("Content-Length") or 0))
        fate = self.fate(method)
        if isinstance(fate, int):
            answer(request, fate, json.dumps({"error": "InternalServerError", "message": "made to fail"}).encode(),
                   {"Content-Type": "application/json"})
            return
        status, headers, content = self.forward(request, body)
        with self.lock:
            self.forwarded.append((method, status))
        if fate == "drop":
            request.close_connection = True  # the PDS took it; the client never hears
            return
        if fate == "hold":
            self.held.set()
            self.release.wait(120)
            request.close_connection = True
            return
        if method in SESSION_METHODS and status == 200:
            content = content.replace(self.upstream.encode(), self.url.encode())
        answer(request, status, content, headers)

    def fate(self, method: str) -> str | int | None:
        with self.lock:
            if method != self.method:
                return None
            status, left = self.failures
            if left:
                self.failures = (status, left - 1)
                return status
            if self.drops:
                self.drops -= 1
                return "drop"
            if self.holds:
                self.holds -= 1
                return "hold"
        return None

    def forward(self, request: BaseHTTPRequestHandler, body: bytes) -> tuple[int, dict[str, str], bytes]:
        target = urlsplit(self.upstream)
        connection = http.client.HTTPConnection(target.hostname, target.port, timeout=30)
        headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_BY_HOP}
        try:
            connection.request(request.command, request.path, body=body or None, headers=headers)
            response = connection.getresponse()
            content = response.read()
            kept = {k: v for k, v in response.getheaders() if k.lower() not in HOP_BY_HOP}
            return response.status, kept, content
        except OSError:
            return 502, {"Content-Type": "application/json"}, b'{"error": "UpstreamFailure"}'
        finally:
            connection.close()


def answer(request: BaseHTTPRequestHandler, status: int, content: bytes, headers: dict[str, str]) -> None:
    request.send_response(status)
    for name, value in headers.items():
        request.send_header(name, value)
    request.send_header("Content-Length", str(len(content)))
    request.end_headers()
    request.wfile.write(content)
