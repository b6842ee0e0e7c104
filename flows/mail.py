"""E-mail through the stack's SMTP settings; a stack without SMTP logs the message instead."""

from __future__ import annotations

import smtplib
from email.message import EmailMessage

from prefect import get_run_logger

from flows.config import FlowsConfig
from flows.report import Check


def send(config: FlowsConfig, subject: str, body: str) -> Check:
    """Mail `subject` to the stack's recipients; a failed delivery is a failed check."""
    logger = get_run_logger()
    subject = f"[{config.stack}] {subject}"
    smtp = config.smtp
    if smtp is None:
        logger.warning("no SMTP on this stack; not mailed: %s\n%s", subject, body)
        return Check("e-mail", True, "logged (the stack has no SMTP settings)")
    message = EmailMessage()
    message["Subject"], message["From"], message["To"] = subject, smtp.from_address, ", ".join(smtp.to)
    message.set_content(body)
    try:
        with smtplib.SMTP(smtp.host, smtp.port, timeout=20) as client:
            if smtp.starttls:
                client.starttls()
            if smtp.user:
                client.login(smtp.user, smtp.password or "")
            client.send_message(message)
    except (OSError, smtplib.SMTPException) as exc:
        return Check("e-mail", False, f"could not mail {subject!r} via {smtp.host}:{smtp.port}: {exc}")
    return Check("e-mail", True, f"mailed {subject!r} to {', '.join(smtp.to)}")
