"""The SMTP relay's settings as a stack file states them (`coderz:smtpRelay`), and the Postfix
settings rendered from them: the container gets them as `POSTFIX_<key>` variables (the image
applies each to main.cf), the tests write the same keys into a real Postfix's main.cf."""

from __future__ import annotations

from pydantic import Field

from components.monitoring.settings import SmtpConfig
from components.spec import Frozen, PinnedImage

RELAY_PORT = 587  # the image's submission port, plain SMTP on the private network
RELAY_CONFIG_DIR = "/etc/postfix/coderz"
PASSWORD_MAP = f"{RELAY_CONFIG_DIR}/sasl_passwd"
# Who may hand mail to the relay: Docker's private bridge ranges (the port is never published,
# so only containers of the stack network reach it) and the container itself.
PRIVATE_NETWORKS = ("127.0.0.0/8", "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16")
LOCAL_ONLY_REASON = "no upstream SMTP (coderz:smtp) is configured, mail is held in the relay"
LOCAL_ONLY_LOG = f"coderz smtp-relay: {LOCAL_ONLY_REASON}"


class SmtpRelayConfig(Frozen):
    """`coderz:smtpRelay`: a Postfix relay on the stack network. With `coderz:smtp` it relays
    there over TLS with the user and the secret `smtpPassword`; without it, mail is kept in its
    hold queue (never sent anywhere; `postqueue -p` lists it) and its log says so."""

    enabled: bool = False
    image: PinnedImage = "boky/postfix:v4.4.0"
    hostname: str = Field(default="smtp-relay.coderz.internal", pattern=r"^[a-z0-9]([a-z0-9.-]{0,200}[a-z0-9])?$")


def upstream_problem(upstream: SmtpConfig | None) -> tuple[str, str] | None:
    """Why the relay cannot send to `upstream` as the stack file says, as (key, message)."""
    if upstream is None:
        return None
    if not upstream.starttls and upstream.port != 465:
        return "smtp.starttls", "the SMTP relay sends upstream over TLS only (STARTTLS, or port 465)"
    if not upstream.user:
        return "smtp.user", "the SMTP relay authenticates upstream: set smtp.user and the secret smtpPassword"
    return None


def relayhost(upstream: SmtpConfig) -> str:
    # Brackets: the host itself, no MX lookup for it.
    return f"[{upstream.host}]:{upstream.port}"


def postfix_settings(config: SmtpRelayConfig, upstream: SmtpConfig | None, *,
                     password_map: str = PASSWORD_MAP, networks: tuple[str, ...] = PRIVATE_NETWORKS) -> dict[str, str]:
    """main.cf keys of the relay. Upstream: TLS required (`encrypt`), SASL with a password map
    read without postmap (`texthash`), never an anonymous login. Without upstream every mail is
    accepted and put on hold (a client never sees a failure to retry), the reason logged per mail.
    No value is empty: the image takes an empty `POSTFIX_<key>` as "delete the key", which would
    undo its own `mydestination=` (no local delivery) and `relayhost=`."""
    problem = upstream_problem(upstream)
    if problem:
        raise ValueError(f"{problem[0]}: {problem[1]}")
    settings = {
        "myhostname": config.hostname,
        "mynetworks": " ".join(networks),
        # Only mynetworks may hand over mail, whatever the image sets (boky/postfix sets
        # smtpd_relay_restrictions=permit when ALLOWED_SENDER_DOMAINS is given): no open relay
        # even should the port ever be reached from outside the stack network.
        "smtpd_client_restrictions": "permit_mynetworks, reject",
        "smtpd_relay_restrictions": "permit_mynetworks, reject",
        "smtputf8_enable": "no",
    }
    if upstream is None:
        settings.update(smtp_sasl_auth_enable="no",
                        smtpd_end_of_data_restrictions=f"check_client_access static:{{HOLD {LOCAL_ONLY_REASON}}}")
        return settings
    settings.update(
        relayhost=relayhost(upstream),
        smtp_tls_security_level="encrypt",
        smtp_tls_wrappermode="yes" if upstream.port == 465 else "no",
        smtp_sasl_auth_enable="yes",
        smtp_sasl_password_maps=f"texthash:{password_map}",
        smtp_sasl_security_options="noanonymous",
        smtp_sasl_tls_security_options="noanonymous",
    )
    return settings


def password_map(upstream: SmtpConfig, password: str) -> str:
    """The SASL password map (`texthash`): the relayhost, then user:password."""
    if not upstream.user:
        raise ValueError("smtp.user is required for the password map")
    if any(c in password for c in "\r\n"):
        raise ValueError("the SMTP password must be one line")
    return f"{relayhost(upstream)} {upstream.user}:{password}\n"


def sender_domain(upstream: SmtpConfig) -> str:
    return upstream.from_address.rsplit("@", 1)[1]
