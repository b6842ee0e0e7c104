"""Value types for config fields that end up in a command line, a URL or a server's config:
host names, domain names, login names, Docker engine addresses.

Each is refused at load time with a message that says what is expected, so a value that
`ssh`, Docker, nginx or Alertmanager would choke on never reaches them.
"""

from __future__ import annotations

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


HostName = Annotated[str, AfterValidator(host_name)]
DomainName = Annotated[str, AfterValidator(domain_name)]
LoginName = Annotated[str, AfterValidator(login_name)]
DockerSocket = Annotated[str, AfterValidator(docker_socket)]
EmailAddress = Annotated[str, AfterValidator(email_address)]
