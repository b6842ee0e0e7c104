"""`Gateway`: the nginx (OpenResty) gateway, the stack's only public entry.

It owns the rendered nginx.conf and Lua files, the TLS certificate and key when the stack has
them, and the Redis password the response cache uses (a secret environment variable, never in
the config). Routes come from the catalog, so a routed service needs no edit here.

The container is created with a bootstrap config only; the real files reach it through the
`<name>-config` command (reload.py): checked with `nginx -t`, then a graceful reload. A change
of routes, Lua or TLS material therefore never replaces the container; a new image does, and
that is the one deploy that interrupts the gateway (it alone binds the public ports).
"""

from __future__ import annotations

import hashlib
from typing import Mapping, Sequence

import pulumi
from pydantic import BaseModel, ConfigDict

from components.container import ConfigFile, ContainerService, ContainerServiceArgs, Placement
from components.gateway.acme import GATEWAY_STORE, GATEWAY_WEBROOT, LIVE_PEM, Acme, AcmeArgs, AcmeConfig
from components.gateway.site import SITE_ROOT
from components.gateway.render import (
    CONF_PATH,
    LUA_DIR,
    REDIS_PASSWORD_ENV,
    TLS_CERT_PATH,
    TLS_KEY_PATH,
    GatewayRender,
    lua_files,
    render_nginx_conf,
    routes_from_catalog,
    workers_from_limits,
)
from components.gateway.reload import SCRIPT_DIGEST, ReloadFile, bootstrap_conf, config_archive, reload_command
from components.host import HostShell
from components.spec import Catalog, InputStr


class GatewayTls(BaseModel):
    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    certificate: str
    private_key: InputStr


class GatewayArgs(BaseModel):
    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    catalog: Catalog
    placement: Placement
    # Where `docker exec` runs to install a new config into the running gateway.
    shell: HostShell
    redis_password: InputStr
    domain: str | None = None
    tls: GatewayTls | None = None
    # A certificate from an ACME CA (a sidecar, components/gateway/acme.py) instead of `tls`.
    acme: AcmeConfig | None = None
    keep_data: bool = False
    public_https_port: int = 443
    rate_limit_rps: int = 20
    rate_limit_burst: int = 40
    # The landing page and /static/ (site.site_files(): path under the site root -> text).
    site: Mapping[str, str] = {}
    depends_on: Sequence[pulumi.Resource] = ()


def gateway_render(args: GatewayArgs) -> GatewayRender:
    """The nginx settings of the container, from the catalog and the stack's gateway config."""
    spec = args.catalog.get("gateway")
    routes = routes_from_catalog(args.catalog)
    if args.site and any(r.path_prefix.startswith("/static/") for r in routes):
        raise ValueError("a route under /static/ would hide the site's assets")
    https = next((p.container for p in spec.public_ports if p.container != spec.port), 8443)
    return GatewayRender(
        routes=routes,
        redis_host="redis",
        redis_port=args.catalog.get("redis").port,
        http_port=spec.port,
        https_port=https,
        public_https_port=args.public_https_port,
        metrics_port=spec.metrics_port or 9145,
        domain=args.domain,
        tls_cert_path=TLS_CERT_PATH if args.tls else None,
        tls_key_path=TLS_KEY_PATH if args.tls else None,
        tls_pem_path=f"{GATEWAY_STORE}/{LIVE_PEM}" if args.acme else None,
        acme_webroot=GATEWAY_WEBROOT if args.acme else None,
        rate_limit_rps=args.rate_limit_rps,
        rate_limit_burst=args.rate_limit_burst,
        site_root=SITE_ROOT if args.site else None,
        **workers_from_limits(spec.limits),
    )


class Gateway(pulumi.ComponentResource):
    """Owns the gateway container, its config files and its TLS material: a certificate set by
    hand, or the ACME sidecar (`Acme`) whose volumes it mounts read-only."""

    url: pulumi.Output[str]
    routes: pulumi.Output[list[str]]

    def __init__(self, name: str, args: GatewayArgs, *, opts: pulumi.ResourceOptions | None = None):
        super().__init__("coderz:edge:Gateway", name, None, opts)
        spec = args.catalog.get("gateway")
        render = gateway_render(args)
        files: list[tuple[str, InputStr, int]] = [(CONF_PATH, render_nginx_conf(render), 0o644)]
        files += [(f"{LUA_DIR}/{file}", text, 0o644) for file, text in sorted(lua_files().items())]
        files += [(f"{SITE_ROOT}/{file}", text, 0o644) for file, text in sorted(args.site.items())]
        if args.tls:
            files += [(TLS_CERT_PATH, args.tls.certificate, 0o644),
                      (TLS_KEY_PATH, pulumi.Output.secret(args.tls.private_key), 0o600)]
        volumes = []
        if args.acme:
            if not args.domain:
                raise ValueError("ACME needs the gateway's domain")
            self.acme = Acme(
                f"{name}-acme",
                AcmeArgs(config=args.acme, domain=args.domain, gateway=spec, placement=args.placement,
                         keep_data=args.keep_data),
                opts=pulumi.ResourceOptions(parent=self),
            )
            volumes = self.acme.gateway_mounts
        self.service = ContainerService(
            name,
            ContainerServiceArgs(
                spec=spec,
                placement=args.placement,
                envs=[pulumi.Output.secret(pulumi.Output.concat(f"{REDIS_PASSWORD_ENV}=", args.redis_password))],
                # Nothing here may follow routes, Lua or TLS: every container input forces a
                # replacement, and replacing the gateway drops its connections.
                files=[ConfigFile(path=CONF_PATH, content=bootstrap_conf(render))],
                volumes=volumes,
                depends_on=args.depends_on,
            ),
            opts=pulumi.ResourceOptions(parent=self),
        )
        (container,) = self.service.containers
        # Secret when the TLS key is in it: only ever on stdin, never in the command line.
        archive = pulumi.Output.all(*[content for _, content, _ in files]).apply(
            lambda contents: config_archive([ReloadFile(path, text, mode) for (path, _, mode), text in zip(files, contents)])
        )
        self.config_digest = archive.apply(lambda text: hashlib.sha256(text.encode()).hexdigest())
        self.config = args.shell.run(
            f"{name}-config",
            create=container.name.apply(lambda container_name: reload_command(container_name, pid_file=render.pid_path)),
            stdin=archive,
            # the files, the script, and a new container (which starts from the bootstrap config)
            triggers=[self.config_digest, SCRIPT_DIGEST, container.id],
            opts=pulumi.ResourceOptions(parent=self, depends_on=[container]),
        )
        scheme, port = ("https", args.public_https_port) if args.tls or args.acme else ("http", spec.public_ports[0].host)
        host = args.domain or "localhost"
        default_port = {"http": 80, "https": 443}[scheme]
        self.url = pulumi.Output.from_input(f"{scheme}://{host}" + ("" if port == default_port else f":{port}"))
        self.routes = pulumi.Output.from_input([r.path_prefix for r in render.routes])
        self.register_outputs({"url": self.url, "routes": self.routes, "config_digest": self.config_digest})
