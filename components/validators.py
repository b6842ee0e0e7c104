"""Value types for config fields that end up in a command line, a URL or a server's config:
host names, domain names, login names, Docker engine addresses.

Each is refused at load time with a message that says what is expected, so a value that
`ssh`, Docker, nginx or Alertmanager would choke on never reaches them.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import re
from typing import Annotated

from pydantic import AfterValidator

_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_DNS_NAME = re.compile(rf"{_LABEL}(?:\.{_LABEL})*")
_LOGIN = re.compile(r"[a-z_][a-z0-9_-]{0,31}")  # Debian's NAME_REGEX, within useradd's 32 bytes
_UNIX_SOCKET = re.compile(r"unix:///[A-Za-z0-9._/-]+")
# An addr-spec's dot-atom local part (RFC 5322): no comma, quote or bracket, since Alertmanager
# splits `to` on commas and parses each address.
_LOCAL_PART = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*")


class FieldError(ValueError):
    """An error a model validator raises about one of its fields (a dotted path), so the
    loader names that key rather than the whole section."""

    def __init__(self, field: str, message: str):
        super().__init__(message)
        self.field = field


def host_name(value: str) -> str:
    """A DNS name (ASCII; an internationalised name in its xn-- form) or an IPv4 address."""
    if len(value) > 253 or not _DNS_NAME.fullmatch(value):
        raise ValueError(f"{value!r} is not a host name (letters, digits, '-' and '.'; xn-- form for non-ASCII) "
                         "or an IPv4 address")
    if all(label.isdigit() for label in value.split(".")):
        try:
            ipaddress.IPv4Address(value)
        except ValueError:
            raise ValueError(f"{value!r} is not a valid IPv4 address") from None
    return value


def domain_name(value: str) -> str:
    """A fully qualified DNS name a certificate can be issued for: two labels or more, not an
    address, no wildcard."""
    host_name(value)
    labels = value.split(".")
    if len(labels) < 2 or labels[-1].isdigit():
        raise ValueError(f"{value!r} is not a fully qualified domain name like api.example.com")
    return value


def email_address(value: str) -> str:
    """A plain `local@domain.tld` address (no display name, no quoted local part)."""
    local, at, domain = value.rpartition("@")
    try:
        if not at or len(local) > 64 or not _LOCAL_PART.fullmatch(local):
            raise ValueError
        domain_name(domain)
    except ValueError:
        raise ValueError(f"{value!r} is not an e-mail address like ops@example.com") from None
    return value


def login_name(value: str) -> str:
    if not _LOGIN.fullmatch(value):
        raise ValueError(f"{value!r} is not a login name (lowercase letters, digits, '_' and '-', at most 32)")
    return value


def docker_socket(value: str) -> str:
    """The local engine's address: `unix:///absolute/path` or `tcp://host:port`."""
    if _UNIX_SOCKET.fullmatch(value) and "/../" not in value + "/":
        return value
    scheme, _, rest = value.partition("://")
    host, _, port = rest.rpartition(":")
    if scheme == "tcp" and port.isdigit() and 1 <= int(port) <= 65535 and host:
        host_name(host)
        return value
    raise ValueError(f"{value!r} is not a Docker engine address (unix:///var/run/docker.sock or tcp://host:port)")


_PEM_PRIVATE_KEY = re.compile(
    r"-----BEGIN ((?:OPENSSH|RSA|EC|DSA) )?PRIVATE KEY-----\s*\n(.*?)\n\s*-----END \1?PRIVATE KEY-----", re.S)
_OPENSSH_MAGIC = b"openssh-key-v1\x00"


def ssh_private_key_problem(text: str) -> str | None:
    """What stops ssh from using this key without a person at the keyboard, or None. Never
    quotes the key."""
    match = _PEM_PRIVATE_KEY.search(text)
    if not match:
        return "is not a private key in PEM form (-----BEGIN OPENSSH PRIVATE KEY----- ... -----END ...)"
    headers_or_body = match.group(2)
    if "ENCRYPTED" in headers_or_body:
        return "is protected by a passphrase, which a deploy cannot type: remove it (ssh-keygen -p) and set it again"
    if match.group(1) == "OPENSSH ":
        try:
            blob = base64.b64decode("".join(headers_or_body.split()), validate=True)
        except (binascii.Error, ValueError):
            return "is not valid base64 between its BEGIN and END lines"
        if not blob.startswith(_OPENSSH_MAGIC) or len(blob) < len(_OPENSSH_MAGIC) + 4:
            return "is not an OpenSSH private key"
        size = int.from_bytes(blob[len(_OPENSSH_MAGIC):len(_OPENSSH_MAGIC) + 4], "big")
        cipher = blob[len(_OPENSSH_MAGIC) + 4:len(_OPENSSH_MAGIC) + 4 + size]
        if cipher != b"none":
            return "is protected by a passphrase, which a deploy cannot type: remove it (ssh-keygen -p) and set it again"
    return None


HostName = Annotated[str, AfterValidator(host_name)]
DomainName = Annotated[str, AfterValidator(domain_name)]
LoginName = Annotated[str, AfterValidator(login_name)]
DockerSocket = Annotated[str, AfterValidator(docker_socket)]
EmailAddress = Annotated[str, AfterValidator(email_address)]
