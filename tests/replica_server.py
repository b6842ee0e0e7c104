"""One replica of a stateless service, as a container runs it: `python replica_server.py HOST
PORT NAME [START_DELAY_S]`. HTTP/1.1 with keepalive; every answer names the replica;
`?sleep=S` holds the request. It keeps idle keepalive connections longer than the gateway
does (nginx's upstream `keepalive_timeout` 60s), so the gateway never reuses one it closed.
On SIGTERM it stops the way a well-behaved service stops when `docker stop` asks it to: no
new connections, requests in flight answered (with `Connection: close`), idle keepalive
connections closed, then exit."""

from __future__ import annotations

import json
import signal
import socket
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit


class Server(ThreadingHTTPServer):
    daemon_threads = False  # server_close() waits for the requests in flight
    block_on_close = True


def main() -> int:
    host, port, name = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    time.sleep(float(sys.argv[4]) if len(sys.argv) > 4 else 0)  # a container starting up
    stopping = threading.Event()
    connections: set[socket.socket] = set()
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True
        timeout = 75

        def setup(self) -> None:
            super().setup()
            with lock:
                connections.add(self.connection)

        def finish(self) -> None:
            with lock:
                connections.discard(self.connection)
            super().finish()

        def do_GET(self) -> None:
            query = parse_qs(urlsplit(self.path).query)
            time.sleep(float(query.get("sleep", ["0"])[0]))
            body = json.dumps({"replica": name, "path": self.path}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            if stopping.is_set():  # draining: this connection ends with this answer
                self.send_header("Connection", "close")
                self.close_connection = True
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args) -> None:
            pass

    server = Server((host, port), Handler)
    def on_term(*_) -> None:
        stopping.set()
        threading.Thread(target=server.shutdown, daemon=True).start()
        # Idle connections wait for a next request that must not come: stop reading them.
        # A request being answered was read already; its answer still goes out.
        with lock:
            for connection in connections:
                try:
                    connection.shutdown(socket.SHUT_RD)
                except OSError:
                    pass

    signal.signal(signal.SIGTERM, on_term)
    server.serve_forever(poll_interval=0.05)
    server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
