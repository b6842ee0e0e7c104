"""MkDocs hook: every inline <script> of a page becomes a file, named by its content hash under
assets/javascripts/inline/, loaded from where the block stood.

Why: the gateway's CSP (`default-src 'self'`) refuses inline scripts, and Material writes two
into every page (its storage scope, the tab that the URL's anchor opens). A classic script tag
runs at the same point of parsing as the block it replaces, so the page behaves the same, and
the policy stays as strict as the rest of the platform's with no list of hashes to keep in
step with Material's templates. Data blocks (`type="application/json"`) are not scripts: kept.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

from mkdocs.utils import get_relative_url

FOLDER = "assets/javascripts/inline"
SCRIPT = re.compile(r"<script(?P<attrs>(?:\s[^>]*)?)>(?P<body>.*?)</script>", re.S | re.I)
TYPE = re.compile(r"""\btype\s*=\s*["']?([^"'\s>]+)""", re.I)
EXECUTABLE_TYPES = {"", "text/javascript", "application/javascript", "module"}

_files: dict[str, str] = {}


def executable_inline(attrs: str, body: str) -> bool:
    kind = TYPE.search(attrs)
    return bool(body.strip()) and not re.search(r"\bsrc\s*=", attrs, re.I) and \
        (kind.group(1).lower() if kind else "") in EXECUTABLE_TYPES


def externalise(html: str, page_url: str) -> str:
    """`html` with each executable inline script replaced by a tag loading the same code."""
    def replace(match: re.Match) -> str:
        attrs, body = match.group("attrs"), match.group("body")
        if not executable_inline(attrs, body):
            return match.group(0)
        name = f"{FOLDER}/{hashlib.sha256(body.encode()).hexdigest()[:16]}.js"
        _files[name] = body
        return f'<script{attrs} src="{get_relative_url(name, page_url)}"></script>'
    return SCRIPT.sub(replace, html)


def on_pre_build(config) -> None:
    _files.clear()  # `mkdocs serve` rebuilds in one process


def on_post_page(output: str, page, config) -> str:
    return externalise(output, page.url)


def on_post_build(config) -> None:
    for name, body in _files.items():
        path = Path(config["site_dir"]) / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(body, encoding="utf-8")
