"""The gateway's nginx.conf and Lua files, rendered from the service catalog.

`render_nginx_conf(GatewayRender(...))` is the whole config; `lua_files()` are uploaded next to
it, into `GatewayRender.lua_dir`. The container is OpenResty (Lua, lua-resty-redis and
lua-resty-dns built in); the tests run the same text on Debian's nginx with `load_modules`.

Routing: a request to `<path_prefix>rest` goes to `http://<service>:<port>/rest` -- the prefix
is stripped, so every API serves from `/` and does not need to know where it is mounted (the
prefix travels in `X-Forwarded-Prefix`). The service name is resolved at request time through
`resolver` (Docker's DNS answers a service alias with every replica's address); the replica
with the fewest requests in flight gets the request, over a keepalive connection.
"""

from __future__ import annotations

import re
from functools import cache
from importlib import resources
from typing import Literal

import jinja2
from pydantic import Field, field_validator, model_validator

from components.spec import Catalog, Frozen, Limits

# Where the files go inside the openresty/openresty image (its default -c path).
CONF_PATH = "/usr/local/openresty/nginx/conf/nginx.conf"
LUA_DIR = "/usr/local/openresty/nginx/lua"
TLS_CERT_PATH = "/usr/local/openresty/nginx/conf/tls/gateway.crt"
TLS_KEY_PATH = "/usr/local/openresty/nginx/conf/tls/gateway.key"
REDIS_PASSWORD_ENV = "GATEWAY_REDIS_PASSWORD"
# The platform's Content-Security-Policy: everything from the gateway's own origin, nothing
# inline, no frames around its pages, no plugins.
CSP = "default-src 'self'; frame-ancestors 'none'; object-src 'none'; base-uri 'self'"

_PATH = r"^[^\s;'\"{}$#\\]+$"  # nothing that could end or extend a directive
_HOST = r"^[A-Za-z0-9]([A-Za-z0-9.-]{0,251}[A-Za-z0-9])?$"  # a DNS name or an IPv4 literal


class GatewayRoute(Frozen):
    """One routed service: requests under `path_prefix` go to `host:port` (prefix stripped)."""

    name: str = Field(pattern=r"^[a-z][a-z0-9-]{1,30}$")
    host: str = Field(pattern=_HOST)
    port: int = Field(ge=1, le=65535)
    path_prefix: str = Field(pattern=r"^/([a-z0-9-]+/)+$")
    cache_ttl_s: int = Field(default=0, ge=0, le=86_400)
    read_timeout_s: int = Field(default=30, ge=1, le=3600)
    # False for UIs that serve from their sub-path themselves (Grafana under /grafana/).
    strip_prefix: bool = True
    # see components.spec.Route.data_images
    data_images: bool = False

    @property
    def upstream_path(self) -> str:
        """What replaces the path prefix on the way to the service."""
        return "/" if self.strip_prefix else self.path_prefix


