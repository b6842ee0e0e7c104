"""python-api: the platform's reference HTTP API.

One file, the standard library's threading HTTP server, psycopg 3 and redis-py. It keeps
serving while PostgreSQL or Redis is down and says so (`"status": "degraded"`); it reconnects
by itself when they come back.

Environment (nothing else is read):
    PORT          listen port, default 8000
    DATABASE_URL  postgresql://user:password@host:port/database
    REDIS_URL     redis://:password@host:port/0
    SERVICE_NAME  default "python-api"

Endpoints:
    GET /              service, hit counter (Redis INCR), a PostgreSQL answer, status
    GET /health        liveness: always 200 while serving, with each dependency up/down
    GET /health/ready  200 when PostgreSQL and Redis are both up, else 503
    GET /metrics       Prometheus text format
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, TypeVar
from urllib.parse import unquote, urlsplit

import psycopg
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

CONNECT_TIMEOUT_S = 2  # libpq counts whole seconds and treats anything lower as 2
REDIS_TIMEOUT_S = 1.5
QUERY_TIMEOUT_MS = 2000
RETRY_AFTER_S = 1.0  # after a failure, answer "down" at once for this long, then try again
PG_MAX_CONNECTIONS = 5  # per process; PostgreSQL's max_connections is shared by every replica
REDIS_MAX_CONNECTIONS = 10
REQUEST_TIMEOUT_S = 5  # a client that sends nothing for this long is dropped
ROUTES = ("/", "/health", "/health/ready", "/metrics")
QUIET_ROUTES = ("/health", "/health/ready", "/metrics")  # polled often: logged at debug level
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
HOSTNAME = socket.gethostname()

log = logging.getLogger("python-api")
T = TypeVar("T")
U = TypeVar("U")


# --- logging: one JSON object a line, secrets masked -------------------------------------------


class JsonFormatter(logging.Formatter):
    """JSON lines for Loki; every known secret is replaced by *** before it is written."""

    def __init__(self, secrets: tuple[str, ...]) -> None:
        super().__init__()
        # Masking a 1-3 character "secret" would garble every line and hide next to nothing.
        self._secrets = tuple(sorted({s for s in secrets if len(s) >= 4}, key=len, reverse=True))

    def _mask(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": self._mask(record.getMessage()),
        }
        for key, value in getattr(record, "fields", {}).items():
            entry[key] = self._mask(value) if isinstance(value, str) else value
        if record.exc_info:
            entry["error"] = self._mask(self.formatException(record.exc_info))
        return json.dumps(entry, default=str)


def url_secrets(url: str) -> tuple[str, ...]:
    """The password of a URL as written (percent-encoded) and decoded."""
    try:
        raw = urlsplit(url).password
    except ValueError:
        return ()
    return (raw, unquote(raw)) if raw else ()


def describe_url(url: str) -> str:
    """scheme://user@host:port/path, never the password."""
    try:
        parts = urlsplit(url)
        user = f"{parts.username}@" if parts.username else ""
        port = f":{parts.port}" if parts.port else ""
        return f"{parts.scheme}://{user}{parts.hostname or ''}{port}{parts.path}"
    except ValueError:
        return "<unparsable url>"


# --- metrics: the Prometheus text format, by hand (no client library needed) -------------------


def _labels(**labels: str) -> str:
    def escape(value: str) -> str:
        return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")

    return "{" + ",".join(f'{k}="{escape(v)}"' for k, v in labels.items()) + "}"


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))


