"""nginx rules for serving a folder of static files, shared by the docs site's server and the
gateway's landing page: right content types, ETag and Last-Modified (nginx's own, so a
conditional request gets 304), long-lived caching for fingerprinted assets and revalidation for
everything else, no directory listing, nothing outside the folder, nothing hidden."""

from __future__ import annotations

# Without `always`: a year only for a file found (200/304); a 404 of an asset not there yet (a
# page newer than its assets, mid-deploy) must not be kept by browsers for a year.
IMMUTABLE = 'add_header Cache-Control "public, max-age=31536000, immutable";'
REVALIDATE = 'add_header Cache-Control "no-cache" always;'
# A name that carries a content hash: `main.57a0d79d.min.css`, `site.3f2a9c1b0d.css`.
HASHED_NAME = r'"\.[0-9a-f]{8,64}\.[^/]+$"'
HIDDEN = "location ~ /\\. { return 404; }"  # .git, .env: never served


def static_locations(prefix: str, root: str, *, fingerprinted: tuple[str, ...] = (), extra_headers: str = "",
                     indent: str = "        ") -> str:
    """`location` blocks serving `root` at URL `prefix` (ending in /). Under one of
    `fingerprinted` (URL prefixes), a file whose name carries a content hash is cached for a
    year; everything else (MkDocs' lunr scripts and favicon sit unhashed under /assets/) is
    revalidated on every use. `extra_headers` repeats the server's `add_header` lines (a
    location with its own `add_header` inherits none)."""
    if not prefix.startswith("/") or not prefix.endswith("/") or not root.startswith("/"):
        raise ValueError("prefix and root are absolute, the prefix ends with /")
    directives = [f"alias {root.rstrip('/')}/;", "autoindex off;", "etag on;", "if_modified_since exact;",
                  "disable_symlinks on;"]
    extra = [h for h in extra_headers.splitlines() if h.strip()]
    blocks = []
    for assets in fingerprinted:
        if not assets.startswith(prefix) or not assets.endswith("/") or assets == prefix:
            raise ValueError(f"{assets} is not a folder under {prefix}")
        folder = f"{root.rstrip('/')}/{assets[len(prefix):]}"
        # Without `always`, the year goes only with a file found: a 404 of an asset not there
        # yet (a page newer than its assets, mid-deploy) must not be kept by browsers for a year.
        blocks.append([f"location ^~ {assets} {{", f"    alias {folder};", *(f"    {d}" for d in directives[1:]),
                       f"    {REVALIDATE}", *(f"    {h}" for h in extra), f"    {HIDDEN}",
                       f"    location ~ {HASHED_NAME} {{", f"        {IMMUTABLE}", *(f"        {h}" for h in extra), "    }",
                       "    try_files $uri =404;", "}"])
    blocks.append([f"location ^~ {prefix} {{", *(f"    {d}" for d in directives),
                   f"    {REVALIDATE}", *(f"    {h}" for h in extra),
                   # a folder's index.html, never a listing
                   f"    {HIDDEN}",
                   "    try_files $uri $uri/index.html =404;", "}"])
    return "\n".join(indent + line for block in blocks for line in block) + "\n"


def render_static_server(*, port: int, root: str, fingerprinted: tuple[str, ...] = (), listen: str = "",
                         pid: str = "/tmp/nginx.pid", temp_dir: str = "/tmp", error_log: str = "/dev/stderr",
                         access_log: str = "/dev/stdout") -> str:
    """A whole nginx.conf for a container that serves `root` at / on `port` (the docs site)."""
    address = f"{listen}:{port}" if listen else str(port)
    return f"""# rendered by components/static_files.py
worker_processes 1;
pid {pid};
error_log {error_log} warn;
events {{ worker_connections 256; }}
http {{
    include /etc/nginx/mime.types;
    default_type application/octet-stream;
    access_log {access_log};
    client_body_temp_path {temp_dir}/client_body;
    proxy_temp_path {temp_dir}/proxy;
    fastcgi_temp_path {temp_dir}/fastcgi;
    uwsgi_temp_path {temp_dir}/uwsgi;
    scgi_temp_path {temp_dir}/scgi;
    server_tokens off;
    sendfile on;
    server {{
        listen {address};
        absolute_redirect off;
{static_locations("/", root, fingerprinted=fingerprinted)}    }}
}}
"""
