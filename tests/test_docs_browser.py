"""The docs site in a real browser behind the real gateway: built as docs/Dockerfile builds it
(tests/docs_build.py), served by the docs container's nginx config through the rendered gateway
with its real headers, loaded in headless Chromium (tests/browser.py).

What a reader must get: the architecture diagram drawn with every service of the catalog, no
Content-Security-Policy violation, no script error, no request to anything but the stack. The
same check is run on sites with one fault planted each (the old CDN mermaid, Material's inline
scripts left inline, Google Fonts, the gateway's CSP without the docs route's data: images): each
must fail it, so the check is known to see what it is there for.
"""

from __future__ import annotations

import re
import shutil
import xml.etree.ElementTree as ET
from importlib.metadata import version
from pathlib import Path
from typing import Callable, Iterator

import pytest

from components.gateway.render import content_security_policy, routes_from_catalog
from infra.catalog import declare_services
from infra.config import stack_file_config
from infra.docs import diagram
from tests.browser import Chromium, Visit
from tests.docs_build import DOCS, MKDOCS_BUILD, NPM_CI, RENDER, copy_docs, mkdocs_build, render
from tests.servers import http, scratch_dir

ARCHITECTURE = "generated/architecture/"
PAGES = ("", "operating/", ARCHITECTURE, "generated/ports/", "generated/config/")
PROBE = """({
  diagrams: [...document.querySelectorAll("img.diagram")].map((img) => ({
    src: img.currentSrc, width: img.naturalWidth, height: img.naturalHeight, complete: img.complete,
    shown: img.getBoundingClientRect().width})),
  mermaidBlocks: document.querySelectorAll(".mermaid").length,
  title: document.title,
})"""


def _edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, f"{path.name} no longer has {old!r}: update the planted fault"
    path.write_text(text.replace(old, new))


def cdn_mermaid(docs: Path) -> None:
    """The site before this fix: a mermaid fence, which Material draws with mermaid.js from a CDN."""
    prod = declare_services(stack_file_config("prod"))
    (docs / "pages" / "generated" / "architecture.md").write_text(f"# Architecture\n\n{diagram(prod)}\n")
    _edit(docs / "mkdocs.yml", "  - pymdownx.superfences\n", "  - pymdownx.superfences:\n      custom_fences:\n"
          "        - name: mermaid\n          class: mermaid\n"
          "          format: !!python/name:pymdownx.superfences.fence_code_format\n")


def inline_scripts(docs: Path) -> None:
    _edit(docs / "mkdocs.yml", "hooks:\n  - hooks/external_scripts.py\n", "")


def google_fonts(docs: Path) -> None:
    _edit(docs / "mkdocs.yml", "  font: false\n", "")


VARIANTS: dict[str, Callable[[Path], None]] = {
    "built": lambda docs: None, "cdn-mermaid": cdn_mermaid, "inline-scripts": inline_scripts,
    "google-fonts": google_fonts,
}


@pytest.fixture(scope="module")
def sites(docs_node_modules) -> Iterator[Path]:
    """One folder, a built site per variant in it (the diagrams rendered once for all)."""
    root = scratch_dir("docs-sites-")
    rendered = copy_docs(docs_node_modules)
    try:
        render(rendered)
        for name, plant in VARIANTS.items():
            docs = root / "sources" / name
            shutil.copytree(rendered, docs, symlinks=True)
            plant(docs)
            mkdocs_build(docs, root / name)
        yield root
    finally:
        shutil.rmtree(rendered.parent, ignore_errors=True)
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def gateway_url(sites) -> Iterator[str]:
    """The real gateway: /docs/ is the catalog's docs route (its own CSP); /plain/ is the same
    site behind a route with the platform's CSP alone."""
    from tests.servers import redis_server
    from tests.test_docs_site import static_server
    from tests.test_gateway_nginx import REDIS_PASSWORD, DnsStub, gateway

    (docs_route,) = [r for r in routes_from_catalog(declare_services(stack_file_config("dev"))) if r.name == "docs"]
    dns = DnsStub()
    try:
        with redis_server(REDIS_PASSWORD) as redis_port, static_server(sites) as port:
            dns.records["docs"] = ["127.0.0.1"]
            routes = (docs_route.model_copy(update={"port": port}),
                      docs_route.model_copy(update={"name": "plain", "port": port, "path_prefix": "/plain/",
                                                    "data_images": False}))
            with gateway(routes, redis_port=redis_port, resolver=dns.address) as gw:
                yield gw.url
    finally:
        dns.close()


