"""The gateway's response cache as a shared cache (RFC 9111), on real nginx + Lua + Redis.

Every test here is an attack on the cache or a promise of it: answers that depend on the
client are never shared, the backend's freshness is obeyed (the route TTL only caps it), only
genuine complete answers are stored, the key is the raw request, a HIT keeps the headers and
answers conditional requests (from Redis and from the first level), one fill per key at a time,
and the forwarding headers a backend sees are the edge's, never the client's.
"""

from __future__ import annotations

import socket
import time
from concurrent.futures import ThreadPoolExecutor
from email.utils import formatdate
from typing import Iterator

import pytest

from tests.gateway_backends import Answer, Garbage, backend  # noqa: F401 (the fixture)
from tests.servers import redis_server
from tests.test_gateway_nginx import REDIS_PASSWORD, Gateway, gateway, route, unique

L1_TTL_S = 1


@pytest.fixture(scope="module")
def redis_port() -> Iterator[int]:
    with redis_server(REDIS_PASSWORD) as port:
        yield port


@pytest.fixture(scope="module")
def garbage() -> Iterator[Garbage]:
    server = Garbage()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def gw(redis_port, backend, garbage) -> Iterator[Gateway]:
    routes = (
        route("cached-api", "127.0.0.1", backend.port, ttl=30, prefix="/c/"),
        route("capped-api", "127.0.0.1", backend.port, ttl=2, prefix="/capped/"),
        route("plain-api", "127.0.0.1", backend.port, prefix="/p/"),
        route("junk-api", "127.0.0.1", garbage.port, ttl=30, prefix="/junk/"),
    )
    with gateway(routes, redis_port=redis_port, resolver="127.0.0.1", cache_l1_ttl_s=L1_TTL_S,
                 cache_lock_wait_ms=1000) as running:
        yield running