class Metrics:
    """Request counter, request duration histogram and dependency gauges, thread-safe."""

    def __init__(self, service: str) -> None:
        self.service = service
        self._lock = threading.Lock()
        self._requests: dict[tuple[str, str, str], int] = {}
        self._durations: dict[tuple[str, str], list[float]] = {}  # per-bucket counts, then sum
        self._dependencies: dict[str, int] = {"postgres": 0, "redis": 0}
        self._started = time.time()

    def observe(self, method: str, path: str, status: int, seconds: float) -> None:
        with self._lock:
            key = (method, path, str(status))
            self._requests[key] = self._requests.get(key, 0) + 1
            slots = self._durations.setdefault((method, path), [0.0] * (len(BUCKETS) + 2))
            for i, bound in enumerate(BUCKETS):
                if seconds <= bound:
                    slots[i] += 1
                    break
            else:
                slots[len(BUCKETS)] += 1  # only in +Inf
            slots[-1] += seconds

    def set_dependency(self, name: str, up: bool) -> None:
        with self._lock:
            self._dependencies[name] = int(up)

    def render(self) -> str:
        with self._lock:
            requests = sorted(self._requests.items())
            durations = sorted((k, list(v)) for k, v in self._durations.items())
            dependencies = sorted(self._dependencies.items())
        lines = [
            "# HELP http_requests_total HTTP requests served, by method, path and status.",
            "# TYPE http_requests_total counter",
        ]
        for (method, path, status), count in requests:
            lines.append(f"http_requests_total{_labels(method=method, path=path, status=status)} {count}")
        lines += [
            "# HELP http_request_duration_seconds Time to answer an HTTP request.",
            "# TYPE http_request_duration_seconds histogram",
        ]
        for (method, path), slots in durations:
            cumulative = 0.0
            for bound, count in zip((*map(_number, BUCKETS), "+Inf"), slots[:-1]):
                cumulative += count
                labels = _labels(method=method, path=path, le=bound)
                lines.append(f"http_request_duration_seconds_bucket{labels} {_number(cumulative)}")
            labels = _labels(method=method, path=path)
            lines.append(f"http_request_duration_seconds_sum{labels} {slots[-1]!r}")
            lines.append(f"http_request_duration_seconds_count{labels} {_number(cumulative)}")
        lines += [
            "# HELP dependency_up Whether a backing service answered its last check (1) or not (0).",
            "# TYPE dependency_up gauge",
        ]
        for name, up in dependencies:
            lines.append(f"dependency_up{_labels(dependency=name)} {up}")
        lines += [
            "# HELP app_info The service behind this endpoint.",
            "# TYPE app_info gauge",
            f"app_info{_labels(service=self.service)} 1",
            "# HELP process_start_time_seconds Start time of the process since the Unix epoch.",
            "# TYPE process_start_time_seconds gauge",
            f"process_start_time_seconds {self._started:.3f}",
        ]
        return "\n".join(lines) + "\n"


# --- dependencies ---------------------------------------------------------------------------------


class Down(Exception):
    """A dependency cannot be reached right now."""


class Dependency:
    """Up/down state of one backing service, and a log line only when it changes.

    A down dependency costs a request nothing: for RETRY_AFTER_S after a failure every call
    is answered "down" at once, and after that one request at a time tries again while the
    others still get "down" at once (a hung server would otherwise hold each request for the
    full timeout)."""

    def __init__(self, name: str, metrics: Metrics) -> None:
        self.name = name
        self._metrics = metrics
        self._lock = threading.Lock()
        self._up: bool | None = None
        self._retry_at = 0.0
        self._probing = False

    @contextlib.contextmanager
    def _attempt(self) -> Iterator[None]:
        with self._lock:
            if time.monotonic() < self._retry_at or (self._up is False and self._probing):
                raise Down(self.name)
            probing = self._probing = self._up is False
        try:
            yield
        finally:
            if probing:
                with self._lock:
                    self._probing = False

    def _record(self, up: bool, error: BaseException | None = None) -> None:
        with self._lock:
            changed, self._up = self._up != up, up
            self._retry_at = 0.0 if up else time.monotonic() + RETRY_AFTER_S
        self._metrics.set_dependency(self.name, up)
        if changed and up:
            log.info("%s is up", self.name, extra={"fields": {"dependency": self.name, "state": "up"}})
        elif changed:
            log.warning("%s is down: %s", self.name, error,
                        extra={"fields": {"dependency": self.name, "state": "down"}})

    def ping(self) -> bool:
        raise NotImplementedError

    def close(self) -> None:
        pass


