"""The SMTP relay: its Postfix settings run on Debian's real Postfix (127.0.0.1), relaying to a
sink that demands STARTTLS and a login; and the component and stacks under mocks."""

from __future__ import annotations

import functools
import smtplib
import time

import pytest

from components.mail import settings as mail
from components.mail.relay import INIT_SCRIPT, SmtpRelay, SmtpRelayArgs
from components.monitoring import render as monitoring_render
from components.monitoring.settings import SmtpConfig
from infra.config import ConfigError, load
from tests.conftest import run
from tests.mailservers import postfix, tls_auth_sink
from tests.mocks import TEST_SECRETS, deploy_stack, engine_config, is_secret, service_of, unwrap

USER, PASSWORD = "relay@coderz.example", "s3cret pw:#1 'q'"
# What boky/postfix itself writes into main.cf before the POSTFIX_* values (scripts/common-run.sh):
# no local delivery, no relay domains, and, with ALLOWED_SENDER_DOMAINS, every relay permitted.
IMAGE_OWN_SETTINGS = {"mydestination": "", "relay_domains": "", "smtpd_relay_restrictions": "permit"}
RELAY = mail.SmtpRelayConfig(enabled=True)


def upstream(port: int) -> SmtpConfig:
    return SmtpConfig(host="127.0.0.1", port=port, user=USER, from_address="alerts@coderz.example",
                      to=("ops@coderz.example",))


def relay_with(up: SmtpConfig | None, password: str | None = None):
    """Debian's Postfix with the relay's settings (the container's `POSTFIX_*` values), its
    clients on 127.0.0.1 instead of the Docker network."""
    files = {"sasl_passwd": mail.password_map(up, password)} if up else {}
    return postfix(lambda folder: {**IMAGE_OWN_SETTINGS, **mail.postfix_settings(
        RELAY, up, password_map=str(folder / "sasl_passwd"), networks=("127.0.0.0/8",))}, files)


def send(port: int, subject: str) -> None:
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as client:
        client.sendmail("alerts@coderz.example", ["ops@coderz.example"], f"Subject: {subject}\r\n\r\nbody\r\n")


def wait_until(condition, timeout: float = 15.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.1)
    return False


def test_relay_delivers_to_the_upstream_over_starttls_logged_in():
    with tls_auth_sink(USER, PASSWORD) as sink, relay_with(upstream(sink.port), PASSWORD) as relay:
        send(relay.port, "relayed")
        assert wait_until(lambda: sink.messages), relay.log.read_text()
        (authenticated, login, envelope), = sink.messages
        assert authenticated and login == USER
        assert b"Subject: relayed" in envelope.original_content
        # the login went over TLS (the sink offers AUTH only after STARTTLS)
        assert sink.logins and all(tls for _, _, tls in sink.logins)
        assert wait_until(lambda: "Mail queue is empty" in relay.queue())


def test_a_wrong_password_defers_the_mail_and_keeps_it():
    with tls_auth_sink(USER, PASSWORD) as sink, relay_with(upstream(sink.port), "not-the-password") as relay:
        send(relay.port, "deferred")
        assert wait_until(lambda: "SASL authentication failed" in relay.log.read_text()), relay.log.read_text()
        assert sink.messages == [] and sink.logins
        queue = relay.queue()
        assert "ops@coderz.example" in queue and "authentication failed" in queue.lower(), queue
        assert "status=bounced" not in relay.log.read_text()


def test_without_upstream_mail_is_accepted_held_and_the_reason_logged():
    with relay_with(None) as relay:
        send(relay.port, "held")  # accepted: the sender has nothing to retry
        assert wait_until(lambda: mail.LOCAL_ONLY_REASON in relay.log.read_text())
        queue = relay.queue()
        # postqueue marks a held mail with "!" after its queue id
        assert "!" in queue.splitlines()[1] and "ops@coderz.example" in queue, queue