def flush_redis(port: int) -> None:
    """FLUSHALL over RESP: what is left is in the gateway's first level only."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        pw = REDIS_PASSWORD.encode()
        sock.sendall(b"*2\r\n$4\r\nAUTH\r\n$%d\r\n%s\r\n*1\r\n$8\r\nFLUSHALL\r\n" % (len(pw), pw))
        reply = b""
        while reply.count(b"\r\n") < 2:
            reply += sock.recv(100)
        assert reply == b"+OK\r\n+OK\r\n", reply


def twice(gw: Gateway, path: str, **request) -> list[tuple[int, str, bytes]]:
    out = []
    for _ in range(2):
        status, headers, body = gw.get(path, **request)
        out.append((status, headers.get("x-cache"), body))
    return out


# --- what is never shared ------------------------------------------------------------------------

NOT_SHARED = {
    "vary-cookie": Answer(headers={"Vary": "Cookie"}),
    "vary-language": Answer(headers={"Vary": "Accept-Encoding, Accept-Language"}),
    "vary-star": Answer(headers={"Vary": "*"}),
    "set-cookie": Answer(headers={"Set-Cookie": "session=abc"}),
    "private": Answer(headers={"Cache-Control": "private, max-age=60"}),
    "no-store": Answer(headers={"Cache-Control": "no-store"}),
    "no-cache": Answer(headers={"Cache-Control": 'no-cache="Set-Cookie", max-age=60'}),
    "pragma": Answer(headers={"Pragma": "no-cache"}),
    "max-age-0": Answer(headers={"Cache-Control": "max-age=0"}),
    "s-maxage-0": Answer(headers={"Cache-Control": "s-maxage=0, max-age=60"}),
    "max-age-garbage": Answer(headers={"Cache-Control": "max-age=soon"}),
    "expires-past": Answer(headers={"Expires": "Thu, 01 Jan 2015 00:00:00 GMT"}),
    "expires-invalid": Answer(headers={"Expires": "0"}),
    "status-500": Answer(status=500),
    "status-206": Answer(status=206),
    "encoded": Answer(headers={"Content-Encoding": "br"}),
}


@pytest.mark.parametrize("case", sorted(NOT_SHARED))
def test_answers_a_shared_cache_must_not_store_reach_the_backend_every_time(gw, backend, case):
    path = unique(f"/{case}-")
    backend.answers[path] = NOT_SHARED[case]
    answers = twice(gw, f"/c{path}")
    assert [cache for _, cache, _ in answers] != ["MISS", "HIT"]
    assert "HIT" not in [cache for _, cache, _ in answers]
    assert backend.hits[path] == 2, gw.errors()
    assert answers[0][2] != answers[1][2]  # each from the backend: `#1`, then `#2`


@pytest.mark.parametrize("header", ["Cookie", "Authorization"])
def test_requests_carrying_credentials_are_never_served_from_or_stored_in_the_cache(gw, backend, header):
    path = unique("/creds-")
    first = gw.get(f"/c{path}", headers={header: "session=alice"})
    second = gw.get(f"/c{path}", headers={header: "session=bob"})
    assert (first[1]["x-cache"], second[1]["x-cache"]) == ("BYPASS", "BYPASS")
    assert backend.hits[path] == 2
    # and an anonymous request afterwards is not given what they got
    status, headers, body = gw.get(f"/c{path}")
    assert (headers["x-cache"], body) == ("MISS", f"{path} #3".encode())


def test_vary_accept_encoding_alone_is_stored(gw, backend):
    path = unique("/vary-ae-")
    backend.answers[path] = Answer(headers={"Vary": "Accept-Encoding", "Content-Type": "text/plain"})
    assert [cache for _, cache, _ in twice(gw, f"/c{path}")] == ["MISS", "HIT"]
    assert backend.hits[path] == 1


# --- freshness -----------------------------------------------------------------------------------


def test_the_backend_sets_the_lifetime_and_the_route_ttl_caps_it(gw, backend):
    """max-age=2 and s-maxage=2 (over max-age=600) expire after 2 s on a 30 s route; max-age=600
    on a 2 s route expires after 2 s; an Expires 2 to 3 s ahead works like max-age=2 or 3.
    (Whole seconds: a lifetime of 1 s could end before the HIT right after the MISS.)"""
    paths = {name: unique(f"/{name}-") for name in ("max-age", "s-maxage", "capped", "expires")}
    backend.answers[paths["max-age"]] = Answer(headers={"Cache-Control": "public, max-age=2"})
    backend.answers[paths["s-maxage"]] = Answer(headers={"Cache-Control": "max-age=600, s-maxage=2"})
    backend.answers[paths["capped"]] = Answer(headers={"Cache-Control": "max-age=600"})
    expires = formatdate(time.time() + 3, usegmt=True)  # whole seconds: 2 to 3 s ahead
    backend.answers[paths["expires"]] = Answer(headers={"Expires": expires})
    urls = {name: (f"/capped{path}" if name == "capped" else f"/c{path}") for name, path in paths.items()}
    started = time.monotonic()
    for name, url in urls.items():
        assert [cache for _, cache, _ in twice(gw, url)] == ["MISS", "HIT"], name
    status, headers, _ = gw.get(urls["max-age"])
    assert headers["cache-control"] == "public, max-age=2" and int(headers["age"]) in (0, 1, 2)
    time.sleep(max(0.0, started + 3.1 - time.monotonic()))
    for name, url in urls.items():
        # the Expires answer is in the past by now: refetched, and no longer storable
        assert gw.get(url)[1]["x-cache"] == ("BYPASS" if name == "expires" else "MISS"), name
        assert backend.hits[paths[name]] == 2, name


# --- genuine answers only ------------------------------------------------------------------------


def test_bytes_that_are_not_http_are_never_stored(gw, garbage):
    before = garbage.connections
    for _ in range(2):
        try:
            status, headers, body = gw.get(unique_path := "/junk/same-path")
        except Exception:  # HTTP/0.9 bytes passed through may not parse as HTTP at the client
            continue
        assert headers.get("x-cache") != "HIT", (unique_path, status, body)
    assert garbage.connections - before == 2, "the second request was served from the cache"


def test_a_truncated_answer_is_never_stored(gw, backend):
    path = unique("/truncated-")
    backend.answers[path] = Answer(body=b"x" * 1000, truncate=10)
    for _ in range(2):
        with pytest.raises(Exception):  # the client sees the connection cut, never a HIT
            gw.get(f"/c{path}")
    assert backend.hits[path] == 2


# --- the key -------------------------------------------------------------------------------------


def test_two_spellings_of_a_uri_never_share_a_key(gw, backend):
    """/k%3Fy?z and /k?y?z decode to one path + query: two resources at the backend."""
    base = unique("/k")
    encoded, plain = f"/c{base}%3Fy?z", f"/c{base}?y?z"
    assert gw.get(encoded)[1]["x-cache"] == "MISS"
    status, headers, body = gw.get(plain)
    assert (headers["x-cache"], body) == ("MISS", f"{base}?y?z #1".encode())
    assert gw.get(encoded)[2] == f"{base}%3Fy?z #1".encode()
    assert gw.get(f"/c{base}%2fy")[1]["x-cache"] == "MISS"  # and %2f is not %2F's key either
    assert gw.get(f"/c{base}%2Fy")[1]["x-cache"] == "MISS"


# --- what a HIT carries --------------------------------------------------------------------------

VALIDATED = {
    "ETag": '"v1-abc"',
    "Last-Modified": "Mon, 02 Jan 2023 03:04:05 GMT",
    "Cache-Control": "public, max-age=60",
    "Access-Control-Allow-Origin": "https://app.example",
    "Access-Control-Expose-Headers": "ETag",
    "Content-Disposition": 'attachment; filename="report.csv"',
    "Content-Type": "text/csv; charset=utf-8",
    "X-Custom": "kept",
}


def test_a_hit_keeps_the_headers_and_answers_conditional_requests_from_redis_and_from_l1(gw, backend, redis_port):
    path = unique("/validated-")
    backend.answers[path] = Answer(headers=VALIDATED, body=b"a,b\n1,2\n")
    url = f"/c{path}"

    def check_level(level: str) -> None:
        status, headers, body = gw.get(url)
        assert (status, headers["x-cache"], body) == (200, "HIT", b"a,b\n1,2\n"), level
        for name, value in VALIDATED.items():
            assert headers.get(name.lower()) == value, (level, name)
        for request, expected in (
            ({"If-None-Match": '"v1-abc"'}, 304),
            ({"If-None-Match": 'W/"other", W/"v1-abc"'}, 304),
            ({"If-None-Match": "*"}, 304),
            ({"If-None-Match": '"v0"'}, 200),
            ({"If-Modified-Since": "Mon, 02 Jan 2023 03:04:05 GMT"}, 304),
            ({"If-Modified-Since": "Sun, 01 Jan 2023 00:00:00 GMT"}, 200),
            ({"If-None-Match": '"v0"', "If-Modified-Since": "Mon, 02 Jan 2023 03:04:05 GMT"}, 200),
        ):
            status, headers, body = gw.get(url, headers=request)
            assert (status, headers["x-cache"]) == (expected, "HIT"), (level, request)
            if expected == 304:
                assert body == b"" and headers["etag"] == '"v1-abc"', (level, request)
                assert headers["cache-control"] == "public, max-age=60"

    status, headers, _ = gw.get(url)
    assert (status, headers["x-cache"]) == (200, "MISS")
    time.sleep(L1_TTL_S + 0.1)  # the first level has forgotten it: the next HIT is Redis's
    check_level("redis")
    flush_redis(redis_port)  # now only the first level has it
    check_level("l1")
    time.sleep(L1_TTL_S + 0.1)
    assert gw.get(url)[1]["x-cache"] == "MISS"  # neither level: the first level is short-lived
    assert backend.hits[path] == 2


def test_the_first_level_never_outlives_the_entry(redis_port, backend):
    """A 10 s first level and a max-age=2 answer: once stale it is not served, not even by L1."""
    path = unique("/short-lived-")
    backend.answers[path] = Answer(headers={"Cache-Control": "max-age=2"})
    routes = (route("cached-api", "127.0.0.1", backend.port, ttl=30, prefix="/c/"),)
    with gateway(routes, redis_port=redis_port, resolver="127.0.0.1", cache_l1_ttl_s=10) as long_l1:
        started = time.monotonic()
        assert [cache for _, cache, _ in twice(long_l1, f"/c{path}")] == ["MISS", "HIT"]
        flush_redis(redis_port)
        assert long_l1.get(f"/c{path}")[1]["x-cache"] == "HIT"  # the first level's
        time.sleep(max(0.0, started + 3.1 - time.monotonic()))
        assert long_l1.get(f"/c{path}")[1]["x-cache"] == "MISS"
    assert backend.hits[path] == 2


# --- one fill per key ----------------------------------------------------------------------------


def test_simultaneous_misses_make_one_backend_request(gw, backend):
    path = unique("/stampede-")
    backend.answers[path] = Answer(delay=0.4)
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda _: gw.get(f"/c{path}"), range(8)))
    assert backend.hits[path] == 1, gw.errors()
    assert {(status, body) for status, _, body in answers} == {(200, f"{path} #1".encode())}
    assert sorted(headers["x-cache"] for _, headers, _ in answers) == ["HIT"] * 7 + ["MISS"]


def test_waiting_misses_are_bounded_by_the_lock_and_not_serialised(gw, backend):
    slow, private = unique("/slow-fill-"), unique("/private-fill-")
    backend.answers[slow] = Answer(delay=1.6)  # longer than the 1 s lock wait
    backend.answers[private] = Answer(delay=0.5, headers={"Cache-Control": "private"})
    for path, expected_hits in ((slow, 4), (private, 4)):
        started = time.monotonic()
        with ThreadPoolExecutor(4) as pool:
            statuses = [a[0] for a in pool.map(lambda _: gw.get(f"/c{path}"), range(4))]
        elapsed = time.monotonic() - started
        assert statuses == [200] * 4
        assert backend.hits[path] == expected_hits
        # every waiter gave up after at most 1 s (or when the fill said "not storable")
        assert elapsed < backend.answers[path].delay * 2 + 1.0, (path, elapsed)


# --- forwarding headers --------------------------------------------------------------------------

FORGED = {"X-Forwarded-For": "6.6.6.6", "X-Real-IP": "6.6.6.6", "X-Forwarded-Host": "evil.example",
          "Forwarded": "for=6.6.6.6;host=evil.example", "X-Forwarded-Proto": "https",
          "X-Forwarded-Prefix": "/evil", "X-Original-URL": "/admin", "X-Forwarded-Port": "1"}


@pytest.mark.parametrize("prefix", ["/c", "/p"])
def test_forwarding_headers_come_from_the_edge_on_fills_and_on_proxied_requests(gw, backend, prefix):
    path = unique("/forwarded-")
    status, _, _ = gw.get(f"{prefix}{path}", headers={**FORGED, "Host": "shop.example"})
    assert status == 200
    seen = backend.headers[path]
    assert seen["x-forwarded-for"] == "127.0.0.1" and seen["x-real-ip"] == "127.0.0.1"
    assert seen["x-forwarded-host"] == "shop.example" and seen["host"] == "shop.example"
    assert seen["x-forwarded-proto"] == "http"
    assert seen["x-forwarded-prefix"] == prefix
    assert "forwarded" not in seen and "x-original-url" not in seen and "x-forwarded-port" not in seen
