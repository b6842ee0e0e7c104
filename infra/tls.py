"""The gateway's TLS choice, checked before any resource exists.

A stack with `gateway.domain` gets its certificate from an ACME CA (`gateway.acme`) unless it
sets one by hand (`gateway.tls.certificate` + secret `tlsPrivateKey`). A certificate set by
hand is parsed here, with the `cryptography` package: a PEM chain of X.509 certificates, each
issued by the next, none expired, the leaf covering the domain, and a private key that is the
leaf's. nginx would otherwise find out at start, after everything else was replaced.
"""

from __future__ import annotations

import re
from datetime import datetime, timezone
from typing import TYPE_CHECKING

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa

from components.gateway.acme import DNS_NAME

if TYPE_CHECKING:
    from infra.config import StackConfig

# (config key without the namespace, message)
Problem = tuple[str, str]
_SPKI = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def check_gateway_tls(config: StackConfig, secrets: dict[str, str], now: datetime | None = None) -> Problem | None:
    """The first problem of the stack's TLS choice, as (key, message); None when it can deploy."""
    gateway = config.gateway
    if gateway.tls and gateway.acme:
        return "gateway.tls", "choose ACME (gateway.acme) or a certificate set by hand (gateway.tls), not both"
    if gateway.acme and not gateway.domain:
        return "gateway.acme", "ACME needs gateway.domain (the name the certificate is issued for)"
    if gateway.domain and not gateway.tls and not gateway.acme:
        return "gateway.acme.email", ("required key is missing: a domain gets its certificate by ACME "
                                      "(or set gateway.tls.certificate and the secret tlsPrivateKey)")
    if gateway.acme and not (re.match(DNS_NAME, gateway.domain or "") and len(gateway.domain or "") <= 253):
        return "gateway.domain", "ACME issues for a lowercase DNS name (not an IP address, wildcard or single label)"
    if gateway.tls_mode and config.ports.https is None:
        return "ports.https", f"gateway TLS ({gateway.tls_mode}) needs an https port"
    if config.ports.https is not None and not gateway.tls_mode:
        return "ports.https", ("nothing serves HTTPS without a certificate: set gateway.acme (with gateway.domain) "
                               "or gateway.tls, or drop the port")
    if gateway.tls:
        if "tlsPrivateKey" not in secrets:
            return "tlsPrivateKey", "gateway.tls needs its key (pulumi config set --secret tlsPrivateKey)"
        return check_certificate(gateway.tls.certificate, secrets["tlsPrivateKey"], gateway.domain, now)
    return None


def check_certificate(chain_pem: str, key_pem: str, domain: str | None, now: datetime | None = None) -> Problem | None:
    """A certificate set by hand: the chain, its dates, the domain, and the key."""
    cert_key = "gateway.tls.certificate"
    try:
        chain = x509.load_pem_x509_certificates(chain_pem.encode())
    except ValueError as exc:
        return cert_key, f"not a PEM certificate chain ({exc})"
    now = now or datetime.now(timezone.utc)
    for position, cert in enumerate(chain):
        where = "the certificate" if position == 0 else f"chain certificate {position + 1}"
        if cert.not_valid_after_utc <= now:
            return cert_key, f"{where} expired on {cert.not_valid_after_utc:%Y-%m-%d}"
        if cert.not_valid_before_utc > now:
            return cert_key, f"{where} is not valid before {cert.not_valid_before_utc:%Y-%m-%d}"
    for position, (cert, issuer) in enumerate(zip(chain, chain[1:])):
        try:
            cert.verify_directly_issued_by(issuer)
        except (ValueError, TypeError, InvalidSignature):
            return cert_key, (f"certificate {position + 1} is not issued by certificate {position + 2}: "
                              "the chain is the leaf first, then each issuer")
    if domain and not covers(chain[0], domain):
        return cert_key, f"the certificate does not cover {domain} (subjectAltName)"
    try:
        key = serialization.load_pem_private_key(key_pem.encode(), password=None)
    except (ValueError, TypeError):
        # never echo the key's text or the parser's view of it
        return "tlsPrivateKey", "not an unencrypted PEM private key"
    if not isinstance(key, (rsa.RSAPrivateKey, ec.EllipticCurvePrivateKey, ed25519.Ed25519PrivateKey,
                            ed448.Ed448PrivateKey)):
        return "tlsPrivateKey", f"a {type(key).__name__} cannot serve TLS"
    if isinstance(key, rsa.RSAPrivateKey) and key.key_size < 2048:
        return "tlsPrivateKey", f"an RSA key of {key.key_size} bits is too weak (2048 at least)"
    if key.public_key().public_bytes(*_SPKI) != chain[0].public_key().public_bytes(*_SPKI):
        return "tlsPrivateKey", "is not the key of gateway.tls.certificate (the leaf, first in the chain)"
    return None


def covers(cert: x509.Certificate, domain: str) -> bool:
    """Whether a DNS name of the certificate's subjectAltName matches `domain` (one-label
    wildcards included); the subject's CN is not looked at, as browsers do not."""
    try:
        names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return False
    domain = domain.lower().rstrip(".")
    for name in names.get_values_for_type(x509.DNSName):
        name = name.lower().rstrip(".")
        if name == domain:
            return True
        if name.startswith("*.") and "." in domain and domain.split(".", 1)[1] == name[2:]:
            return True
    return False
