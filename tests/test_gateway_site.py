"""The landing page and /static/ on the real gateway (nginx + Lua, as test_gateway_nginx.py runs
it), from the files site_files() makes of site/; and how the files reach the container."""

from __future__ import annotations

import gzip
import re
import shutil
from typing import Iterator

import pytest

from components.gateway.site import SITE_ROOT, SITE_SOURCE, fingerprinted, site_files
from tests.servers import raw_request, redis_server, scratch_dir
from tests.test_gateway_nginx import REDIS_PASSWORD, SECURITY_HEADERS, DnsStub, gateway, route

SECRET = "not-for-the-web"


@pytest.fixture(scope="module")
def site_gateway() -> Iterator[tuple]:
    """The gateway serving site_files() from a folder whose parent holds a file that must never
    be reachable, with one API route beside it."""
    folder = scratch_dir("gateway-site-")
    root = folder / "site"
    (root / "static").mkdir(parents=True)
    files = site_files()
    for name, text in files.items():
        (root / name).write_text(text)
    (folder / "nginx.conf").write_text(SECRET)
    (root / "static" / ".hidden.css").write_text(SECRET)
    dns = DnsStub()
    try:
        with redis_server(REDIS_PASSWORD) as redis_port:
            with gateway((route("python-api", "python-api", 9, ttl=0),), redis_port=redis_port,
                         resolver=dns.address, site_root=str(root)) as gw:
                yield gw, files
    finally:
        dns.close()
        shutil.rmtree(folder, ignore_errors=True)


def asset(files: dict[str, str], suffix: str) -> str:
    return "/" + next(name for name in files if name.startswith("static/") and name.endswith(suffix))


def test_landing_page_200_html_revalidated_with_etag_and_304(site_gateway):
    gw, files = site_gateway
    status, headers, body = gw.get("/")
    assert status == 200 and headers["content-type"].startswith("text/html")
    assert body.decode() == files["index.html"]
    assert headers["cache-control"] == "no-cache" and headers["etag"] and headers["last-modified"]
    assert all(name in headers for name in SECURITY_HEADERS), headers
    assert gw.get("/", headers={"If-None-Match": headers["etag"]})[0] == 304
    assert gw.get("/", headers={"If-Modified-Since": headers["last-modified"]})[0] == 304
    status, headers, body = gw.get("/", headers={"Accept-Encoding": "gzip"})
    assert headers["content-encoding"] == "gzip" and gzip.decompress(body).decode() == files["index.html"]


def test_fingerprinted_assets_cached_a_year_with_their_types_and_gzip(site_gateway):
    gw, files = site_gateway
    css = asset(files, ".css")
    assert css in files["index.html"]  # the page asks for the fingerprinted name
    status, headers, body = gw.get(css, headers={"Accept-Encoding": "gzip"})
    assert status == 200 and headers["content-type"].startswith("text/css")
    assert headers["cache-control"] == "max-age=31536000" and headers["etag"]
    assert headers["content-encoding"] == "gzip" and gzip.decompress(body).decode() == files[css[1:]]
    assert all(name in headers for name in SECURITY_HEADERS), headers
    assert gw.get(css, headers={"If-None-Match": headers["etag"]})[0] == 304
    status, headers, _ = gw.get(asset(files, ".svg"))
    assert status == 200 and headers["content-type"] == "image/svg+xml"


def test_missing_listing_hidden_and_escapes_are_404(site_gateway):
    gw, _ = site_gateway
    assert gw.get("/static/site.css")[0] == 404  # only the fingerprinted name exists
    assert gw.get("/static/nope.css")[0] == 404
    assert gw.get("/index.html")[0] == 404  # the page is at / only
    for path in ("/static/", "/static", "/static/.hidden.css"):
        status, _, body = gw.get(path)
        assert status == 404 and b"Index of" not in body and SECRET.encode() not in body, path
    for escape in ("/static/../nginx.conf", "/static/../../nginx.conf", "/static/%2e%2e/%2e%2e/nginx.conf",
                   "/static/..%2f..%2fnginx.conf", "/static/%2e%2e%2f%2e%2e%2fnginx.conf", "/static/..%252f..%252fnginx.conf",
                   "/static/..\\..\\nginx.conf", "/%2e%2e/nginx.conf"):
        status, _, body = gw.get(escape)
        assert status in (400, 404) and SECRET.encode() not in body, escape
    # the routes still answer beside the site (the API is down here: 502/504, not a 404)
    assert gw.get("/api/python/")[0] in (502, 503, 504)


