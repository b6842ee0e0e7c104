"""The gateway's TLS choice in the stack file: ACME by default with a domain, or a certificate
set by hand that is parsed (chain, dates, domain, key) before any resource is registered."""

from __future__ import annotations

import datetime

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from infra.config import ConfigError, load, load_current
from tests.mocks import gateway_installed_files as installed
from tests.mocks import TEST_SECRETS, deploy_stack, engine_config, install_mocks

NOW = datetime.datetime.now(datetime.timezone.utc)
DAY = datetime.timedelta(days=1)
DOMAIN = "coderz.example"


def pem(cert: x509.Certificate) -> str:
    return cert.public_bytes(serialization.Encoding.PEM).decode()


def key_pem(key, password: bytes | None = None) -> str:
    encryption = serialization.BestAvailableEncryption(password) if password else serialization.NoEncryption()
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption).decode()


def issue(subject: str, key, issuer_name: str, issuer_key, *, ca: bool, names=(), not_before=None, not_after=None):
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
        .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer_name)]))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before or NOW - DAY)
        .not_valid_after(not_after or NOW + 30 * DAY)
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if names:
        builder = builder.add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


def chain(names=(DOMAIN,), **leaf_dates):
    """(fullchain PEM, leaf key, intermediate certificate, leaf certificate) under a fresh CA."""
    root_key, mid_key, leaf_key = (ec.generate_private_key(ec.SECP256R1()) for _ in range(3))
    mid = issue("test intermediate", mid_key, "test root", root_key, ca=True)
    leaf = issue(DOMAIN, leaf_key, "test intermediate", mid_key, ca=False, names=names, **leaf_dates)
    return pem(leaf) + pem(mid), leaf_key, mid, leaf


def prod_raw(gateway: dict, *, tls_key: str | None = None, https: bool = True) -> dict:
    secrets = {"sshPrivateKey": TEST_SECRETS["sshPrivateKey"], "smtpPassword": TEST_SECRETS["smtpPassword"]}
    if tls_key is not None:
        secrets["tlsPrivateKey"] = tls_key
    ports = {"base": 5000, "http": 80, **({"https": 443} if https else {})}
    raw, _ = engine_config("prod", secrets=secrets, overrides={"coderz:gateway": gateway, "coderz:ports": ports})
    return raw


def manual(certificate: str) -> dict:
    return {"domain": DOMAIN, "tls": {"certificate": certificate}}


def refused(raw: dict) -> str:
    """The message, after checking that the program registers nothing with this config."""
    with pytest.raises(ConfigError) as caught:
        load(raw, "prod")
    monitor = install_mocks("prod", raw, [k for k in raw if k.endswith(("PrivateKey", "Password"))])
    from infra.platform import build

    with pytest.raises(ConfigError):
        build(load_current())
    assert monitor.registrations == []
    return str(caught.value)


def test_the_prod_placeholder_certificate_that_broke_nginx_is_refused():
    placeholder = "-----BEGIN CERTIFICATE-----\nREPLACE-WITH-THE-FULLCHAIN-OF-coderz.example\n-----END CERTIFICATE-----\n"
    _, key, _, _ = chain()
    message = refused(prod_raw(manual(placeholder), tls_key=key_pem(key)))
    assert message.startswith("Pulumi.prod.yaml: coderz:gateway.tls.certificate: not a PEM certificate chain")


def test_a_valid_certificate_set_by_hand_deploys_without_acme():
    fullchain, key, _, _ = chain(names=("www.coderz.example", DOMAIN))
    raw = prod_raw(manual(fullchain), tls_key=key_pem(key))
    assert load(raw, "prod").config.gateway.tls_mode == "manual"
    monitor, outputs = deploy_stack("prod", **{"coderz:gateway": manual(fullchain), "coderz:tlsPrivateKey": key_pem(key)})
    assert not monitor.of_type("coderz:edge:Acme")
    (command,) = [c for c in monitor.registrations if c.name == "gateway-config"]
    files = {path: text for path, (text, _) in installed(command).items()}
    assert fullchain in files.values() and key_pem(key) in files.values()
    assert outputs["gateway_url"] == "https://coderz.example"


def test_a_wildcard_covers_one_label():
    fullchain, key, _, _ = chain(names=("*.coderz.example",))
    raw = prod_raw({"domain": "api.coderz.example", "tls": {"certificate": fullchain}}, tls_key=key_pem(key))
    assert load(raw, "prod").config.gateway.tls_mode == "manual"
    raw = prod_raw({"domain": "a.api.coderz.example", "tls": {"certificate": fullchain}}, tls_key=key_pem(key))
    assert "does not cover a.api.coderz.example" in refused(raw)


CERT_KEY = "Pulumi.prod.yaml: coderz:gateway.tls.certificate: "
KEY_KEY = "Pulumi.prod.yaml: coderz:tlsPrivateKey: "


