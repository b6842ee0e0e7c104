"""The alert path end to end on real binaries: an alert posted to a real Alertmanager, run with
the generated config, arrives as an e-mail at a local SMTP sink (aiosmtpd), after logging in
with the configured user and password."""

from __future__ import annotations

import email
import email.policy
import json
import shutil
import time
from contextlib import contextmanager
from datetime import datetime, timezone
from typing import Iterator

from components.monitoring import render
from components.monitoring.settings import SmtpConfig
from tests.servers import (
    free_port,
    http,
    process,
    require_module,
    require_tool,
    scratch_dir,
)

PASSWORD = "sink-password: 'quoted' #1"
ALERT = {
    "labels": {"alertname": "GatewayHighErrorRate", "severity": "critical", "stack": "coderz-test"},
    "annotations": {"summary": "Gateway 5xx rate above 10%",
                    "description": "16.7% of gateway requests answered 5xx over the last 5 minutes."},
}


@contextmanager
def smtp_sink(user: str, password: str) -> Iterator[tuple[int, list, list]]:
    """An SMTP server on a free loopback port that accepts AUTH without TLS; yields
    (port, messages received, logins tried)."""
    require_module("aiosmtpd")
    from aiosmtpd.controller import Controller
    from aiosmtpd.smtp import AuthResult

    messages, logins = [], []

    class Sink:
        async def handle_DATA(self, server, session, envelope):
            messages.append(envelope)
            return "250 OK"

    def authenticator(server, session, envelope, mechanism, auth_data):
        logins.append((mechanism, auth_data.login.decode(), auth_data.password.decode()))
        return AuthResult(success=(auth_data.login.decode(), auth_data.password.decode()) == (user, password))

    port = free_port()
    # PLAIN only: aiosmtpd's LOGIN challenges ("User Name") are not the "Username:" that real
    # servers send and Alertmanager expects, so it would abort a LOGIN exchange.
    controller = Controller(Sink(), hostname="127.0.0.1", port=port, authenticator=authenticator,
                            auth_require_tls=False, auth_exclude_mechanism=["LOGIN"])
    controller.start()
    try:
        yield port, messages, logins
    finally:
        controller.stop()


@contextmanager
def alertmanager(config_text: str) -> Iterator[int]:
    """A real Alertmanager with `config_text`, on a free loopback port."""
    binary = require_tool("prometheus-alertmanager")
    folder = scratch_dir("alertmanager-")
    config = folder / "alertmanager.yml"
    config.write_text(config_text)
    port = free_port()
    argv = [binary, *render.alertmanager_flags(config_file=str(config), data_dir=str(folder / "data")),
            f"--web.listen-address=127.0.0.1:{port}"]
    try:
        with process(argv, port=port, log=folder / "alertmanager.log"):
            yield port
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def post_alert(port: int) -> None:
    body = json.dumps([{**ALERT, "startsAt": datetime.now(timezone.utc).isoformat()}]).encode()
    status, _, answer = http("POST", f"http://127.0.0.1:{port}/api/v2/alerts", body=body,
                             headers={"Content-Type": "application/json"})
    assert status == 200, answer


def test_a_posted_alert_arrives_by_email():
    with smtp_sink("alerts", PASSWORD) as (smtp_port, messages, logins):
        smtp = SmtpConfig(host="127.0.0.1", port=smtp_port, user="alerts", from_address="alertmanager@coderz.test",
                          to=("ops@coderz.test", "oncall@coderz.test"), starttls=False)
        with alertmanager(render.render_alertmanager_config(smtp, PASSWORD, group_wait_s=1)) as port:
            post_alert(port)
            deadline = time.monotonic() + 30
            while not messages and time.monotonic() < deadline:
                time.sleep(0.2)
    assert messages, f"no mail within 30s (logins tried: {logins})"
    envelope = messages[0]
    assert ("alerts", PASSWORD) in [(login, password) for _, login, password in logins]
    assert envelope.mail_from == "alertmanager@coderz.test"
    assert sorted(envelope.rcpt_tos) == ["oncall@coderz.test", "ops@coderz.test"]
    message = email.message_from_bytes(envelope.original_content, policy=email.policy.default)
    assert "GatewayHighErrorRate" in message["Subject"] and "FIRING" in message["Subject"]
    text = message.get_body(preferencelist=("plain", "html")).get_content()
    assert "Gateway 5xx rate above 10%" in text


def test_without_smtp_alerts_end_in_the_null_receiver():
    with alertmanager(render.render_alertmanager_config(None, group_wait_s=1)) as port:
        post_alert(port)
        deadline = time.monotonic() + 10
        groups = []
        while not groups and time.monotonic() < deadline:
            status, _, body = http("GET", f"http://127.0.0.1:{port}/api/v2/alerts/groups")
            groups = json.loads(body) if status == 200 else []
            time.sleep(0.2)
    assert [g["receiver"]["name"] for g in groups] == ["null"]
    assert groups[0]["alerts"][0]["labels"]["alertname"] == "GatewayHighErrorRate"