def test_a_content_change_renames_the_asset_and_rewrites_the_page(tmp_path):
    shutil.copytree(SITE_SOURCE, tmp_path / "site")
    before = site_files(tmp_path / "site")
    css = tmp_path / "site" / "static" / "site.css"
    css.write_text(css.read_text() + "\nfooter { color: red; }\n")
    after = site_files(tmp_path / "site")
    new_name = "static/" + fingerprinted("site.css", css.read_bytes())
    assert new_name in after and new_name not in before
    assert f"/{new_name}" in after["index.html"] and f"/{new_name}" not in before["index.html"]


@pytest.mark.parametrize("make, message", [
    (lambda root: (root / "static" / "x.css").symlink_to("/etc/passwd"), "is a symlink"),
    (lambda root: (root / "static" / ".env").write_text("x"), "only plain files"),
    (lambda root: (root / "static" / "img.png").write_bytes(b"\x89PNG\r\n\x1a\n\xff"), "not UTF-8"),
    (lambda root: (root / "index.html").write_bytes(b"<html>\xff</html>"), "not UTF-8"),
    (lambda root: (root / "static" / "fonts").mkdir(), "only plain files"),
    (lambda root: (root / ".DS_Store").write_text("x"), "only index.html and static/"),
    # references the rewrite cannot follow would be 404s in production
    (lambda root: (root / "index.html").write_text('<link href="/static/site.css?v=2">'), r"refers to /static/site.css\?v=2"),
    (lambda root: (root / "index.html").write_text('<img src="/static/missing.svg">'), "refers to /static/missing.svg"),
    (lambda root: (root / "secrets.txt").write_text("x"), "only index.html and static/"),
])
def test_surprising_files_are_refused(tmp_path, make, message):
    shutil.copytree(SITE_SOURCE, tmp_path / "site")
    make(tmp_path / "site")
    with pytest.raises(ValueError, match=message):
        site_files(tmp_path / "site")


def test_the_files_reach_the_gateway_through_its_config_command_and_a_change_reloads_it(monitor, provider, tmp_path):
    from components.container import Placement
    from components.gateway.component import Gateway, GatewayArgs
    from components.host import HostShell
    from infra.catalog import declare_services
    from infra.config import stack_file_config
    from tests.conftest import run
    from tests.mocks import gateway_installed_files

    catalog = declare_services(stack_file_config("dev"))
    placement = Placement(prefix="coderz-dev", network_name="n", provider=provider)
    shutil.copytree(SITE_SOURCE, tmp_path / "site")

    def container_and_files(name: str) -> tuple[dict, str, dict]:
        run(lambda: Gateway(name, GatewayArgs(catalog=catalog, placement=placement, redis_password="pw",
                                              shell=HostShell(docker_host="unix:///var/run/docker.sock"),
                                              site=site_files(tmp_path / "site"))))
        (container,) = [c for c in monitor.of_type("docker:index/container:Container") if c.name == name]
        (command,) = [c for c in monitor.registrations if c.name == f"{name}-config"]
        files = {path: text for path, (text, _) in gateway_installed_files(command).items()}
        return container.plain, command.plain["triggers"][0], files

    container, trigger, files = container_and_files("gw-a")
    assert files[f"{SITE_ROOT}/index.html"] == site_files(tmp_path / "site")["index.html"]
    conf = next(text for path, text in files.items() if path.endswith("nginx.conf"))
    assert re.search(rf"location = / {{\s+root {SITE_ROOT};", conf) and "location ^~ /static/" in conf
    (tmp_path / "site" / "index.html").write_text((tmp_path / "site" / "index.html").read_text().replace("coderz", "Coderz"))
    changed_container, changed_trigger, _ = container_and_files("gw-b")
    # new content: the config command runs again (install, nginx -t, reload); the container stays
    assert changed_trigger != trigger
    assert {k: v for k, v in changed_container.items() if k not in ("name", "hostname")} == \
        {k: v for k, v in container.items() if k not in ("name", "hostname")}


