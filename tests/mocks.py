"""Pulumi mocks that record every registered resource with its inputs and options.

`Registration.inputs` keeps secret inputs wrapped as the engine sees them, so a test can tell
a secret from plain text: `is_secret(value)`.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import io
import tarfile
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import pulumi
import yaml
from pulumi.runtime import rpc

from components.gateway.reload import ROOT as GATEWAY_ROOT
from pulumi.runtime.mocks import MockMonitor

REPO_ROOT = Path(__file__).resolve().parent.parent
SECRET_SIG = rpc._special_sig_key
SECRET_VALUE = rpc._special_secret_sig
def openssh_key_text(cipher: bytes = b"none") -> str:
    """An OpenSSH private-key file in form (magic, cipher, kdf, one key) with a dummy key: the
    config check reads the format and cipher, nothing here could log in anywhere."""
    def string(data: bytes) -> bytes:
        return len(data).to_bytes(4, "big") + data

    blob = b"openssh-key-v1\x00" + string(cipher) + string(b"none" if cipher == b"none" else b"bcrypt") + string(b"")
    blob += (1).to_bytes(4, "big") + string(b"test-only-ssh-key")
    return f"-----BEGIN OPENSSH PRIVATE KEY-----\n{base64.b64encode(blob).decode()}\n-----END OPENSSH PRIVATE KEY-----"


# What an operator would have set with `pulumi config set --secret`, per stack.
TEST_SECRETS = {
    "sshPrivateKey": openssh_key_text(),
    "tlsPrivateKey": "-----BEGIN PRIVATE KEY-----\ntest-only-tls-key\n-----END PRIVATE KEY-----",
    "smtpPassword": "test-only-smtp-password",
}


def is_secret(value: Any) -> bool:
    return isinstance(value, dict) and value.get(SECRET_SIG) == SECRET_VALUE


def unwrap(value: Any) -> Any:
    """The plain value behind secret markers, at any depth."""
    if is_secret(value):
        return unwrap(value["value"])
    if isinstance(value, dict):
        return {k: unwrap(v) for k, v in value.items()}
    if isinstance(value, list):
        return [unwrap(v) for v in value]
    return value


@dataclass
class Registration:
    type: str
    name: str
    urn: str
    parent: str
    provider: str
    protect: bool
    retain_on_delete: bool
    inputs: dict[str, Any]
    ignore_changes: list[str] = field(default_factory=list)
    dependencies: list[str] = field(default_factory=list)
    # The inputs exactly as sent to the engine (a protobuf Struct, secret markers kept), for
    # feeding the policy pack what the engine would feed it.
    struct: Any = None

    @property
    def plain(self) -> dict[str, Any]:
        return unwrap(self.inputs)


# Computed PEM outputs of pulumi-tls resources: type -> (output field, PEM label).
MOCK_PEM_OUTPUTS = {
    "tls:index/privateKey:PrivateKey": ("privateKeyPem", "PRIVATE KEY"),
    "tls:index/selfSignedCert:SelfSignedCert": ("certPem", "CERTIFICATE"),
    "tls:index/certRequest:CertRequest": ("certRequestPem", "CERTIFICATE REQUEST"),
    "tls:index/locallySignedCert:LocallySignedCert": ("certPem", "CERTIFICATE"),
}


class PlatformMocks(pulumi.runtime.Mocks):
    """Echo inputs back as outputs, plus the computed fields our code reads."""

    def new_resource(self, args: pulumi.runtime.MockResourceArgs):
        outputs = dict(args.inputs)
        if args.typ == "random:index/randomPassword:RandomPassword":
            outputs["result"] = f"generated-{args.name}"
        elif args.typ in MOCK_PEM_OUTPUTS:
            field_name, label = MOCK_PEM_OUTPUTS[args.typ]
            outputs[field_name] = f"-----BEGIN {label}-----\nmock-{args.name}\n-----END {label}-----\n"
        elif args.typ == "kubernetes:core/v1:Secret" and args.resource_id:
            # a read of a service-account-token Secret: the control plane has filled the token in
            outputs["data"] = {"token": base64.b64encode(f"mock-token-{args.name}".encode()).decode()}
        elif args.typ == "docker:index/remoteImage:RemoteImage":
            outputs["imageId"] = "sha256:" + hashlib.sha256(str(args.inputs.get("name")).encode()).hexdigest()
        return [f"{args.name}-id", outputs]

    def call(self, args: pulumi.runtime.MockCallArgs):
        return {}


class RecordingMonitor(MockMonitor):
    def __init__(self, mocks: pulumi.runtime.Mocks):
        super().__init__(mocks)
        self.registrations: list[Registration] = []

    def RegisterResource(self, request):
        response = super().RegisterResource(request)
        if request.type != "pulumi:pulumi:Stack":
            self.registrations.append(
                Registration(
                    type=request.type,
                    name=request.name,
                    urn=response.urn,
                    parent=request.parent,
                    provider=request.provider,
                    protect=request.protect,
                    retain_on_delete=request.retainOnDelete,
                    inputs=rpc.deserialize_properties(request.object, keep_unknowns=True),
                    ignore_changes=list(request.ignoreChanges),
                    dependencies=list(request.dependencies),
                    struct=request.object,
                )
            )
        return response

    def of_type(self, suffix: str) -> list[Registration]:
        return [r for r in self.registrations if r.type.endswith(suffix)]

    def named(self, name: str) -> Registration:
        (match,) = [r for r in self.registrations if r.name == name]
        return match


def install_mocks(stack: str = "test", config: Mapping[str, Any] | None = None,
                  secret_keys: list[str] | None = None) -> RecordingMonitor:
    pulumi.runtime.set_all_config(dict(config or {}), secret_keys or [])
    mocks = PlatformMocks()
    monitor = RecordingMonitor(mocks)
    pulumi.runtime.set_mocks(mocks, project="coderz", stack=stack, preview=False, monitor=monitor)
    return monitor


def engine_config(stack: str, *, secrets: Mapping[str, str] | None = None,
                      overrides: Mapping[str, Any] | None = None) -> tuple[dict[str, Any], list[str]]:
    """The raw config the engine would hand the program for `Pulumi.<stack>.yaml`: structured
    values JSON-encoded, the operator's secrets added. Returns (config, secret keys)."""
    from infra.config import stack_file_values

    raw = stack_file_values(stack)
    for key, value in (overrides or {}).items():
        raw[key] = value if isinstance(value, str) else json.dumps(value)
    for key, value in (secrets or {}).items():
        raw[f"coderz:{key}"] = value
    return raw, [f"coderz:{key}" for key in (secrets or {})]


