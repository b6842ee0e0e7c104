"""Automatic TLS for real: Pebble (Let's Encrypt's test CA) issues and renews the gateway's
certificate through the real gateway nginx, by HTTP-01, with the sidecar's own loop script.

Everything runs on 127.0.0.1: Pebble with `PEBBLE_VA_ALWAYS_VALID=0` (it really fetches the
token from the gateway's HTTP port) and a DNS stub that answers the test domain with
127.0.0.1; the gateway is the rendered nginx.conf on Debian's nginx + Lua; the ACME client is
the script `render_acme_script` renders for the container, run by `sh` with Debian's lego
(4.9.1, the image's release). Only paths, the CA's address and the schedule differ from prod.
"""

from __future__ import annotations

import contextlib
import datetime
import ipaddress
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import threading
import time
import urllib.request
from http.client import HTTPConnection, HTTPSConnection
from pathlib import Path
from typing import Iterator

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from components.gateway.acme import AcmeRender, render_acme_script
from tests.servers import free_port, process, require_tool, scratch_dir, wait_for_port
from tests.test_gateway_nginx import DnsStub, gateway, nginx_binary

DOMAIN = "acme.coderz.test"


def self_signed_pem(folder: Path, name: str) -> tuple[Path, Path]:
    """Pebble's own HTTPS certificate (for 127.0.0.1); lego trusts it by LEGO_CA_CERTIFICATES."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "pebble test listener")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                                    x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                       critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = folder / f"{name}.crt", folder / f"{name}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


@contextlib.contextmanager
def pebble(folder: Path, gateway_http_port: int, dns: DnsStub) -> Iterator[dict]:
    """Pebble on free loopback ports, validating for real against the gateway's HTTP port."""
    binary = require_tool("pebble")
    cert, key = self_signed_pem(folder, "pebble")
    acme_port, management_port = free_port(), free_port()
    config = folder / "pebble.json"
    config.write_text(json.dumps({"pebble": {
        "listenAddress": f"127.0.0.1:{acme_port}",
        "managementListenAddress": f"127.0.0.1:{management_port}",
        "certificate": str(cert), "privateKey": str(key),
        "httpPort": gateway_http_port, "tlsPort": free_port(),
        "ocspResponderURL": "", "externalAccountBindingRequired": False,
    }}))
    env = {
        "PEBBLE_VA_ALWAYS_VALID": "0",  # fetch every token from the gateway
        "PEBBLE_VA_NOSLEEP": "1",
        "PEBBLE_AUTHZREUSE": "0",  # the renewal is validated again, through the gateway again
        "PEBBLE_WFE_NONCEREJECT": "0",
    }
    argv = [binary, "-config", str(config), "-dnsserver", dns.address]
    with process(argv, port=acme_port, env=env, log=folder / "pebble.log"):
        wait_for_port(management_port)
        yield {"directory": f"https://127.0.0.1:{acme_port}/dir", "listener_ca": cert,
               "management": f"https://127.0.0.1:{management_port}", "log": folder / "pebble.log"}


def pebble_root(ca: dict) -> str:
    """The root Pebble generated at start, from its management endpoint."""
    context = ssl.create_default_context(cafile=str(ca["listener_ca"]))
    with urllib.request.urlopen(ca["management"] + "/roots/0", context=context, timeout=5) as answer:
        return answer.read().decode()


class DomainConnection(HTTPSConnection):
    """HTTPS to the gateway on 127.0.0.1 as DOMAIN: SNI, hostname check and Host header."""

    def connect(self) -> None:
        raw = socket.create_connection(("127.0.0.1", self.port), self.timeout)
        self.sock = self._context.wrap_socket(raw, server_hostname=self.host)

    @property
    def serial(self) -> int:
        return x509.load_der_x509_certificate(self.sock.getpeercert(True)).serial_number


def domain_context(root: str, version: ssl.TLSVersion | None = None) -> ssl.SSLContext:
    context = ssl.create_default_context(cadata=root)  # verifies the chain and DOMAIN
    if version:
        context.minimum_version = context.maximum_version = version
    return context


def get_health(conn: DomainConnection) -> None:
    conn.request("GET", "/health")
    response = conn.getresponse()
    body = response.read()
    assert response.status == 200 and json.loads(body) == {"status": "ok"}, (response.status, body)


def wait_until(predicate, timeout: float, what: str, diagnose=lambda: ""):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"{what} after {timeout}s\n{diagnose()}")


