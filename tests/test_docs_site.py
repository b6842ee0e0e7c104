"""The docs site: generated pages up to date, `mkdocs build --strict`, and the built site served
by real nginx with the docs server's rendered config, alone and behind the real gateway."""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import importlib.util
import re
import shutil
import subprocess
from pathlib import Path
from typing import Iterator

import pytest

from components.static_files import render_static_server
from infra import docs_site
from tests.docs_build import build, copy_docs, render_diagrams
from tests.servers import free_port, http, process, require_tool, scratch_dir

_hook = importlib.util.spec_from_file_location("external_scripts", docs_site.DOCS / "hooks" / "external_scripts.py")
external_scripts = importlib.util.module_from_spec(_hook)
_hook.loader.exec_module(external_scripts)

FINGERPRINTED = ("/assets/",)


def test_generated_pages_are_up_to_date():
    assert docs_site.stale() == [], "run: python -m infra.docs_site --write"


def test_a_stale_page_is_found(tmp_path, monkeypatch):
    for name, text in docs_site.pages().items():
        (tmp_path / name).write_text(text)
    monkeypatch.setattr(docs_site, "GENERATED", tmp_path)
    assert docs_site.stale() == []
    (tmp_path / "ports.md").write_text((tmp_path / "ports.md").read_text().replace("5432", "5433"))
    assert docs_site.stale() == ["ports.md"]


def test_pages_follow_the_declarations():
    pages = docs_site.pages()
    assert "| pgadmin |" in pages["ports.md"] and "127.0.0.1:5080" in pages["ports.md"]
    assert "gateway -->|/docs/| docs" in pages["architecture.mmd"] and "](architecture.svg)" in pages["architecture.md"]
    assert "| `smtpRelay.enabled` | bool | `false` | |" in pages["config.md"]


@pytest.fixture(scope="module")
def built_site(docs_node_modules) -> Iterator[Path]:
    """The site as docs/Dockerfile builds it (tests/docs_build.py)."""
    docs = copy_docs(docs_node_modules)
    try:
        yield build(docs, docs.parent / "site")
    finally:
        shutil.rmtree(docs.parent, ignore_errors=True)


def test_mkdocs_build_strict_gives_every_page(built_site):
    for page in ("index.html", "operating/index.html", "generated/ports/index.html", "generated/config/index.html",
                 "generated/architecture/index.html"):
        assert (built_site / page).is_file(), page
    assert "pgadmin" in (built_site / "generated/ports/index.html").read_text()
    architecture = (built_site / "generated/architecture/index.html").read_text()
    assert 'src="../architecture.svg"' in architecture and "mermaid" not in architecture
    assert (built_site / "generated/architecture.svg").read_text().startswith("<svg ")
    assert not list(built_site.rglob("*.mmd")), "diagram sources are not published"


def test_no_page_runs_an_inline_script_and_none_loads_from_outside(built_site):
    pages = [p for p in built_site.rglob("*.html") if p.name != "404.html"]  # 404.html: see README
    assert len(pages) >= 5
    for page in pages:
        text = page.read_text()
        inline = [m.group(0)[:80] for m in external_scripts.SCRIPT.finditer(text)
                  if external_scripts.executable_inline(m.group("attrs"), m.group("body"))]
        assert inline == [], (page, inline)
        # what loads (a link a reader may follow is no load)
        assert not re.search(r"""<(?!a\s)[a-z]+\s[^>]*\b(src|href)=["']?(https?:)?//""", text), page
    scripts = sorted((built_site / external_scripts.FOLDER).glob("*.js"))
    assert scripts and all(s.name == hashlib.sha256(s.read_bytes()).hexdigest()[:16] + ".js" for s in scripts)


@pytest.mark.parametrize("tag, moved", [
    ("<script>var a=1</script>", True),
    ('<SCRIPT type="module" id=m>import "./x.js"</SCRIPT>', True),
    ("<script type='text/javascript'>f()</script>", True),
    ('<script id="__config" type="application/json">{"a": 1}</script>', False),
    ('<script src="x.js"></script>', False),
    ("<script>  </script>", False),
])
def test_the_hook_moves_exactly_the_executable_inline_scripts(tag, moved):
    out = external_scripts.externalise(f"<p>{tag}</p>", "generated/architecture/")
    if not moved:
        assert out == f"<p>{tag}</p>"
        return
    (name,) = re.findall(r'src="\.\./\.\./(assets/javascripts/inline/[0-9a-f]{16}\.js)"', out)
    body = re.search(r">(.*)</script>", tag, re.S | re.I).group(1)
    assert external_scripts._files[name] == body and body not in out


def test_a_diagram_that_does_not_parse_fails_the_build_with_its_name(docs_node_modules, tmp_path):
    require_tool("chromium")
    with pytest.raises(RuntimeError, match=r"mermaid could not render broken\.mmd: .*(Parse error|Syntax)"):
        render_diagrams.render({"broken.mmd": "flowchart TB\n  a -->|unclosed b"},
                               docs_node_modules / "mermaid" / "dist" / "mermaid.min.js")