def test_hostile_paths_never_reach_a_file_outside_the_site(site_gateway):
    gw, files = site_gateway
    css = asset(files, ".css")
    hostile = [
        b"/static/%00/../../nginx.conf", b"/static/" + css.encode()[8:] + b"%00.html", b"/%00",
        b"/static/%c0%ae%c0%ae/%c0%ae%c0%ae/nginx.conf",  # overlong UTF-8 dots
        b"/static/%e0%80%ae%e0%80%ae/nginx.conf", b"/static/%252e%252e/%252e%252e/nginx.conf",
        b"/static/..\\..\\nginx.conf", b"/static/%2e%2e%5c%2e%2e%5cnginx.conf", b"/static/.%2e/.%2e/nginx.conf",
        b"/static//../../nginx.conf", b"/static/./../../nginx.conf", b"//static/../../nginx.conf",
        b"/static/../static/../../nginx.conf", b"/static%2f..%2f..%2fnginx.conf", b"/static/%2E%2E/%2E%2E/nginx.conf",
        b"/static/" + b"a/" * 3000 + b"x.css", b"/static/" + b"%2e%2e/" * 1500 + b"nginx.conf",
        b"/static/.hidden.css", b"/static/%2ehidden.css", b"/static/./.hidden.css",
    ]
    for path in hostile:
        status, headers, body = raw_request(gw.args.http_port, b"GET " + path + b" HTTP/1.1")
        assert status in (400, 404, 414), (path[:80], status)
        assert SECRET.encode() not in body and b"Index of" not in body, path[:80]
        assert headers.get("cache-control") != "max-age=31536000", (path[:80], headers)  # a 404 is not kept a year


def test_head_and_query_strings_serve_the_same_file_and_other_methods_are_refused(site_gateway):
    gw, files = site_gateway
    css = asset(files, ".css")
    _, get_headers, body = gw.get(css)
    status, headers, head_body = gw.get(css, method="HEAD")
    assert status == 200 and head_body == b"" and headers["etag"] == get_headers["etag"]
    assert int(headers["content-length"]) == len(body)
    # a cache-busting query on a fingerprinted asset is the same file, cached the same way
    status, headers, queried = gw.get(css + "?v=2&x=%00")
    assert status == 200 and queried == body and headers["cache-control"] == "max-age=31536000"
    for path in ("/", css):
        for method in ("POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE", "PROPFIND", "FOO"):
            status, headers, answer = gw.get(path, method=method, body=b"x" if method in ("POST", "PUT") else None)
            assert status in (405, 501), (path, method, status)
            assert files["index.html"].encode() not in answer and body not in answer, (path, method)
            assert all(name in headers for name in SECURITY_HEADERS), (path, method, headers)


def test_range_requests_get_their_bytes_and_many_ranges_no_more_than_the_file(site_gateway):
    gw, files = site_gateway
    css = asset(files, ".css")
    whole = files[css[1:]].encode()
    status, headers, body = gw.get(css, headers={"Range": "bytes=0-9"})
    assert status == 206 and body == whole[:10] and headers["content-range"] == f"bytes 0-9/{len(whole)}"
    assert gw.get(css, headers={"Range": f"bytes={len(whole) + 10}-"})[0] == 416
    # overlapping ranges would multiply the answer: nginx serves one range at most
    status, _, body = gw.get(css, headers={"Range": "bytes=" + ",".join(["0-"] * 200)})
    assert status in (200, 206, 416) and len(body) <= len(whole), (status, len(body))


@pytest.mark.parametrize("make", [
    lambda root, outside: ((root / "index.html").unlink(), (root / "index.html").symlink_to(outside / "page.html")),
    lambda root, outside: (shutil.rmtree(root / "static"), (root / "static").symlink_to(outside)),
])
def test_symlinks_committed_into_site_are_refused(tmp_path, make):
    """An operator's symlink (to a folder or a file outside site/) must not ship that content."""
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "page.html").write_text(SECRET)
    (outside / "keys.txt").write_text(SECRET)
    shutil.copytree(SITE_SOURCE, tmp_path / "site")
    make(tmp_path / "site", outside)
    with pytest.raises(ValueError, match="symlink"):
        site_files(tmp_path / "site")


def test_landing_page_off_serves_neither_page_nor_assets():
    from components.gateway.site import SITE_ROOT
    from tests.mocks import deploy_stack, gateway_installed_files

    monitor, _ = deploy_stack("dev", **{"coderz:gateway": {"landingPage": False}})
    (command,) = [c for c in monitor.registrations if c.name.endswith("gateway-config")]
    files = gateway_installed_files(command)
    assert not any(path.startswith(SITE_ROOT) for path in files), sorted(files)
    conf = next(text for path, (text, _) in files.items() if path.endswith("nginx.conf"))
    assert "location = / {" not in conf and "/static/" not in conf and SITE_ROOT not in conf
