"""A tiny HTTP server on 127.0.0.1 that answers each GET path with the reply set for it, for tests that
play a PLC directory or a PDS answering whatever they like (unit tier: no real peer, no wait).

    with CannedReplies() as server:
        server.answer("/did:plc:abc", 200, b'{"id": "did:plc:abc"}')
        server.url  # http://127.0.0.1:N
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlsplit


@dataclass(frozen=True)
class Reply:
    status: int
    body: bytes
    content_type: str = "application/json"


class CannedReplies:
    def __init__(self) -> None:
        self.replies: dict[str, Reply] = {}
        replies = self.replies

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - the http.server API
                reply = replies.get(unquote(urlsplit(self.path).path), Reply(404, b'{"error": "NotFound"}'))
                self.send_response(reply.status)
                self.send_header("Content-Type", reply.content_type)
                self.send_header("Content-Length", str(len(reply.body)))
                self.end_headers()
                self.wfile.write(reply.body)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def answer(self, path: str, status: int, body: bytes, content_type: str = "application/json") -> None:
        self.replies[path] = Reply(status, body, content_type)

    def __enter__(self) -> CannedReplies:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()
