"""The landing page and static assets the gateway serves from site/ (at / and /static/).

The files are uploaded into the gateway container through the Docker API, so a change of
content replaces it. Every asset under static/ gets its content hash in its name
(`site.css` -> `site.3f2a9c1b0d.css`) and index.html is rewritten to match: the gateway can let
browsers cache assets for a year, while the page itself is revalidated on every visit.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

SITE_SOURCE = Path(__file__).resolve().parent.parent.parent / "site"
SITE_ROOT = "/usr/local/openresty/nginx/site"  # in the gateway container
STATIC = "static"
SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*(\.[A-Za-z0-9]+)+$")


def fingerprinted(name: str, content: bytes) -> str:
    stem, dot, suffix = name.partition(".")
    return f"{stem}.{hashlib.sha256(content).hexdigest()[:10]}{dot}{suffix}"


def utf8_text(path: Path) -> str:
    try:
        return path.read_bytes().decode("utf-8")
    except UnicodeDecodeError:
        raise ValueError(f"{path} is not UTF-8 text") from None


def site_files(source: Path = SITE_SOURCE) -> dict[str, str]:
    """Path under the site root -> text: index.html, and static/ with fingerprinted names.
    Refuses what could surprise: a symlink (index.html, static/ or a file in it: it would ship
    what it points at), a hidden or oddly named file, a nested folder, a file that is not UTF-8
    text (uploads are text)."""
    index, static = source / "index.html", source / STATIC
    for path in (index, static):
        if path.is_symlink():
            raise ValueError(f"{path} is a symlink: site/ holds plain files only")
    if not index.is_file():
        raise ValueError(f"{index} is missing")
    files: dict[str, str] = {}
    page = utf8_text(index)
    for path in sorted(static.iterdir()) if static.is_dir() else []:
        if path.is_symlink():
            raise ValueError(f"{path} is a symlink: site/ holds plain files only")
        if not path.is_file() or not SAFE_NAME.match(path.name):
            raise ValueError(f"{path}: only plain files named like name.ext belong in {STATIC}/")
        text = utf8_text(path)
        name = fingerprinted(path.name, path.read_bytes())
        files[f"{STATIC}/{name}"] = text
        page = re.sub(rf'(["\'(])/{STATIC}/{re.escape(path.name)}(["\')])', rf"\g<1>/{STATIC}/{name}\g<2>", page)
    extra = sorted(p.name for p in source.iterdir() if p.name not in ("index.html", STATIC))
    if extra:
        raise ValueError(f"{source}: only index.html and {STATIC}/ are served, not {', '.join(extra)}")
    # What the rewrite missed (`/static/site.css?v=2`, a file not in static/) would be a 404 in production.
    missing = sorted({ref for ref in re.findall(rf"/{STATIC}/[^\s\"'()<>]*", page) if ref[1:] not in files})
    if missing:
        raise ValueError(f"{index} refers to {', '.join(missing)}: not a file of {STATIC}/ (write /{STATIC}/name.ext, quoted)")
    return {"index.html": page, **files}
