"""The docs site: generated pages up to date, `mkdocs build --strict`, and the built site served
by real nginx with the docs server's rendered config, alone and behind the real gateway."""

from __future__ import annotations

import contextlib
import gzip
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Iterator

import pytest

from components.static_files import render_static_server
from infra import docs_site
from tests.servers import free_port, http, process, require_tool, scratch_dir

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
    assert "gateway -->|/docs/| docs" in pages["architecture.md"]
    assert "| `smtpRelay.enabled` | bool | `false` | |" in pages["config.md"]


def mkdocs_build(target: Path) -> subprocess.CompletedProcess:
    mkdocs = shutil.which("mkdocs") or str(Path(sys.executable).parent / "mkdocs")
    if not Path(mkdocs).exists():
        require_tool("mkdocs")
    return subprocess.run([mkdocs, "build", "--strict", "--quiet", "-f", str(docs_site.DOCS / "mkdocs.yml"),
                           "-d", str(target)], capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def built_site() -> Iterator[Path]:
    folder = scratch_dir("docs-site-")
    try:
        result = mkdocs_build(folder / "site")
        assert result.returncode == 0, result.stdout + result.stderr
        yield folder / "site"
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def test_mkdocs_build_strict_gives_every_page(built_site):
    for page in ("index.html", "operating/index.html", "generated/ports/index.html", "generated/config/index.html",
                 "generated/architecture/index.html"):
        assert (built_site / page).is_file(), page
    assert "pgadmin" in (built_site / "generated/ports/index.html").read_text()


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
    from infra.catalog import source_digest
    (tmp_path / "pages").mkdir()
    (tmp_path / "pages" / "index.md").write_text("a")
    before = source_digest(tmp_path, exclude=("site",))
    (tmp_path / "site").mkdir()
    (tmp_path / "site" / "index.html").write_text("local build output")
    assert source_digest(tmp_path, exclude=("site",)) == before
    (tmp_path / "pages" / "index.md").write_text("b")
    assert source_digest(tmp_path, exclude=("site",)) != before
