"""The static-file rules (components/static_files.py) under hostile requests, on Debian's nginx
with the docs container's config over a small hand-made folder: a fingerprinted asset is kept a
year, nothing else is (an error least of all); symlinks, encoded escapes, NUL bytes, overlong
UTF-8 and absurd paths reach nothing outside the folder."""

from __future__ import annotations

import shutil
from typing import Iterator

import pytest

from tests.servers import http, raw_request, scratch_dir
from tests.test_docs_site import static_server

SECRET = "outside-the-site"
YEAR = "public, max-age=31536000, immutable"


@pytest.fixture(scope="module")
def served() -> Iterator[int]:
    folder = scratch_dir("static-files-")
    site = folder / "site"
    (site / "assets").mkdir(parents=True)
    (site / "index.html").write_text("<html>coderz</html>")
    (site / "page").mkdir()
    (site / "page" / "index.html").write_text("<html>page</html>")
    (site / "assets" / "app.0123456789.css").write_text("body{}")
    (site / "assets" / "lunr").mkdir()
    (site / "assets" / "lunr" / "lunr.stemmer.support.min.js").write_text("var lunr;")  # MkDocs ships it unhashed
    (site / "assets" / ".env").write_text(SECRET)
    (site / "assets" / ".git.0123456789.cfg").write_text(SECRET)
    (folder / "secret.txt").write_text(SECRET)
    # what a careless build could leave: links to outside the folder
    (site / "leak.txt").symlink_to(folder / "secret.txt")
    (site / "assets" / "leak.css").symlink_to(folder / "secret.txt")
    (site / "outside").symlink_to(folder)
    try:
        with static_server(site) as port:
            yield port
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def test_only_a_found_fingerprinted_asset_is_kept_a_year(served):
    get = lambda path: http("GET", f"http://127.0.0.1:{served}{path}")  # noqa: E731
    status, headers, _ = get("/assets/app.0123456789.css")
    assert status == 200 and headers["cache-control"] == YEAR
    status, headers, _ = get("/assets/app.0123456789.css?v=2")
    assert status == 200 and headers["cache-control"] == YEAR
    # an asset not there yet (a page newer than its assets, mid-deploy) must not be a 404 for a year
    status, headers, _ = get("/assets/app.9999999999.css")
    assert status == 404 and headers.get("cache-control") != YEAR, headers
    status, headers, _ = get("/page/")
    assert status == 200 and headers["cache-control"] == "no-cache"
    # unhashed files under /assets/ change content under the same name: revalidated, never a year
    status, headers, _ = get("/assets/lunr/lunr.stemmer.support.min.js")
    assert status == 200 and headers["cache-control"] == "no-cache" and headers["etag"]
    for hidden in ("/assets/.env", "/assets/.git.0123456789.cfg", "/assets/lunr/../.env"):
        status, headers, body = get(hidden)
        assert status == 404 and SECRET.encode() not in body and headers.get("cache-control") != YEAR, hidden


def test_symlinks_and_hostile_paths_reach_nothing_outside(served):
    for path in (b"/leak.txt", b"/assets/leak.css", b"/outside/secret.txt", b"/outside/", b"/%00", b"/page/%00",
                 b"/assets/%c0%ae%c0%ae/secret.txt", b"/%c0%ae%c0%ae/%c0%ae%c0%ae/secret.txt", b"/..\\secret.txt",
                 b"/%2e%2e%5csecret.txt", b"/assets/..%2f..%2fsecret.txt", b"/%252e%252e/secret.txt",
                 b"/" + b"a/" * 3000, b"/assets/" + b"%2e%2e/" * 1500 + b"secret.txt"):
        status, headers, body = raw_request(served, b"GET " + path + b" HTTP/1.1")
        assert status in (400, 403, 404, 414), (path[:60], status)
        assert SECRET.encode() not in body and b"Index of" not in body, path[:60]
        assert headers.get("cache-control") != YEAR, (path[:60], headers)


def test_head_works_and_writes_are_refused(served):
    status, headers, body = http("HEAD", f"http://127.0.0.1:{served}/assets/app.0123456789.css")
    assert status == 200 and body == b"" and headers["content-length"] == "6"
    for method in ("POST", "PUT", "DELETE"):
        status, _, body = http(method, f"http://127.0.0.1:{served}/index.html", body=b"x")
        assert status == 405 and b"coderz" not in body, method
