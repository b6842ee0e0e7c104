"""Real mail servers on 127.0.0.1 for the tests: Debian's Postfix in a throwaway config and
queue directory, and an aiosmtpd sink that wants STARTTLS and a login before it takes mail."""

from __future__ import annotations

import contextlib
import datetime
import ssl
import subprocess
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Mapping

from tests.servers import free_port, require_module, require_tool, scratch_dir, wait_for_port


@dataclass
class Postfix:
    """A running Postfix: its smtpd port, config directory and mail log."""

    port: int
    config_dir: Path
    log: Path

    def postconf(self, *args: str) -> str:
        return subprocess.run([require_tool("postconf"), "-c", str(self.config_dir), *args],
                              check=True, capture_output=True, text=True).stdout

    def queue(self) -> str:
        """The queue listing (`postqueue -p`): empty when every mail left."""
        return subprocess.run([require_tool("postqueue"), "-c", str(self.config_dir), "-p"],
                              capture_output=True, text=True).stdout

    def flush(self) -> None:
        subprocess.run([require_tool("postqueue"), "-c", str(self.config_dir), "-f"], capture_output=True)


@contextlib.contextmanager
def postfix(settings: Callable[[Path], Mapping[str, str]], files: Mapping[str, str] = {}) -> Iterator[Postfix]:
    """Debian's Postfix with `settings(config_dir)` in main.cf, smtpd on a free loopback port, no chroot,
    its own queue and data directories, logging to a file; `files` are written (mode 0600)
    into the config directory first, by name. Stopped and removed afterwards."""
    postfix_bin = require_tool("postfix")
    postconf = require_tool("postconf")
    folder = scratch_dir("postfix-")
    config, queue, data = folder / "etc", folder / "queue", folder / "data"
    for path in (config, queue, data):
        path.mkdir()
    shutil.chown(data, "postfix")
    (config / "main.cf").write_text("")  # every key below, the rest Postfix's built-in defaults
    shutil.copy("/etc/postfix/master.cf", config / "master.cf")
    for name, text in files.items():
        (config / name).write_text(text)
        (config / name).chmod(0o600)
    port = free_port()

    def conf(*args: str) -> None:
        subprocess.run([postconf, "-c", str(config), *args], check=True, capture_output=True, text=True)

    log = folder / "maillog"
    conf("-e", f"queue_directory={queue}", f"data_directory={data}", "inet_interfaces=127.0.0.1",
         "inet_protocols=ipv4", f"maillog_file={log}", f"maillog_file_prefixes={folder}", "compatibility_level=3.6",
         "mail_owner=postfix", "setgid_group=postdrop", "alias_maps=", "alias_database=",
         # retry a deferred mail soon, so a test can see it leave once the cause is gone
         "queue_run_delay=2s", "minimal_backoff_time=2s", "maximal_backoff_time=4s")
    extra = [f"{key}={value}" for key, value in settings(config).items()]
    if extra:
        conf("-e", *extra)
    conf("-F", "*/*/chroot=n")
    conf("-M#", "smtp/inet")
    conf("-M", f"127.0.0.1:{port}/inet=127.0.0.1:{port} inet n - n - - smtpd")
    if "postlog/unix-dgram" not in subprocess.run([postconf, "-c", str(config), "-M"],
                                                 capture_output=True, text=True).stdout:
        conf("-M", "postlog/unix-dgram=postlog unix-dgram n - n - 1 postlogd")
    started = subprocess.run([postfix_bin, "-c", str(config), "start"], capture_output=True, text=True)
    assert started.returncode == 0, (started.stderr + started.stdout + (log.read_text() if log.exists() else ""))
    try:
        wait_for_port(port, timeout=20)
        yield Postfix(port=port, config_dir=config, log=log)
    finally:
        subprocess.run([postfix_bin, "-c", str(config), "stop"], capture_output=True)
        shutil.rmtree(folder, ignore_errors=True)


def self_signed(folder: Path, name: str = "127.0.0.1") -> ssl.SSLContext:
    """A server TLS context with a fresh self-signed certificate for `name`."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1)).sign(key, hashes.SHA256()))
    (folder / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (folder / "key.pem").write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                       serialization.NoEncryption()))
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(folder / "cert.pem", folder / "key.pem")
    return context


@dataclass
class Sink:
    """What the authenticated sink saw: messages with the login that sent them, logins tried."""

    port: int
    messages: list = field(default_factory=list)
    logins: list = field(default_factory=list)


@contextlib.contextmanager
def tls_auth_sink(user: str, password: str) -> Iterator[Sink]:
    """An SMTP server on a free loopback port that offers AUTH only after STARTTLS (self-signed
    certificate) and takes mail only from a logged-in client."""
    require_module("aiosmtpd")
    from aiosmtpd.controller import Controller
    from aiosmtpd.smtp import SMTP, AuthResult

    class RealPrompts(SMTP):
        # AUTH LOGIN as real servers prompt it (base64 of "Username:"/"Password:"); aiosmtpd's
        # own "User Name\0" stalls Cyrus SASL's LOGIN client.
        AuthLoginUsernameChallenge = "Username:"
        AuthLoginPasswordChallenge = "Password:"

    class SinkController(Controller):
        def factory(self):
            return RealPrompts(self.handler, **self.SMTP_kwargs)

    folder = scratch_dir("sink-")
    sink = Sink(port=free_port())

    class Handler:
        async def handle_DATA(self, server, session, envelope):
            sink.messages.append((session.authenticated, session.auth_data, envelope))
            return "250 OK"

    def authenticator(server, session, envelope, mechanism, auth_data):
        login = (auth_data.login.decode(), auth_data.password.decode())
        sink.logins.append((mechanism, login[0], session.ssl is not None))
        return AuthResult(success=login == (user, password), auth_data=login[0], handled=False)

    controller = SinkController(Handler(), hostname="127.0.0.1", port=sink.port, authenticator=authenticator,
                            tls_context=self_signed(folder), require_starttls=True, auth_require_tls=True,
                            auth_required=True)
    controller.start()
    try:
        yield sink
    finally:
        controller.stop()
        shutil.rmtree(folder, ignore_errors=True)
