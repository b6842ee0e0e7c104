"""`DocsSite`: the MkDocs Material site of docs/, built into an image by the program (its tag is
the content hash of docs/) and served by nginx with the static-file rules of static_files.py;
the gateway routes /docs/ to it, a stack may also bind it on its loopback port."""

from __future__ import annotations

from pathlib import Path

import pulumi
from pydantic import BaseModel, ConfigDict, Field

from components.container import ConfigFile, ContainerService, ContainerServiceArgs, Placement
from components.spec import Frozen, ServiceSpec
from components.static_files import render_static_server

DOCS_SOURCE = Path(__file__).resolve().parent.parent / "docs"
# a local build's output in docs/: not part of the image's source (its tag's hash skips them)
LOCAL_OUTPUT = ("site", "node_modules")
SITE_ROOT = "/usr/share/nginx/html"
LISTEN_PORT = 8080  # nginx-unprivileged's port
# MkDocs Material names its CSS and JS by content hash: they can be cached for a year.
FINGERPRINTED = ("/assets/",)


class DocsConfig(Frozen):
    """`coderz:docs`: the docs site, always at /docs/ behind the gateway; `publish` also binds
    it on 127.0.0.1:<ports.base+33>."""

    enabled: bool = False
    publish: bool = False
    cache_ttl_s: int = Field(default=0, ge=0, le=86_400)


class DocsSiteArgs(BaseModel):
    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    spec: ServiceSpec
    placement: Placement


class DocsSite(pulumi.ComponentResource):
    """Owns the docs image (built from docs/) and its nginx container."""

    url: pulumi.Output[str]

    def __init__(self, name: str, args: DocsSiteArgs, *, opts: pulumi.ResourceOptions | None = None):
        super().__init__("coderz:tools:DocsSite", name, None, opts)
        conf = render_static_server(port=args.spec.port, root=SITE_ROOT, fingerprinted=FINGERPRINTED)
        self.service = ContainerService(name, ContainerServiceArgs(
            spec=args.spec, placement=args.placement, build_context=DOCS_SOURCE,
            files=[ConfigFile(path="/etc/nginx/nginx.conf", content=conf)],
        ), opts=pulumi.ResourceOptions(parent=self))
        route = args.spec.route.path_prefix if args.spec.route else "/"
        self.url = pulumi.Output.from_input(route)
        self.register_outputs({"url": self.url})
