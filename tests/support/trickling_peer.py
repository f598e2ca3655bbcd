"""An HTTP peer on loopback that takes every request and never finishes answering it: a 200 and then one
byte (a space, which JSON allows before a value) a second, forever. Per-read timeouts never fire, so a
client waits on it for as long as it is willing to: a PLC directory or PDS that has become very slow.

    with TricklingPeer() as plc:     # plc.url goes where the directory's URL would
        ...
        plc.asked_for(did)           # a request whose path names `did` has arrived (and now hangs)
"""

from __future__ import annotations

import socket
import threading
from typing import Any
from urllib.parse import unquote

TRICKLE_EVERY = 1.0  # seconds between bytes: well under any client's read timeout


class TricklingPeer:
    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(0.2)  # so that the accept loop sees `stopping`
        self.stopping = threading.Event()
        self.lock = threading.Lock()
        self.paths: list[str] = []
        self.threads: list[threading.Thread] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.listener.getsockname()[1]}"

    def __enter__(self) -> TricklingPeer:
        self.start(self.accept_forever)
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stopping.set()
        for thread in self.threads:
            thread.join(5)
        self.listener.close()

    def start(self, target: Any, *args: Any) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True)
        self.threads.append(thread)
        thread.start()

    def accept_forever(self) -> None:
        while not self.stopping.is_set():
            try:
                connection, _ = self.listener.accept()
            except TimeoutError:
                continue
            self.start(self.trickle, connection)

    def trickle(self, connection: socket.socket) -> None:
        with connection:
            request = b""
            connection.settimeout(1.0)
            while b"\r\n\r\n" not in request and not self.stopping.is_set():
                try:
                    received = connection.recv(4096)
                except TimeoutError:
                    continue
                if not received:
                    return
                request += received
            if b"\r\n\r\n" not in request:  # stopped first
                return
            with self.lock:
                self.paths.append(unquote(request.split(b" ", 2)[1].decode("latin-1")))
            try:
                connection.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                                   b"Transfer-Encoding: chunked\r\n\r\n")
                while not self.stopping.wait(TRICKLE_EVERY):
                    connection.sendall(b"1\r\n \r\n")
            except OSError:  # the client gave up
                return

    def asked_for(self, text: str) -> bool:
        """Whether a request whose path names `text` has arrived (it then hangs)."""
        with self.lock:
            return any(text in path for path in self.paths)
