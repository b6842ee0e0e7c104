"""Backends for the gateway cache tests that answer what a test scripts, on 127.0.0.1.

`Scripted`: an HTTP/1.1 server; a test sets `answers[path] = Answer(...)` (path without the
query) and reads `hits[path]` and `headers[path]` (the last request's, lowercase names).
`Garbage`: a TCP server that answers every connection with bytes that are not HTTP.
"""

from __future__ import annotations

import collections
import socket
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Iterator
from urllib.parse import urlsplit

import pytest

from tests.servers import free_port


@dataclass
class Answer:
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    delay: float = 0.0
    size: int = 0  # a streamed body of this many bytes instead of `body`
    truncate: int | None = None  # announce the length, send this many bytes, close


class Scripted:
    def __init__(self) -> None:
        self.port = free_port()
        self.answers: dict[str, Answer] = {}
        self.hits: collections.Counter[str] = collections.Counter()
        self.headers: dict[str, dict[str, str]] = {}
        self.lock = threading.Lock()
        backend = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True

            def do_GET(self) -> None:
                path = urlsplit(self.path).path
                with backend.lock:
                    backend.hits[path] += 1
                    hit = backend.hits[path]
                    backend.headers[path] = {k.lower(): v for k, v in self.headers.items()}
                answer = backend.answers.get(path, Answer())
                time.sleep(answer.delay)
                body = answer.body or f"{self.path} #{hit}".encode()
                length = answer.size or len(body)
                self.send_response(answer.status)
                for name, value in answer.headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(length))
                self.end_headers()
                if answer.truncate is not None:
                    self.wfile.write(body[:answer.truncate])
                    self.close_connection = True
                elif answer.size:
                    chunk = b"x" * 1_048_576
                    for start in range(0, answer.size, len(chunk)):
                        self.wfile.write(chunk[:answer.size - start])
                else:
                    self.wfile.write(body)

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class Garbage:
    """Reads a request, answers bytes without a status line, closes; counts connections."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.connections = 0
        self._stop = threading.Event()
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            self.connections += 1
            with conn:
                conn.settimeout(2)
                try:
                    conn.recv(65536)
                    conn.sendall(b"\x00\x17garbage, not HTTP at all\r\n\r\nmore garbage")
                except OSError:
                    pass

    def stop(self) -> None:
        self._stop.set()
        self.sock.close()


@pytest.fixture(scope="module")
def backend() -> Iterator[Scripted]:
    """A scripted backend for one test module."""
    server = Scripted()
    yield server
    server.stop()