class Postgres(Dependency):
    """A small pool of autocommit connections, opened on demand and discarded once broken."""

    SCHEMA = (
        "CREATE TABLE IF NOT EXISTS app_starts ("
        " id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,"
        " service text NOT NULL,"
        " host text NOT NULL,"
        " started_at timestamptz NOT NULL DEFAULT now())"
    )

    def __init__(self, url: str, service: str, metrics: Metrics) -> None:
        super().__init__("postgres", metrics)
        self._url = url
        self._service = service
        self._idle: list[psycopg.Connection] = []
        self._idle_lock = threading.Lock()
        self._slots = threading.BoundedSemaphore(PG_MAX_CONNECTIONS)
        self._schema_ready = False
        self._schema_lock = threading.Lock()

    def _connect(self) -> psycopg.Connection:
        if not self._url:
            raise psycopg.OperationalError("DATABASE_URL is not set")
        return psycopg.connect(
            self._url,
            connect_timeout=CONNECT_TIMEOUT_S,
            autocommit=True,
            application_name=self._service[:63],
            options=f"-c statement_timeout={QUERY_TIMEOUT_MS} -c lock_timeout={QUERY_TIMEOUT_MS}",
            keepalives=1,
            keepalives_idle=10,
            keepalives_interval=5,
            keepalives_count=2,
            tcp_user_timeout=CONNECT_TIMEOUT_S * 2000,
        )

    def _take_idle(self) -> psycopg.Connection | None:
        with self._idle_lock:
            return self._idle.pop() if self._idle else None

    def _give_back(self, conn: psycopg.Connection) -> None:
        with self._idle_lock:
            if len(self._idle) < PG_MAX_CONNECTIONS:
                self._idle.append(conn)
                return
        conn.close()

    def _drain(self) -> None:
        with self._idle_lock:
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()

    def run(self, work: Callable[[psycopg.Connection], T]) -> T:
        """Run `work` on a pooled connection. Raises Down when PostgreSQL cannot be reached;
        an SQL error on a healthy connection is raised as is (the server is up)."""
        with self._attempt():
            return self._run(work)

    def _run(self, work: Callable[[psycopg.Connection], T]) -> T:
        if not self._slots.acquire(timeout=CONNECT_TIMEOUT_S):
            raise Down("postgres: all connections busy")
        try:
            for attempt in range(2):
                conn = self._take_idle() if attempt == 0 else None
                reused = conn is not None
                try:
                    if conn is None:
                        conn = self._connect()
                    result = work(conn)
                except psycopg.Error as err:
                    if conn is not None and not (conn.closed or conn.broken):
                        self._give_back(conn)
                        self._record(True)
                        raise
                    if conn is not None:
                        conn.close()
                    self._drain()
                    if reused:
                        continue  # a connection that died while idle (server restart): try a new one
                    self._record(False, err)
                    raise Down(self.name) from err
                self._give_back(conn)
                self._record(True)
                return result
            raise AssertionError("unreachable")
        finally:
            self._slots.release()

    def ping(self) -> bool:
        try:
            self.run(lambda conn: conn.execute("SELECT 1").fetchone())
            return True
        except (Down, psycopg.Error):
            return False

    def _ensure_schema(self, conn: psycopg.Connection) -> None:
        """Create the app's table if missing and record this process's start, once."""
        with self._schema_lock:
            if self._schema_ready:
                return
            with conn.transaction():
                conn.execute("SELECT pg_advisory_xact_lock(hashtext('app_starts'))")  # replicas race
                conn.execute(self.SCHEMA)
                conn.execute("INSERT INTO app_starts (service, host) VALUES (%s, %s)", (self._service, HOSTNAME))
            self._schema_ready = True

    def snapshot(self) -> dict[str, Any]:
        def work(conn: psycopg.Connection) -> dict[str, Any]:
            self._ensure_schema(conn)
            row = conn.execute(
                "SELECT now(), current_database(), (SELECT count(*) FROM app_starts)"
            ).fetchone()
            assert row is not None
            return {"server_time": row[0].isoformat(), "database": row[1], "app_starts": row[2]}

        return self.run(work)

    def close(self) -> None:
        self._drain()