def secrets_for(stack: str) -> dict[str, str]:
    """The secrets an operator sets for a stack, judged from its file."""
    document = yaml.safe_load((REPO_ROOT / f"Pulumi.{stack}.yaml").read_text())["config"]
    wanted = {}
    if document.get("coderz:target", {}).get("kind") == "ssh":
        wanted["sshPrivateKey"] = TEST_SECRETS["sshPrivateKey"]
    if document.get("coderz:gateway", {}).get("tls"):
        wanted["tlsPrivateKey"] = TEST_SECRETS["tlsPrivateKey"]
    if document.get("coderz:smtp", {}).get("user"):
        wanted["smtpPassword"] = TEST_SECRETS["smtpPassword"]
    return wanted


def deploy_stack(stack: str, **overrides: Any) -> tuple[RecordingMonitor, dict[str, Any]]:
    """Run the whole program for a stack file under mocks; returns the monitor and the outputs."""
    from infra.config import load_current
    from infra.platform import build

    raw, secret_keys = engine_config(stack, secrets=secrets_for(stack), overrides=overrides)
    monitor = install_mocks(stack, raw, secret_keys)
    resolved: dict[str, Any] = {}

    @pulumi.runtime.test
    def program():
        outputs = build(load_current())
        return pulumi.Output.from_input(outputs).apply(resolved.update)

    program()
    return monitor, resolved


def plaintext_leaks(registrations: list[Registration], secret_values: set[str]) -> list[str]:
    """Every input, anywhere, that carries one of `secret_values` outside a secret marker."""
    leaks: list[str] = []

    def walk(value: Any, where: str) -> None:
        if is_secret(value):
            return
        if isinstance(value, dict):
            for key, item in value.items():
                walk(item, f"{where}.{key}")
        elif isinstance(value, list):
            for index, item in enumerate(value):
                walk(item, f"{where}[{index}]")
        elif isinstance(value, str) and any(secret in value for secret in secret_values):
            leaks.append(where)

    for registration in registrations:
        walk(registration.inputs, f"{registration.type}::{registration.name}")
    return leaks


def generated_secrets(monitor: RecordingMonitor) -> set[str]:
    """The values the mocks handed out for generated passwords, plus the operator's secrets."""
    values = {f"generated-{r.name}" for r in monitor.of_type("RandomPassword")}
    # private keys made by pulumi-tls, and tokens the cluster hands out
    values |= {f"mock-{r.name}" + "\n" for r in monitor.of_type("tls:index/privateKey:PrivateKey")}
    values |= {f"mock-token-{r.name}" for r in monitor.of_type("kubernetes:core/v1:Secret")}
    return values | set(TEST_SECRETS.values())


def service_of(container: Registration) -> str:
    """The catalog service a container runs (its `coderz.service` label): a rolling replica's
    name carries an index and a digest, so tests find containers by service, not by name."""
    labels = {label["label"]: label["value"] for label in container.plain["labels"]}
    return labels["coderz.service"]


def gateway_installed_files(command: Registration) -> dict[str, tuple[str, int]]:
    """The files the config command installs: absolute path -> (text, mode), from its stdin."""
    archive = gzip.decompress(base64.b64decode(command.plain["stdin"]))
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        return {f"{GATEWAY_ROOT}/{m.name}": (tar.extractfile(m).read().decode(), m.mode) for m in tar.getmembers()}