class GatewayRender(Frozen):
    """Everything nginx.conf depends on. Defaults are the container's; tests override paths,
    ports and `load_modules`. The Redis password is not here: nginx reads it from the
    environment variable GATEWAY_REDIS_PASSWORD."""

    routes: tuple[GatewayRoute, ...]
    redis_host: str = Field(default="redis", pattern=_HOST)
    redis_port: int = Field(default=6379, ge=1, le=65535)
    redis_db: int = Field(default=0, ge=0, le=15)
    redis_timeout_ms: int = Field(default=200, ge=10, le=10_000)
    resolver: str = Field(default="127.0.0.11", pattern=r"^\d{1,3}(\.\d{1,3}){3}(:\d{1,5})?$")
    dns_ttl_s: int = Field(default=5, ge=1, le=300)

    listen_address: str | None = Field(default=None, pattern=r"^\d{1,3}(\.\d{1,3}){3}$")
    http_port: int = Field(default=8080, ge=1, le=65535)
    https_port: int = Field(default=8443, ge=1, le=65535)
    public_https_port: int = Field(default=443, ge=1, le=65535)  # where http redirects to
    metrics_port: int = Field(default=9145, ge=1, le=65535)
    tls_cert_path: str | None = Field(default=None, pattern=_PATH)
    tls_key_path: str | None = Field(default=None, pattern=_PATH)
    # ACME: one PEM file (chain, then key) that the gateway reads at handshake time
    # (gateway_tls.lua), and the webroot whose HTTP-01 tokens it serves on the HTTP port.
    tls_pem_path: str | None = Field(default=None, pattern=_PATH)
    tls_check_interval_s: int = Field(default=60, ge=1, le=3600)
    acme_webroot: str | None = Field(default=None, pattern=_PATH)
    domain: str | None = Field(default=None, pattern=_HOST)
    # The landing page (/) and /static/ from this folder (components/gateway/site.py); None: neither.
    site_root: str | None = Field(default=None, pattern=_PATH)
    hsts_max_age_s: int = Field(default=31_536_000, ge=0)

    rate_limit_rps: int = Field(default=20, ge=1)
    rate_limit_burst: int = Field(default=40, ge=1)  # nginx: "invalid burst value" for 0
    client_max_body_mb: int = Field(default=10, ge=1, le=1024)
    proxy_connect_timeout_s: int = Field(default=3, ge=1, le=60)
    cache_max_body_bytes: int = Field(default=1_048_576, ge=1, le=64 * 1_048_576)
    # The first cache level, in front of Redis: how long an entry stays (never past its own
    # freshness) and the memory all of them may take.
    cache_l1_ttl_s: int = Field(default=2, ge=1, le=60)
    cache_l1_mb: int = Field(default=16, ge=1, le=1024)
    # How long concurrent MISSes of one key wait for the one that fills it.
    cache_lock_wait_ms: int = Field(default=5000, ge=10, le=60_000)

    client_header_timeout_s: int = Field(default=10, ge=1, le=300)
    client_body_timeout_s: int = Field(default=10, ge=1, le=300)
    send_timeout_s: int = Field(default=10, ge=1, le=300)
    keepalive_timeout_s: int = Field(default=15, ge=0, le=300)
    # A request body must arrive within client_body_timeout_s + its length at this rate.
    min_body_rate: int = Field(default=65_536, ge=1)
    conn_per_client: int = Field(default=64, ge=1, le=65_535)
    # nginx's own default (4 buffers of 8 KiB): a longer request line or header is refused.
    large_header_buffer_kb: int = Field(default=8, ge=1, le=256)

    lua_dir: str = Field(default=LUA_DIR, pattern=_PATH)
    access_log: str = Field(default="/dev/stdout", pattern=_PATH)
    error_log: str = Field(default="/dev/stderr", pattern=_PATH)
    error_log_level: Literal["debug", "info", "notice", "warn", "error", "crit"] = "warn"
    pid_path: str = Field(default="/var/run/openresty/nginx.pid", pattern=_PATH)
    temp_dir: str = Field(default="/var/run/openresty", pattern=_PATH)
    load_modules: tuple[str, ...] = ()
    user: str | None = Field(default=None, pattern=r"^[a-z_][a-z0-9_-]*( [a-z_][a-z0-9_-]*)?$")
    worker_processes: int | Literal["auto"] = "auto"
    worker_connections: int = Field(default=1024, ge=16, le=65_535)

    @field_validator("load_modules")
    @classmethod
    def _module_paths(cls, paths: tuple[str, ...]) -> tuple[str, ...]:
        for path in paths:
            if not re.match(_PATH, path):
                raise ValueError(f"bad module path {path!r}")
        return paths

    @model_validator(mode="after")
    def _consistent(self) -> "GatewayRender":
        if (self.tls_cert_path is None) != (self.tls_key_path is None):
            raise ValueError("TLS needs both tls_cert_path and tls_key_path")
        if self.tls_cert_path is not None and self.tls_pem_path is not None:
            raise ValueError("TLS comes from fixed files or from the ACME volume, not both")
        if self.acme_webroot is not None and self.tls_pem_path is None:
            raise ValueError("an ACME webroot goes with the ACME certificate (tls_pem_path)")
        names = [r.name for r in self.routes]
        prefixes = [r.path_prefix for r in self.routes]
        if len(set(names)) != len(names) or len(set(prefixes)) != len(prefixes):
            raise ValueError("two routes share a name or a path prefix")
        if "/health/" in prefixes:
            raise ValueError("/health belongs to the gateway")
        return self

    @property
    def tls(self) -> bool:
        return self.tls_cert_path is not None or self.tls_pem_path is not None

    @property
    def resolver_host(self) -> str:
        return self.resolver.partition(":")[0]

    @property
    def resolver_port(self) -> int:
        return int(self.resolver.partition(":")[2] or 53)


# Fields of the access log a client controls, and the bytes each may take: (name, nginx
# variable, size). Escaped for JSON every byte can take 6, so all of them stay under 9 KiB.
LOG_BOUNDS = (("method", "request_method", 16), ("uri", "uri", 512), ("args", "args", 512),
              ("host", "host", 128), ("user_agent", "http_user_agent", 256))

# Request headers that claim where a request came from; the gateway, the first proxy, drops
# what a client sent (the X-Forwarded-* it sets itself). No X-Forwarded-Port: inside the
# container the gateway knows its own port, not the public one Docker maps to it.
FORGED_HEADERS = ("Forwarded", "X-Forwarded-Port", "X-Forwarded-Server", "X-Forwarded-Ssl", "X-Original-Forwarded-For",
                  "X-Original-URL", "X-Rewrite-URL", "X-Client-IP", "True-Client-IP", "X-Cluster-Client-IP")