class Redis(Dependency):
    """redis-py with short timeouts and one immediate retry on a dropped connection."""

    def __init__(self, url: str, service: str, metrics: Metrics) -> None:
        super().__init__("redis", metrics)
        self._key = f"{service}:hits"
        self._client: redis.Redis | None = None
        if url:
            pool = redis.BlockingConnectionPool.from_url(
                url,
                max_connections=REDIS_MAX_CONNECTIONS,
                timeout=REDIS_TIMEOUT_S,
                socket_connect_timeout=REDIS_TIMEOUT_S,
                socket_timeout=REDIS_TIMEOUT_S,
                socket_keepalive=True,
                # A pooled connection that died while idle fails at once: retry it once on a
                # fresh connection; a timeout is not retried (it already cost REDIS_TIMEOUT_S).
                retry=Retry(NoBackoff(), 1, supported_errors=(redis.exceptions.ConnectionError,)),
            )
            self._client = redis.Redis(connection_pool=pool)

    def _call(self, command: Callable[[redis.Redis], T]) -> T:
        with self._attempt():
            if self._client is None:
                self._record(False, RuntimeError("REDIS_URL is not set"))
                raise Down(self.name)
            try:
                result = command(self._client)
            except redis.exceptions.RedisError as err:
                self._record(False, err)
                raise Down(self.name) from err
            self._record(True)
            return result

    def ping(self) -> bool:
        try:
            return bool(self._call(lambda client: client.ping()))
        except Down:
            return False

    def hit(self) -> int:
        return int(self._call(lambda client: client.incr(self._key)))

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client.connection_pool.disconnect()


# --- HTTP -----------------------------------------------------------------------------------------


def _hits(app: App) -> int | None:
    try:
        return app.redis.hit()
    except Down:
        return None


def _database(app: App) -> tuple[bool, dict[str, Any] | None]:
    try:
        return True, app.postgres.snapshot()
    except Down:
        return False, None
    except psycopg.Error:
        log.exception("database query failed")
        return True, None


class App:
    def __init__(self, service: str, database_url: str, redis_url: str) -> None:
        self.service = service
        self.metrics = Metrics(service)
        self.postgres = Postgres(database_url, service, self.metrics)
        self.redis = Redis(redis_url, service, self.metrics)
        # PostgreSQL and Redis are asked at the same time, so a request waits for the slower
        # timeout, not their sum (Docker's health check gives /health 3 s).
        self._pool = ThreadPoolExecutor(max_workers=16, thread_name_prefix="dependency")

    def _both(self, redis_call: Callable[[], T], postgres_call: Callable[[], U]) -> tuple[T, U]:
        pending = self._pool.submit(redis_call)
        from_postgres = postgres_call()
        return pending.result(), from_postgres

    def health(self) -> dict[str, str]:
        rd, pg = self._both(self.redis.ping, self.postgres.ping)
        return {
            "status": "ok" if pg and rd else "degraded",
            "postgres": "up" if pg else "down",
            "redis": "up" if rd else "down",
        }

    def index(self) -> dict[str, Any]:
        hits, (pg_up, database) = self._both(lambda: _hits(self), lambda: _database(self))
        return {
            "service": self.service,
            "status": "ok" if hits is not None and database is not None else "degraded",
            "hits": hits,
            "database": database,
            "postgres": "up" if pg_up else "down",
            "redis": "up" if hits is not None else "down",
            "host": HOSTNAME,
        }

    def close(self) -> None:
        self._pool.shutdown(wait=True)
        self.postgres.close()
        self.redis.close()