@pytest.fixture(scope="module")
def browser() -> Iterator[Chromium]:
    chromium = Chromium()
    try:
        yield chromium
    finally:
        chromium.close()


def diagram_labels(svg: str) -> str:
    root = ET.fromstring(svg)
    assert root.tag == "{http://www.w3.org/2000/svg}svg"
    return " ".join(text for element in root.iter() if element.tag.endswith("}text") for text in element.itertext())


def problems(visit: Visit, diagram_expected: bool) -> list[str]:
    """What a reader would suffer on the visited page; [] when it works."""
    found = [f"CSP violation: {v}" for v in visit.violations]
    found += [f"script error: {e}" for e in visit.errors]
    found += [f"request outside the stack: {url}" for url in visit.remote_requests]
    if not diagram_expected:
        return found
    drawn = [d for d in visit.page["diagrams"] if d["complete"] and d["width"] > 0]
    sources = {d["src"] for d in visit.page["diagrams"]}
    if not drawn or len(drawn) != len(visit.page["diagrams"]) or len(sources) != 1 or visit.page["mermaidBlocks"]:
        return found + [f"no diagram drawn: {visit.page}"]
    status, headers, body = http("GET", sources.pop())
    if status != 200 or not headers["content-type"].startswith("image/svg+xml"):
        return found + [f"diagram {drawn[0]['src']}: {status} {headers.get('content-type')}"]
    labels = diagram_labels(body.decode())
    services = [s.name for s in declare_services(stack_file_config("prod")).services]
    missing = [name for name in services if not re.search(rf"(?<![\w-]){re.escape(name)}(?![\w-])", labels)]
    return found + ([f"services missing from the diagram: {missing}"] if missing else [])


def test_every_page_works_under_the_gateways_csp_and_draws_the_diagram(gateway_url, browser):
    visits = {page: browser.visit(f"{gateway_url}/docs/built/{page}", PROBE) for page in PAGES}
    for page, visit in visits.items():
        assert problems(visit, diagram_expected=page == ARCHITECTURE) == [], page
        assert visit.page["title"].endswith("coderz platform"), visit.page
        assert any(url.endswith(".css") for url in visit.requests), "the page loaded no stylesheet"
    overview, full_size = visits[ARCHITECTURE].page["diagrams"]  # the same file twice
    assert 0 < overview["shown"] < 1000 < full_size["width"]  # one fits the page, one scrolls at natural size


@pytest.mark.parametrize("path, expected", [
    ("/docs/cdn-mermaid/", "request outside the stack: https://unpkg.com/mermaid"),
    ("/docs/inline-scripts/", "CSP violation: script-src"),
    ("/docs/google-fonts/", "request outside the stack: https://fonts.googleapis.com/"),
    ("/plain/built/", "CSP violation: img-src blocked data"),
], ids=["cdn-mermaid", "inline-scripts", "google-fonts", "csp-without-data-images"])
def test_each_planted_fault_fails_the_same_check(gateway_url, browser, path, expected):
    found = problems(browser.visit(f"{gateway_url}{path}{ARCHITECTURE}", PROBE), diagram_expected=True)
    assert any(problem.startswith(expected) for problem in found), found


def test_the_docs_route_alone_gets_data_images_in_its_csp():
    routes = {r.name: r for r in routes_from_catalog(declare_services(stack_file_config("prod")))}
    assert content_security_policy(routes["docs"]) == content_security_policy() + "; img-src 'self' data:"
    assert all(content_security_policy(r) == content_security_policy() for name, r in routes.items() if name != "docs")
    assert "'unsafe-inline'" not in content_security_policy(routes["docs"])


def test_the_dockerfile_runs_the_commands_the_tests_run():
    dockerfile = (DOCS / "Dockerfile").read_text()
    for command in (NPM_CI, RENDER, MKDOCS_BUILD):
        assert f"RUN {' '.join(command)}\n" in dockerfile, command
    assert "COPY package.json package-lock.json ./" in dockerfile
    # the tests build with the Material release the image installs (pyproject's test extra)
    assert f"RUN pip install --no-cache-dir mkdocs-material=={version('mkdocs-material')}\n" in dockerfile