@contextlib.contextmanager
def acme_loop(folder: Path, render: AcmeRender, listener_ca: Path) -> Iterator[Path]:
    """The sidecar's rendered loop, run by sh in its own process group; yields its log."""
    script, log = folder / "acme-loop.sh", folder / "acme-loop.log"
    script.write_text(render_acme_script(render))
    with open(log, "wb") as out:
        proc = subprocess.Popen(["sh", str(script)], env={**os.environ, "LEGO_CA_CERTIFICATES": str(listener_ca)},
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            yield log
        finally:
            os.killpg(proc.pid, signal.SIGTERM)  # the loop and the lego it may be running
            proc.wait(10)


def worker_gid() -> int:
    """The group nginx's workers read the certificate as: nobody's (65534) when the tests run as
    root, as in the image; the test user's otherwise."""
    return 65534 if os.geteuid() == 0 else os.getgid()


def acme_gateway(store: Path, webroot: Path, **overrides):
    return gateway((), tls_pem_path=str(store / "live" / "gateway.pem"), acme_webroot=str(webroot),
                   domain=DOMAIN, tls_check_interval_s=1, redis_port=free_port(), resolver="127.0.0.1", **overrides)


def replace(path: Path, text: str) -> None:
    """As the sidecar publishes: a new file renamed over the old one."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    tmp.chmod(0o644)
    tmp.rename(path)


def leaf_pem(folder: Path, name: str) -> str:
    cert, key = self_signed_pem(folder, name)
    return cert.read_text() + key.read_text()


def test_gateway_starts_without_a_certificate_serves_challenges_and_picks_certificates_up():
    """Before issuance HTTPS handshakes are refused while HTTP serves /health and the ACME
    webroot (never redirected, never cached); a certificate that appears is served without a
    reload; a broken or mismatched replacement is ignored and the last good one kept."""
    nginx_binary()
    folder = scratch_dir("acme-gw-")
    store, webroot = folder / "store", folder / "webroot"
    (store / "live").mkdir(parents=True)
    (webroot / ".well-known" / "acme-challenge").mkdir(parents=True)
    live = store / "live" / "gateway.pem"
    try:
        # one worker: each worker keeps its own certificate, and this test must know which it asks
        with acme_gateway(store, webroot, worker_processes=1) as gw:
            https_port = gw.args.https_port
            wait_for_port(https_port)
            assert gw.get("/health")[0] == 200
            with pytest.raises(ssl.SSLError):
                with socket.create_connection(("127.0.0.1", https_port), timeout=5) as raw:
                    ssl._create_unverified_context().wrap_socket(raw, server_hostname=DOMAIN)

            (webroot / ".well-known" / "acme-challenge" / "tok-en_1").write_text("tok-en_1.thumbprint")
            status, headers, body = gw.get("/.well-known/acme-challenge/tok-en_1", headers={"Host": DOMAIN})
            assert (status, body) == (200, b"tok-en_1.thumbprint")
            assert headers["cache-control"] == "no-store" and headers["x-frame-options"] == "DENY"
            assert gw.get("/.well-known/acme-challenge/missing")[0] == 404
            assert gw.get("/.well-known/acme-challenge/tok-en_1", method="POST", body=b"x")[0] == 403
            plain = HTTPConnection("127.0.0.1", gw.args.http_port, timeout=5)
            plain.request("GET", "/api/anything")
            response = plain.getresponse()  # everything else still goes to https
            assert (response.status, response.getheader("Location")) == (
                301, f"https://{DOMAIN}:{https_port}/api/anything")
            plain.close()

            good = leaf_pem(folder, "first")
            replace(live, good)

            def serial() -> int | None:
                with contextlib.suppress(ssl.SSLError, OSError):
                    with socket.create_connection(("127.0.0.1", https_port), timeout=5) as raw:
                        with ssl._create_unverified_context().wrap_socket(raw, server_hostname=DOMAIN) as tls:
                            return x509.load_der_x509_certificate(tls.getpeercert(True)).serial_number
                return None

            first = wait_until(serial, 5, "the first certificate is not served", gw.errors)
            assert first == x509.load_pem_x509_certificate(good.encode()).serial_number

            # a chain whose key is another certificate's, then garbage: both ignored
            other_key = leaf_pem(folder, "other").split("-----BEGIN PRIVATE KEY-----")[1]
            replace(live, good.split("-----BEGIN PRIVATE KEY-----")[0] + "-----BEGIN PRIVATE KEY-----" + other_key)
            time.sleep(1.5)
            assert serial() == first, gw.errors()
            replace(live, "-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n")
            time.sleep(1.5)
            assert serial() == first, gw.errors()

            second_pem = leaf_pem(folder, "second")
            replace(live, second_pem)
            second = x509.load_pem_x509_certificate(second_pem.encode()).serial_number
            wait_until(lambda: serial() == second, 5, "the replacement is not served", gw.errors)
            errors = gw.errors()
            assert "is unusable" in errors and "keeping the previous certificate" in errors  # the wrong key
            assert "holds no certificate chain and key" in errors  # the garbage
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def test_pebble_issues_and_renews_through_the_real_gateway_without_dropping_a_request():
    require_tool("lego")
    require_tool("wget")
    nginx_binary()
    folder = scratch_dir("acme-pebble-")
    store, webroot = folder / "store", folder / "webroot"
    dns = DnsStub()
    dns.records[DOMAIN] = ["127.0.0.1"]
    try:
        with acme_gateway(store, webroot) as gw, pebble(folder, gw.args.http_port, dns) as ca:
            https_port = gw.args.https_port
            wait_for_port(https_port)
            render = AcmeRender(
                domain=DOMAIN, email="ops@coderz.example", directory_url=ca["directory"],
                probe_url=f"http://127.0.0.1:{gw.args.http_port}/.well-known/acme-challenge",
                store=str(store), webroot=str(webroot), lego=require_tool("lego"),
                # renew at every check (Pebble's certificates last years), checked every 2 s
                renew_days=36_500, check_interval_s=2, retry_s=1, reader_gid=worker_gid(),
            )
            root = pebble_root(ca)
            live = store / "live" / "gateway.pem"
            with acme_loop(folder, render, ca["listener_ca"]) as loop_log:
                def diagnose() -> str:
                    return "\n".join(f"--- {name}\n{path.read_text()[-2500:]}" for name, path in
                                     (("loop", loop_log), ("pebble", ca["log"]), ("nginx", gw.prefix / "error.log"))
                                     if path.exists())

                wait_until(live.exists, 60, "no certificate was published", diagnose)
                issued = x509.load_pem_x509_certificates(live.read_bytes())
                san = issued[0].extensions.get_extension_for_class(x509.SubjectAlternativeName).value
                assert san.get_values_for_type(x509.DNSName) == [DOMAIN] and len(issued) == 2  # leaf + intermediate

                # The gateway serves it, verified against Pebble's root, over TLS 1.2 and 1.3.
                def served_serial() -> int | None:
                    with contextlib.suppress(ssl.SSLError, OSError):
                        conn = DomainConnection(DOMAIN, https_port, context=domain_context(root), timeout=5)
                        try:
                            get_health(conn)
                            return conn.serial
                        finally:
                            conn.close()
                    return None

                first = wait_until(served_serial, 10, "the issued certificate is not served", diagnose)
                for version in (ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3):
                    conn = DomainConnection(DOMAIN, https_port, context=domain_context(root, version), timeout=5)
                    get_health(conn)
                    assert conn.sock.version() == version.name.replace("_", ".")
                    conn.close()

                # Renewal under load: new connections and one kept-alive connection never fail.
                failures: list[str] = []
                seen: set[int] = set()
                stop = threading.Event()
                kept = DomainConnection(DOMAIN, https_port, context=domain_context(root), timeout=5)
                get_health(kept)
                kept_serial = kept.serial

                def hammer() -> None:
                    while not stop.is_set():
                        try:
                            conn = DomainConnection(DOMAIN, https_port, context=domain_context(root), timeout=5)
                            get_health(conn)
                            seen.add(conn.serial)
                            conn.close()
                            get_health(kept)
                        except Exception as exc:  # every failure counts
                            failures.append(repr(exc))
                        # paced: nginx closes a connection after keepalive_requests (1000), and
                        # the kept one must outlive the renewal on its own merits
                        stop.wait(0.1)

                worker = threading.Thread(target=hammer, daemon=True)
                worker.start()
                try:
                    wait_until(lambda: len(seen - {first}) > 0, 60, "no renewed certificate was served", diagnose)
                finally:
                    stop.set()
                    worker.join(10)
                assert failures == [], failures[:5]
                assert kept.serial == kept_serial  # the connection from before the renewal lives on
                kept.close()
                # every worker moves on within its check interval (1 s here)
                wait_until(lambda: served_serial() not in (None, first), 5, "a worker kept the first certificate")

            # Pebble fetched every token from the gateway itself, on its HTTP port.
            fetched = [json.loads(line) for line in (gw.prefix / "access.log").read_text().splitlines()]
            tokens = [e for e in fetched if e["uri"].startswith("/.well-known/acme-challenge/")
                      and "/probe-" not in e["uri"] and e["status"] == 200]
            assert len(tokens) >= 2, "issuance and renewal were each validated through the gateway"
            assert {e["host"] for e in tokens} == {DOMAIN}
            assert all("Pebble" in e["user_agent"] for e in tokens)
    finally:
        dns.close()
        shutil.rmtree(folder, ignore_errors=True)