class Handler(BaseHTTPRequestHandler):
    app: App  # set on the subclass made in main()
    server_version = "python-api"  # no Python version in the Server header
    timeout = REQUEST_TIMEOUT_S

    def _send(self, status: int, body: bytes, content_type: str, extra: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in (extra or {}).items():
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, status: int, payload: dict[str, Any], extra: dict[str, str] | None = None) -> None:
        self._send(status, json.dumps(payload).encode() + b"\n", "application/json", extra)

    def _route(self) -> int:
        path = self.path.split("?", 1)[0]
        no_store = {"Cache-Control": "no-store"}
        if path not in ROUTES:
            self._json(404, {"error": "not found", "path": path[:200]})
            return 404
        if self.command not in ("GET", "HEAD"):
            self._json(405, {"error": "method not allowed"}, {"Allow": "GET, HEAD"})
            return 405
        if path == "/":
            self._json(200, self.app.index())
            return 200
        if path == "/health":
            self._json(200, self.app.health(), no_store)
            return 200
        if path == "/health/ready":
            health = self.app.health()
            status = 200 if health["status"] == "ok" else 503
            self._json(status, health, no_store)
            return status
        self.app.health()  # refresh the dependency gauges for this scrape
        self._send(200, self.app.metrics.render().encode(), "text/plain; version=0.0.4; charset=utf-8", no_store)
        return 200

    def _handle(self) -> None:
        started = time.perf_counter()
        path = self.path.split("?", 1)[0]
        try:
            status = self._route()
        except (BrokenPipeError, ConnectionResetError):
            status = 499  # the client went away
        except Exception:
            log.exception("request failed", extra={"fields": {"path": path[:200]}})
            status = 500
            try:
                self._json(500, {"error": "internal error"})
            except OSError:
                pass
        seconds = time.perf_counter() - started
        label = path if path in ROUTES else "other"
        method = self.command if self.command in ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS") else "OTHER"
        self.app.metrics.observe(method, label, status, seconds)
        level = logging.DEBUG if label in QUIET_ROUTES and status != 500 else logging.INFO
        log.log(level, "%s %s %s", self.command, path[:200], status, extra={"fields": {
            "method": self.command, "path": path[:200], "status": status,
            "duration_ms": round(seconds * 1000, 2), "client": self.client_address[0]}})

    do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = do_OPTIONS = _handle

    def version_string(self) -> str:
        return self.server_version

    def log_message(self, format: str, *args: Any) -> None:
        log.debug(format, *args)  # request lines are logged by _handle, protocol errors here


class Server(ThreadingHTTPServer):
    daemon_threads = False  # server_close() waits for the requests in flight
    block_on_close = True
    request_queue_size = 128


def main() -> int:
    service = os.environ.get("SERVICE_NAME", "python-api") or "python-api"
    database_url = os.environ.get("DATABASE_URL", "")
    redis_url = os.environ.get("REDIS_URL", "")
    port = int(os.environ.get("PORT", "8000"))

    stream = logging.StreamHandler(sys.stdout)
    stream.setFormatter(JsonFormatter((*url_secrets(database_url), *url_secrets(redis_url))))
    logging.basicConfig(level=logging.INFO, handlers=[stream], force=True)

    app = App(service, database_url, redis_url)
    server = Server(("0.0.0.0", port), type("BoundHandler", (Handler,), {"app": app}))
    stopping = threading.Event()

    def on_signal(signum: int, _frame: object) -> None:
        if not stopping.is_set():
            stopping.set()
            log.info("%s received, shutting down", signal.Signals(signum).name)
            threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    log.info("listening", extra={"fields": {
        "service": service, "port": port,
        "postgres": describe_url(database_url) if database_url else "DATABASE_URL not set",
        "redis": describe_url(redis_url) if redis_url else "REDIS_URL not set"}})
    threading.Thread(target=app.health, name="first-check", daemon=True).start()  # log initial state
    server.serve_forever(poll_interval=0.2)
    server.server_close()  # waits for the requests in flight
    app.close()
    log.info("stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