@contextlib.contextmanager
def static_server(root: Path) -> Iterator[int]:
    """Debian's nginx with the docs container's config (test port, paths under a temp prefix)."""
    nginx = require_tool("nginx")
    folder = scratch_dir("docs-nginx-")
    port = free_port()
    conf = folder / "nginx.conf"
    conf.write_text(render_static_server(port=port, root=str(root), fingerprinted=FINGERPRINTED, listen="127.0.0.1",
                                         pid=str(folder / "nginx.pid"), temp_dir=str(folder),
                                         error_log=str(folder / "error.log"), access_log=str(folder / "access.log")))
    try:
        checked = subprocess.run([nginx, "-t", "-p", str(folder), "-c", str(conf)], capture_output=True, text=True)
        assert checked.returncode == 0, checked.stderr
        with process([nginx, "-p", str(folder), "-c", str(conf), "-g", "daemon off;"], port=port,
                     log=folder / "stdout.log"):
            yield port
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def first_asset(site: Path, suffix: str) -> str:
    return "/" + next(p for p in sorted((site / "assets").rglob(f"*{suffix}"))).relative_to(site).as_posix()


def check_static_rules(get, site: Path) -> None:
    """What a static server must do, through `get(path, headers) -> (status, headers, body)`."""
    status, headers, body = get("/", {})
    assert status == 200 and headers["content-type"].startswith("text/html") and b"coderz platform" in body
    assert headers["cache-control"] == "no-cache" and headers["etag"] and headers["last-modified"]
    assert get("/", {"If-None-Match": headers["etag"]})[0] == 304
    assert get("/", {"If-Modified-Since": headers["last-modified"]})[0] == 304
    css = first_asset(site, ".css")
    status, headers, _ = get(css, {})
    assert status == 200 and headers["content-type"].startswith("text/css")
    assert headers["cache-control"] == "public, max-age=31536000, immutable"
    status, headers, _ = get(first_asset(site, ".js"), {})
    assert status == 200 and "javascript" in headers["content-type"]
    assert get("/generated/ports/", {})[0] == 200
    assert get("/no-such-page/", {})[0] == 404
    for listing in ("/assets/", "/assets/stylesheets/", "/generated/"):
        status, _, body = get(listing, {})
        assert status == 404 and b"Index of" not in body, listing
    for escape in ("/../../../../etc/passwd", "/%2e%2e/%2e%2e/%2e%2e/etc/passwd", "/assets/..%2f..%2f..%2fetc/passwd",
                   "/assets/%2e%2e/%2e%2e/%2e%2e/%2e%2e/etc/passwd", "/..%252f..%252fetc/passwd"):
        status, _, body = get(escape, {})
        assert status in (400, 404) and b"root:" not in body, escape
    (site / ".hidden").write_text("secret")
    assert get("/.hidden", {})[0] == 404


def test_nginx_serves_the_built_site_by_the_rules(built_site):
    with static_server(built_site) as port:
        check_static_rules(lambda path, headers: http("GET", f"http://127.0.0.1:{port}{path}", headers=headers),
                           built_site)


def test_the_gateway_serves_the_site_at_docs_with_its_headers_and_gzip(built_site):
    from tests.servers import redis_server
    from tests.test_gateway_nginx import REDIS_PASSWORD, SECURITY_HEADERS, DnsStub, gateway, route

    dns = DnsStub()
    try:
        with redis_server(REDIS_PASSWORD) as redis_port, static_server(built_site) as port:
            dns.records["docs"] = ["127.0.0.1"]
            with gateway((route("docs", "docs", port, ttl=0, prefix="/docs/"),), redis_port=redis_port,
                         resolver=dns.address) as gw:
                check_static_rules(lambda path, headers: gw.get("/docs" + path, headers=headers), built_site)
                status, headers, body = gw.get("/docs/", headers={"Accept-Encoding": "gzip"})
                assert status == 200 and headers.get("content-encoding") == "gzip"
                assert b"coderz platform" in gzip.decompress(body)
                assert all(name in headers for name in SECURITY_HEADERS), headers
    finally:
        dns.close()


def test_component_builds_docs_and_uploads_the_rendered_server_config(monitor, provider):
    from components.container import Placement
    from components.docs_site import DOCS_SOURCE, DocsSite, DocsSiteArgs, SITE_ROOT
    from infra.catalog import declare_services
    from infra.config import stack_file_config
    from tests.conftest import run

    spec = declare_services(stack_file_config("dev")).get("docs")
    run(lambda: DocsSite("docs", DocsSiteArgs(spec=spec, placement=Placement(prefix="coderz-dev", network_name="n",
                                                                           provider=provider))))
    (image,) = monitor.of_type("RemoteImage")
    assert image.plain["build"]["context"] == str(DOCS_SOURCE) and image.plain["name"].startswith("coderz/docs:")
    (container,) = monitor.of_type("docker:index/container:Container")
    (upload,) = container.plain["uploads"]
    assert upload["file"] == "/etc/nginx/nginx.conf" and f"alias {SITE_ROOT}/;" in upload["content"]
    assert container.plain["ports"] == [{"internal": 8080, "external": 5233, "ip": "127.0.0.1"}]


def test_a_docs_edit_changes_the_image_tag(tmp_path):
    from components.docs_site import LOCAL_OUTPUT
    from infra.catalog import source_digest
    (tmp_path / "pages").mkdir()
    (tmp_path / "pages" / "index.md").write_text("a")
    before = source_digest(tmp_path, exclude=LOCAL_OUTPUT)
    for output in ("site/index.html", "node_modules/mermaid/package.json"):
        (tmp_path / output).parent.mkdir(parents=True)
        (tmp_path / output).write_text("local build output")
    assert source_digest(tmp_path, exclude=LOCAL_OUTPUT) == before
    (tmp_path / "pages" / "index.md").write_text("b")
    assert source_digest(tmp_path, exclude=LOCAL_OUTPUT) != before
