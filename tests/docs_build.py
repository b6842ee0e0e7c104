"""The docs site built the way docs/Dockerfile builds it, in a scratch copy of docs/: `npm ci`
(mermaid at the release package-lock.json pins, integrity-checked), render_diagrams.py in
headless Chromium, `mkdocs build --strict`. The commands are kept here once and
test_docs_browser.py checks that the Dockerfile runs the same ones.
"""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path

from components.docs_site import LOCAL_OUTPUT
from infra import docs_site
from tests.servers import require_tool, scratch_dir

DOCS = docs_site.DOCS
MERMAID_JS = "node_modules/mermaid/dist/mermaid.min.js"
# as docs/Dockerfile runs them (its stages work in /docs and write the site to /site)
NPM_CI = ("npm", "ci", "--ignore-scripts", "--no-audit", "--no-fund")
RENDER = ("python3", "render_diagrams.py", MERMAID_JS, "pages")
MKDOCS_BUILD = ("mkdocs", "build", "--strict", "-f", "/docs/mkdocs.yml", "-d", "/site")


def _load_renderer():
    spec = importlib.util.spec_from_file_location("render_diagrams", DOCS / "render_diagrams.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


render_diagrams = _load_renderer()


def run(argv: list[str], cwd: Path, timeout: float = 300) -> None:
    result = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, f"{' '.join(argv)}: {result.stdout[-2000:]}{result.stderr[-2000:]}"


def npm_install(folder: Path) -> Path:
    """`npm ci` of docs/package.json and its lock in `folder`; returns folder/node_modules.
    --prefer-offline: npm's cache answers when it holds the locked tarballs (same hashes)."""
    require_tool("npm")
    for name in ("package.json", "package-lock.json"):
        shutil.copy(DOCS / name, folder / name)
    run([*NPM_CI, "--prefer-offline"], folder)
    assert (folder / MERMAID_JS).is_file()
    return folder / "node_modules"


def copy_docs(node_modules: Path) -> Path:
    """A scratch copy of docs/ (no local build output), with the installed node_modules."""
    target = scratch_dir("docs-src-") / "docs"
    shutil.copytree(DOCS, target, ignore=lambda folder, names: [
        n for n in names if n in LOCAL_OUTPUT or (n.endswith(".svg") and "generated" in folder)])
    (target / "node_modules").symlink_to(node_modules)
    return target


def render(docs: Path) -> None:
    """The diagrams of the copy `docs` rendered to SVG, beside their sources."""
    require_tool("chromium")
    run([sys.executable, *RENDER[1:]], docs, timeout=120)


def build(docs: Path, site: Path) -> Path:
    """Render the diagrams and build the site from the copy `docs` into `site`."""
    render(docs)
    return mkdocs_build(docs, site)


def mkdocs_build(docs: Path, site: Path) -> Path:
    mkdocs = shutil.which("mkdocs") or str(Path(sys.executable).parent / "mkdocs")
    if not Path(mkdocs).exists():
        require_tool("mkdocs")
    run([mkdocs, *MKDOCS_BUILD[1:3], "--quiet", "-f", str(docs / "mkdocs.yml"), "-d", str(site)], docs, timeout=120)
    return site