# What one connection may cost the gateway at most, roughly: its buffers for a large request
# header and for the backend's answer, and the Lua state of a request (the fill buffer is
# counted apart: at most cache_max_body_bytes per filling request).
CONNECTION_COST_BYTES = 64 * 1024


def workers_from_limits(limits: Limits) -> dict[str, int]:
    """worker_processes and worker_connections from the container's limits: a worker per CPU
    it may use (at least one), and connections for half of its memory, the rest being left to
    the cache's first level, fills and nginx itself."""
    processes = max(1, int(limits.cpus))
    connections = limits.memory_bytes // 2 // CONNECTION_COST_BYTES // processes
    return {"worker_processes": processes, "worker_connections": max(256, min(16_384, connections))}


def routes_from_catalog(catalog: Catalog) -> tuple[GatewayRoute, ...]:
    """A route per routed service; the upstream host is the service name (its DNS alias)."""
    return tuple(
        GatewayRoute(
            name=service.name,
            host=service.route.upstream_host or service.name,
            port=service.route.upstream_port or service.port,
            path_prefix=service.route.path_prefix,
            cache_ttl_s=service.route.cache_ttl_s,
            strip_prefix=service.route.strip_prefix,
            data_images=service.route.data_images,
        )
        for service in catalog.routed
        if service.route is not None
    )


def lua_literal(value: object) -> str:
    """A Python value written as a Lua expression (for the init_by_lua config table)."""
    if value is None:
        return "nil"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        out = []
        for ch in value.encode():
            if ch in (0x22, 0x5C) or ch < 0x20 or ch > 0x7E:
                out.append(f"\\{ch:03d}")
            else:
                out.append(chr(ch))
        return '"' + "".join(out) + '"'
    if isinstance(value, (list, tuple)):
        return "{ " + ", ".join(lua_literal(v) for v in value) + " }"
    if isinstance(value, dict):
        items = []
        for key, item in value.items():
            if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key):
                raise ValueError(f"not a Lua identifier: {key!r}")
            items.append(f"{key} = {lua_literal(item)}")
        return "{ " + ", ".join(items) + " }"
    raise TypeError(f"no Lua literal for {type(value).__name__}")


def _lua_config(args: GatewayRender) -> dict[str, object]:
    return {
        "routes": [
            {"name": r.name, "host": r.host, "port": r.port, "path_prefix": r.path_prefix,
             "cache_ttl_s": r.cache_ttl_s, "read_timeout_s": r.read_timeout_s}
            for r in args.routes
        ],
        "nameservers": [[args.resolver_host, args.resolver_port]],
        "dns_ttl_s": args.dns_ttl_s,
        "redis_host": args.redis_host,
        "redis_port": args.redis_port,
        "redis_db": args.redis_db,
        "redis_timeout_ms": args.redis_timeout_ms,
        "cache_max_body_bytes": args.cache_max_body_bytes,
        "cache_l1_ttl_s": args.cache_l1_ttl_s,
        "cache_lock_wait_ms": args.cache_lock_wait_ms,
        "body_timeout_s": args.client_body_timeout_s,
        "min_body_rate": args.min_body_rate,
        "client_max_body_bytes": args.client_max_body_mb * 1_048_576,
    }


@cache
def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(resources.files(__package__) / "templates")),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        autoescape=False,
    )
    env.filters["lua"] = lua_literal
    return env


def content_security_policy(route: GatewayRoute | None = None) -> str:
    """The CSP of an answer: the platform's; on a route with `data_images`, images may also be
    data: URIs. Scripts, styles, frames and everything else stay as strict on every route."""
    return CSP + "; img-src 'self' data:" if route is not None and route.data_images else CSP


def render_nginx_conf(args: GatewayRender) -> str:
    """The complete nginx.conf for these arguments."""
    listen = (lambda port: f"{args.listen_address}:{port}") if args.listen_address else str
    https_suffix = "" if args.public_https_port == 443 else f":{args.public_https_port}"
    return _environment().get_template("nginx.conf.j2").render(
        args=args,
        listen=listen,
        lua_config=_lua_config(args),
        redirect_host=args.domain or "$host",
        https_suffix=https_suffix,
        password_env=REDIS_PASSWORD_ENV,
        log_bounds=LOG_BOUNDS,
        forged_headers=FORGED_HEADERS,
        csp=content_security_policy,
    )


def lua_files() -> dict[str, str]:
    """The Lua modules nginx.conf requires, by file name, to upload into `lua_dir`."""
    folder = resources.files(__package__) / "lua"
    return {
        entry.name: entry.read_text(encoding="utf-8")
        for entry in sorted(folder.iterdir(), key=lambda e: e.name)
        if entry.name.endswith(".lua")
    }