@pytest.mark.parametrize("with_upstream", [True, False], ids=["upstream", "local-only"])
def test_no_open_relay_a_client_outside_the_private_network_is_refused(with_upstream):
    """The private network is 127.0.0.2 here; a client from 127.0.0.3 is outside it."""
    import contextlib

    with contextlib.ExitStack() as stack:
        sink = stack.enter_context(tls_auth_sink(USER, PASSWORD)) if with_upstream else None
        up = upstream(sink.port) if sink else None
        relay = stack.enter_context(postfix(lambda folder: {**IMAGE_OWN_SETTINGS, **mail.postfix_settings(
            RELAY, up, password_map=str(folder / "sasl_passwd"), networks=("127.0.0.2/32",))},
            {"sasl_passwd": mail.password_map(up, PASSWORD)} if up else {}))

        def send_from(address: str, to: str) -> None:
            with smtplib.SMTP("127.0.0.1", relay.port, timeout=10, source_address=(address, 0)) as client:
                client.sendmail("alerts@coderz.example", [to], "Subject: relay?\r\n\r\nbody\r\n")

        for to in ("ops@coderz.example", "victim@elsewhere.example"):
            with pytest.raises((smtplib.SMTPRecipientsRefused, smtplib.SMTPSenderRefused)) as refused:
                send_from("127.0.0.3", to)
            assert "rejected" in str(refused.value) or "denied" in str(refused.value), refused.value
        assert "Mail queue is empty" in relay.queue()
        send_from("127.0.0.2", "ops@coderz.example")  # the private network is served
        if sink:
            assert wait_until(lambda: sink.messages) and len(sink.messages) == 1
        else:
            assert wait_until(lambda: "ops@coderz.example" in relay.queue())


@pytest.mark.parametrize("up", [None, upstream(587)], ids=["local-only", "upstream"])
def test_no_rendered_value_is_empty_as_the_image_would_delete_that_key(up):
    settings = mail.postfix_settings(RELAY, up)
    assert settings and all(value.strip() for value in settings.values()), settings


def test_an_upstream_without_tls_or_login_is_refused():
    plain = upstream(25).model_copy(update={"starttls": False})
    with pytest.raises(ValueError, match="TLS only"):
        mail.postfix_settings(RELAY, plain)
    with pytest.raises(ValueError, match="authenticates upstream"):
        mail.postfix_settings(RELAY, upstream(587).model_copy(update={"user": None}))
    with pytest.raises(ValueError, match="one line"):
        mail.password_map(upstream(587), "pw\nrelayhost = evil")
    assert mail.postfix_settings(RELAY, upstream(465).model_copy(update={"starttls": False}))["smtp_tls_wrappermode"] == "yes"


def test_stack_file_errors_name_the_key():
    raw, _ = engine_config("qa", secrets={"sshPrivateKey": "k", "smtpPassword": "p"},
                           overrides={"coderz:smtp": {"host": "mail.example", "port": 25, "starttls": False, "user": "u",
                                                      "fromAddress": "a@b.example", "to": ["c@d.example"]}})
    with pytest.raises(ConfigError, match=r"^Pulumi\.qa\.yaml: coderz:smtp\.starttls: .*TLS only"):
        load(raw, "qa", check_secrets=False)
    raw, _ = engine_config("qa", secrets={"sshPrivateKey": "k"}, overrides={"coderz:smtpRelay": {"enabled": True, "port": 25}})
    with pytest.raises(ConfigError, match=r"coderz:smtpRelay\.port: unknown key"):
        load(raw, "qa", check_secrets=False)


# --- the component and the stacks, under mocks ---------------------------------------------------


def relay_spec():
    from infra.services_tools import smtp_check
    from tests.conftest import make_spec
    return make_spec("smtp-relay", port=mail.RELAY_PORT, route=None, metrics=None, health=smtp_check(mail.RELAY_PORT))


def test_component_gives_the_container_the_rendered_settings_and_a_secret_password_map(monitor, provider):
    from components.container import Placement
    up = upstream(587).model_copy(update={"host": "smtp.coderz.example"})
    run(lambda: SmtpRelay("smtp-relay", SmtpRelayArgs(
        spec=relay_spec(), placement=Placement(prefix="coderz-test", network_name="net", provider=provider),
        config=RELAY, upstream=up, upstream_password=PASSWORD)))
    (container,) = monitor.of_type("docker:index/container:Container")
    envs = container.plain["envs"]
    for key, value in mail.postfix_settings(RELAY, up).items():
        assert f"POSTFIX_{key}={value}" in envs
    assert "ALLOWED_SENDER_DOMAINS=coderz.example" in envs and not container.plain.get("ports")
    # the password map makes the uploads a secret as a whole, as the engine stores them
    assert is_secret(container.inputs["uploads"])
    (upload,) = [u for u in container.plain["uploads"] if u["file"] == mail.PASSWORD_MAP]
    assert upload["content"] == f"[smtp.coderz.example]:587 {USER}:{PASSWORD}\n"
    assert PASSWORD not in str([unwrap(e) for e in container.inputs["envs"]])
    (init,) = [u for u in container.plain["uploads"] if u["file"] == INIT_SCRIPT]
    assert "relaying all mail to [smtp.coderz.example]:587, TLS required" in init["content"]


