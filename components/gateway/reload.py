"""How a config change reaches the running gateway without replacing its container.

Every input of a `docker.Container`, uploads included, forces a replacement when it changes
(kreuzwerker/terraform-provider-docker, resource_docker_container.go: `ForceNew`), and the
gateway cannot be replaced without a gap: it alone binds the public ports. So its container is
created with `bootstrap_conf` only, which depends on no route, Lua file or certificate, and
the real files reach it through one command on the Docker host:

    docker exec -i <gateway> sh -c '<reload.sh>' gateway-reload <root> <pid file> <nginx>

fed on stdin with `config_archive(files)`: the base64 text of a gzipped tar. reload.sh puts
the files in place, checks them with `nginx -t`, and reloads nginx gracefully, or puts the old
files back and fails. The command runs again only when its triggers change: the archive, the
script, or the container (a new container starts from the bootstrap config).
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import io
import shlex
import tarfile
from dataclasses import dataclass
from importlib import resources
from pathlib import PurePosixPath
from typing import Sequence

from components.gateway.render import GatewayRender

# The folder every gateway file lives under (nginx.conf, lua/, conf/tls/ in the OpenResty image).
ROOT = "/usr/local/openresty/nginx"
NGINX = (f"{ROOT}/sbin/nginx",)  # OpenResty's nginx, by path: no reliance on the exec's PATH
SCRIPT = resources.files(__package__).joinpath("reload.sh").read_text(encoding="utf-8")
SCRIPT_DIGEST = hashlib.sha256(SCRIPT.encode()).hexdigest()


@dataclass(frozen=True)
class ReloadFile:
    """One file of the gateway's config: absolute path in the container, text, mode."""

    path: str
    content: str
    mode: int = 0o644


def _member(path: str, root: str) -> str:
    relative = PurePosixPath(path).relative_to(root)  # ValueError when outside root
    if not PurePosixPath(path).is_absolute() or ".." in relative.parts or not relative.parts:
        raise ValueError(f"{path} is not a file under {root}")
    return relative.as_posix()


def config_archive(files: Sequence[ReloadFile], root: str = ROOT) -> str:
    """The base64 text of a gzipped tar of `files`, paths relative to `root`. Byte for byte the
    same for the same files (no times, owners), so its digest changes only with the content."""
    members = sorted((_member(f.path, root), f) for f in files)
    names = [name for name, _ in members]
    if not names or len(set(names)) != len(names):
        raise ValueError("the gateway config needs files, each path once")
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for name, file in members:
            data = file.content.encode()
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), file.mode, 0
            tar.addfile(info, io.BytesIO(data))
    return base64.b64encode(gzip.compress(raw.getvalue(), mtime=0)).decode()


def reload_command(container: str, *, pid_file: str, root: str = ROOT, nginx: Sequence[str] = NGINX) -> str:
    """The host command that installs the archive on its stdin into `container` and reloads
    the nginx whose master's pid is in `pid_file`."""
    return " ".join(["docker", "exec", "-i", shlex.quote(container), "sh", "-c", shlex.quote(SCRIPT),
                     "gateway-reload", shlex.quote(root), shlex.quote(pid_file), *map(shlex.quote, nginx)])


def bootstrap_conf(render: GatewayRender) -> str:
    """What a new gateway container starts with until the deploy installs its real config:
    /health answers (the container turns healthy, the deploy goes on), everything else 503.
    Only what the real config shares enters it (the listen address, so a reload can keep the
    socket; the pid file, so `nginx -s reload` finds the master; the temp folder, modules), so
    no route, Lua or TLS change touches the container."""
    temp = render.temp_dir
    listen = f"{render.listen_address}:{render.http_port}" if render.listen_address else str(render.http_port)
    modules = "".join(f"load_module {module};\n" for module in render.load_modules)
    return f"""# components/gateway/reload.py: until the deploy installs the real config (reload.sh)
{modules}worker_processes 1;
pid {render.pid_path};
error_log {render.error_log} {render.error_log_level};

events {{
    worker_connections 64;
}}

http {{
    access_log off;
    client_body_temp_path {temp}/nginx-client-body;
    proxy_temp_path {temp}/nginx-proxy;
    fastcgi_temp_path {temp}/nginx-fastcgi;
    uwsgi_temp_path {temp}/nginx-uwsgi;
    scgi_temp_path {temp}/nginx-scgi;
    server {{
        listen {listen} default_server;
        default_type application/json;
        location = /health {{
            return 200 '{{"status":"starting"}}\\n';
        }}
        location / {{
            return 503 '{{"error":"the gateway is starting"}}\\n';
        }}
    }}
}}
"""