@pytest.mark.parametrize("case,expected", [
    ("expired", CERT_KEY + "the certificate expired on "),
    ("not-yet-valid", CERT_KEY + "the certificate is not valid before "),
    ("expired-intermediate", CERT_KEY + "chain certificate 2 expired on "),
    ("wrong-order", CERT_KEY + "certificate 1 is not issued by certificate 2"),
    ("other-domain", CERT_KEY + "the certificate does not cover coderz.example"),
    ("no-san", CERT_KEY + "the certificate does not cover coderz.example"),
    ("empty", CERT_KEY + "not a PEM certificate chain"),
    ("mismatched-key", KEY_KEY + "is not the key of gateway.tls.certificate"),
    ("garbage-key", KEY_KEY + "not an unencrypted PEM private key"),
    ("encrypted-key", KEY_KEY + "not an unencrypted PEM private key"),
    ("weak-rsa-key", KEY_KEY + "an RSA key of 1024 bits is too weak"),
    ("missing-key", KEY_KEY + "gateway.tls needs its key"),
])
def test_a_bad_certificate_or_key_is_refused_naming_the_key(case, expected):
    fullchain, key, mid, leaf = chain()
    tls_key: str | None = key_pem(key)
    if case == "expired":
        fullchain, key, _, _ = chain(not_before=NOW - 100 * DAY, not_after=NOW - DAY)
        tls_key = key_pem(key)
    elif case == "not-yet-valid":
        fullchain, key, _, _ = chain(not_before=NOW + DAY, not_after=NOW + 90 * DAY)
        tls_key = key_pem(key)
    elif case == "expired-intermediate":
        old_key = ec.generate_private_key(ec.SECP256R1())
        old_mid = issue("test intermediate", old_key, "test root", old_key, ca=True,
                        not_before=NOW - 9 * DAY, not_after=NOW - DAY)
        fullchain = pem(leaf) + pem(old_mid)
    elif case == "wrong-order":
        fullchain = pem(mid) + pem(leaf)
    elif case == "other-domain":
        fullchain, key, _, _ = chain(names=("other.example",))
        tls_key = key_pem(key)
    elif case == "no-san":
        fullchain, key, _, _ = chain(names=())
        tls_key = key_pem(key)
    elif case == "empty":
        fullchain = "just text, no PEM"
    elif case == "mismatched-key":
        tls_key = key_pem(ec.generate_private_key(ec.SECP256R1()))
    elif case == "garbage-key":
        tls_key = "-----BEGIN PRIVATE KEY-----\nSECRET-GARBAGE\n-----END PRIVATE KEY-----"
    elif case == "encrypted-key":
        tls_key = key_pem(key, b"passphrase")
    elif case == "weak-rsa-key":
        weak = rsa.generate_private_key(65537, 1024)
        root = ec.generate_private_key(ec.SECP256R1())
        fullchain = pem(issue(DOMAIN, weak, "test root", root, ca=False, names=(DOMAIN,)))
        tls_key = key_pem(weak)
    elif case == "missing-key":
        tls_key = None
    message = refused(prod_raw(manual(fullchain), tls_key=tls_key))
    assert message.startswith(expected), message
    if tls_key:
        assert "SECRET-GARBAGE" not in message and tls_key[40:80] not in message


@pytest.mark.parametrize("gateway,https,expected", [
    ({"domain": DOMAIN}, True, "coderz:gateway.acme.email: required key is missing"),
    ({"domain": DOMAIN, "acme": {}}, True, "coderz:gateway.acme.email: required key is missing"),
    ({"domain": DOMAIN, "acme": {"email": "not-an-address"}}, True, "coderz:gateway.acme.email: String should match"),
    ({"domain": DOMAIN, "acme": {"email": "ops@coderz.example", "directoryUrl": "http://ca.example/dir"}}, True,
     "coderz:gateway.acme.directoryUrl: String should match"),
    ({"domain": DOMAIN, "acme": {"email": "ops@coderz.example", "emial": "x"}}, True,
     "coderz:gateway.acme.emial: unknown key (typo?)"),
    ({"acme": {"email": "ops@coderz.example"}}, True, "coderz:gateway.acme: ACME needs gateway.domain"),
    # refused by the domain rule itself (infra/config.py) before the ACME check sees them
    ({"domain": "203.0.113.7", "acme": {"email": "ops@coderz.example"}}, True,
     "coderz:gateway.domain: '203.0.113.7' is not a fully qualified domain name"),
    ({"domain": "localhost", "acme": {"email": "ops@coderz.example"}}, True,
     "coderz:gateway.domain: 'localhost' is not a fully qualified domain name"),
    ({"domain": DOMAIN, "acme": {"email": "ops@coderz.example"}}, False, "coderz:ports.https: gateway TLS (acme) needs"),
    ({"domain": DOMAIN, "acme": {"email": "ops@coderz.example"}, "tls": {"certificate": "x"}}, True,
     "coderz:gateway.tls: choose ACME (gateway.acme) or a certificate set by hand"),
])
def test_the_tls_choice_is_checked_naming_the_key(gateway, https, expected):
    message = refused(prod_raw(gateway, https=https))
    assert message.startswith("Pulumi.prod.yaml: " + expected), message


def test_acme_with_the_staging_directory_is_accepted():
    staging = "https://acme-staging-v02.api.letsencrypt.org/directory"
    raw = prod_raw({"domain": DOMAIN, "acme": {"email": "ops@coderz.example", "directoryUrl": staging}})
    gateway = load(raw, "prod").config.gateway
    assert (gateway.tls_mode, gateway.acme.directory_url) == ("acme", staging)