def test_component_without_upstream_holds_mail_and_says_so(monitor, provider):
    from components.container import Placement
    run(lambda: SmtpRelay("smtp-relay", SmtpRelayArgs(
        spec=relay_spec(), placement=Placement(prefix="coderz-test", network_name="net", provider=provider),
        config=RELAY)))
    (container,) = monitor.of_type("docker:index/container:Container")
    uploads = {u["file"]: u["content"] for u in container.plain["uploads"]}
    assert mail.LOCAL_ONLY_LOG in uploads[INIT_SCRIPT]
    assert "ALLOW_EMPTY_SENDER_DOMAINS=true" in container.plain["envs"]
    with pytest.raises(ValueError, match="upstream_password"):
        SmtpRelayArgs(spec=relay_spec(), placement=Placement(prefix="p", network_name="n", provider=provider),
                      config=RELAY, upstream=upstream(587))


@functools.cache
def deployed(stack: str):
    return deploy_stack(stack)


@pytest.mark.parametrize("stack", ["qa", "prod"])
def test_senders_mail_through_the_relay_which_alone_holds_the_password(stack):
    monitor, outputs = deployed(stack)
    assert outputs["smtp_endpoint"] == "smtp-relay:587"
    containers = {service_of(c): c for c in monitor.of_type("docker:index/container:Container")}
    alertmanager = containers["alertmanager"]
    (config,) = [u["content"] for u in alertmanager.plain["uploads"] if u["file"] == monitoring_render.ALERTMANAGER_CONFIG]
    assert "smtp_smarthost: smtp-relay:587" in config and "smtp_require_tls: false" in config
    assert TEST_SECRETS["smtpPassword"] not in config and "smtp_auth_password" not in config
    grafana = containers["grafana"].plain["envs"]
    assert "GF_SMTP_HOST=smtp-relay:587" in grafana and "GF_SMTP_ENABLED=true" in grafana
    assert not any(e.startswith("GF_SMTP_PASSWORD") for e in grafana)
    relay = containers["smtp-relay"].plain
    assert "POSTFIX_relayhost=[smtp.coderz.example]:587" in relay["envs"]
    assert "POSTFIX_smtp_tls_security_level=encrypt" in relay["envs"]
    assert not relay.get("ports"), "the relay is never published on the host"


def test_dev_has_no_upstream_so_its_relay_holds_mail():
    monitor, outputs = deployed("dev")
    assert outputs["smtp_endpoint"] == "smtp-relay:587"
    (relay,) = [c for c in monitor.of_type("docker:index/container:Container") if service_of(c) == "smtp-relay"]
    assert any(mail.LOCAL_ONLY_REASON in e for e in relay.plain["envs"])
    assert not relay.plain.get("ports"), "the relay is never published on the host"


def test_without_the_relay_senders_use_coderz_smtp_directly():
    monitor, outputs = deploy_stack("qa", **{"coderz:smtpRelay": {"enabled": False}})
    containers = {service_of(c): c for c in monitor.of_type("docker:index/container:Container")}
    assert "smtp-relay" not in containers
    (config,) = [u["content"] for u in containers["alertmanager"].plain["uploads"]
                 if u["file"] == monitoring_render.ALERTMANAGER_CONFIG]
    assert "smtp_smarthost: smtp.coderz.example:587" in config and "smtp-relay" not in config
    assert "GF_SMTP_HOST=smtp.coderz.example:587" in containers["grafana"].plain["envs"]
    assert "smtp-relay" not in str(outputs.get("smtp_endpoint"))
