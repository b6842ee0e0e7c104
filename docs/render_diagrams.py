"""Render every `pages/**/*.mmd` to an SVG file beside it, at build time: mermaid (the exact
release in package.json, installed by `npm ci` from package-lock.json) runs once in headless
Chromium, and the pages show the diagrams as images. A reader's browser then runs no mermaid,
loads nothing from outside the stack and needs no inline style, so the gateway's CSP holds.

Usage: python3 render_diagrams.py MERMAID_JS PAGES_DIR   (CHROMIUM: the browser, `chromium`)
Used by docs/Dockerfile and by tests/test_docs_browser.py: one way to build the site.
"""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

# Plain SVG text labels (no HTML in <foreignObject>): what every browser draws inside an <img>.
MERMAID_CONFIG = {"startOnLoad": False, "securityLevel": "strict", "htmlLabels": False,
                  "flowchart": {"htmlLabels": False}, "themeVariables": {"fontFamily": "sans-serif"}}
PAGE = """<!doctype html><meta charset="utf-8"><body>
<script src="mermaid.min.js"></script>
<script id="sources" type="application/json">{sources}</script>
<script>
(async () => {{
  mermaid.initialize({config});
  const sources = JSON.parse(document.getElementById("sources").textContent);
  for (const [name, text] of Object.entries(sources)) {{
    const out = document.createElement("pre");
    out.dataset.name = name;
    try {{
      out.className = "svg";
      out.textContent = (await mermaid.render(name.replace(/\\W/g, "-"), text)).svg;
    }} catch (err) {{
      out.className = "error";
      out.textContent = String(err && err.message || err);
    }}
    document.body.append(out);
  }}
}})();
</script>
"""
RESULT = re.compile(r'<pre data-name="([^"]+)" class="(svg|error)">(.*?)</pre>', re.S)


def chromium_argv(browser: str, profile: str) -> list[str]:
    """Headless, nothing but loopback reachable (every other name fails to resolve)."""
    # --no-sandbox: run as root (the image build, CI); --disable-dev-shm-usage: Docker's 64 MB /dev/shm
    return [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
            "--disable-extensions", "--disable-background-networking", "--disable-component-update", "--disable-sync",
            f"--user-data-dir={profile}", "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1"]


def render(sources: dict[str, str], mermaid_js: Path, browser: str = "chromium") -> dict[str, str]:
    """Diagram name -> SVG text; raises with mermaid's message when one does not parse."""
    with tempfile.TemporaryDirectory(prefix="diagrams-") as folder:
        shutil.copy(mermaid_js, Path(folder) / "mermaid.min.js")
        page = Path(folder) / "render.html"
        page.write_text(PAGE.format(sources=json.dumps(sources).replace("</", "<\\/"),
                                    config=json.dumps(MERMAID_CONFIG)))
        # Virtual time runs ahead while the page idles: the DOM is dumped once rendering is done.
        result = subprocess.run([*chromium_argv(browser, f"{folder}/profile"), "--virtual-time-budget=60000",
                                 "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=120)
    found = {name: (kind, html.unescape(text)) for name, kind, text in RESULT.findall(result.stdout)}
    errors = [f"{name}: {text}" for name, (kind, text) in found.items() if kind == "error"]
    missing = sorted(set(sources) - set(found))
    if errors or missing or result.returncode != 0:
        raise RuntimeError("mermaid could not render " + "; ".join(errors + [f"{name}: no output" for name in missing])
                           + f" (chromium exit {result.returncode}: {result.stderr[-500:]})")
    return {name: sized(text) for name, (_, text) in found.items()}


def sized(svg: str) -> str:
    """The root gets its viewBox's size (mermaid writes width="100%"): an <img> of the file then
    has a natural size, and the page can show it full size in a box that scrolls."""
    box = re.search(r'<svg [^>]*viewBox="[-\d.]+ [-\d.]+ ([\d.]+) ([\d.]+)"', svg)
    if box is None:
        raise RuntimeError("mermaid's SVG has no viewBox")
    return svg.replace('width="100%"', f'width="{box.group(1)}" height="{box.group(2)}"', 1)


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    mermaid_js, pages = Path(argv[0]), Path(argv[1])
    files = sorted(pages.rglob("*.mmd"))
    svgs = render({str(path.relative_to(pages)): path.read_text() for path in files}, mermaid_js,
                  os.environ.get("CHROMIUM", "chromium"))
    for path in files:
        path.with_suffix(".svg").write_text(svgs[str(path.relative_to(pages))])
        print(f"rendered {path.with_suffix('.svg')}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
