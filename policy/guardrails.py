"""The coderz guardrails: what the platform promises, checked by the Pulumi engine itself.

Every policy reads the resource inputs as the engine hands them over (camelCase names, the
Docker provider's own input names). The stack-specific facts a policy needs (which host ports
the stack declares, whether it keeps its data) come from the pack config
`policy/config/<stack>.json`, generated from the stack file by `python -m infra.policy_config`.

Self-contained on purpose: the pack runs in its own virtualenv with only pulumi-policy.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from typing import Any, Iterator

from pulumi_policy import (
    PolicyConfigSchema,
    ReportViolation,
    ResourceValidationArgs,
    ResourceValidationPolicy,
    Secret,
)
from pulumi_policy import deserialize as _sdk_deserialize
from pulumi_policy import policy as _sdk_policy

PACK_NAME = "coderz-guardrails"
CONTAINER = "docker:index/container:Container"
REMOTE_IMAGE = "docker:index/remoteImage:RemoteImage"
VOLUME = "docker:index/volume:Volume"
DOCKER_PROVIDER = "pulumi:providers:docker"
COMMANDS = ("command:local:Command", "command:remote:Command")


# --- secrets as the engine marks them -----------------------------------------------------------

_original_deserialize = _sdk_policy.deserialize_properties


def _keep_markers(prop: Any) -> Any:
    if isinstance(prop, list):
        return [_keep_markers(item) for item in prop]
    if isinstance(prop, dict):
        sig = prop.get(_sdk_deserialize.SPECIAL_SIG_KEY)
        if sig == _sdk_deserialize.SPECIAL_SECRET_SIG:
            return Secret(_keep_markers(prop["value"]))
        if sig is not None:  # assets and archives: the SDK's own reading
            return _sdk_deserialize._deserialize_property(prop)
        return {key: _keep_markers(value) for key, value in prop.items()}
    return prop


def _deserialize_keeping_secrets(props: dict[str, Any], proxy_secrets: bool = False) -> Any:
    if proxy_secrets:  # remediation: the SDK's behaviour, unchanged
        return _original_deserialize(props, proxy_secrets)
    return {key: _keep_markers(value) for key, value in props.items()}


def keep_secret_markers() -> None:
    """The engine sends secrets marked (KeepSecrets), but pulumi-policy 1.21's Analyze unwraps
    them before a policy runs, so a secret and plain text look alike. This keeps each secret as
    a `Secret` object in `args.props`. Should the SDK change, the no-plain-text-secrets policy
    flags every secret (loud), never passes a plain one (silent)."""
    _sdk_policy.deserialize_properties = _deserialize_keeping_secrets


def reveal(value: Any) -> Any:
    """The plain value behind `Secret` markers, at any depth (for checks that are not about
    secrecy: a memory limit is a number whether or not it is marked)."""
    if isinstance(value, Secret):
        return reveal(value.value)
    if isinstance(value, Mapping):
        return {key: reveal(value[key]) for key in value}
    if isinstance(value, Sequence) and not isinstance(value, str):
        return [reveal(item) for item in value]
    return value


def prop(args: ResourceValidationArgs, key: str, default: Any = None) -> Any:
    """One input, revealed. Read field by field: during a preview an unrelated unknown input
    must not stop a check (the SDK raises on reading an unknown)."""
    value = reveal(args.props.get(key))
    return default if value is None else value


def label(args: ResourceValidationArgs) -> str:
    return prop(args, "name") or args.name


def stack_of(urn: str) -> str:
    """`urn:pulumi:prod::coderz::...` -> `prod`."""
    parts = urn.split(":")
    return parts[2] if len(parts) > 2 and urn.startswith("urn:pulumi:") else ""


# --- published ports ----------------------------------------------------------------------------

LOOPBACK = ("127.0.0.1", "::1")
PUBLIC_ADDRESSES = ("", "0.0.0.0", "::")


def _service_of(container: str, prefix: str) -> str:
    """`coderz-prod-dotnet-api-2` -> `dotnet-api` (replicas carry a -N suffix)."""
    rest = container[len(prefix) + 1:] if container.startswith(prefix + "-") else container
    return re.sub(r"-\d+$", "", rest)


def check_published_ports(args: ResourceValidationArgs, report: ReportViolation) -> None:
    name = label(args)
    if prop(args, "networkMode") == "host":
        report(f"container {name} uses the host network: every port it opens is published")
    ports = prop(args, "ports", [])
    if not ports:
        return
    plan = args.get_config()
    if not plan or "prefix" not in plan:
        report(f"container {name} publishes ports but the pack has no port plan for stack "
               f"{stack_of(args.urn)!r}: run with --policy-pack-config policy/config/{stack_of(args.urn)}.json")
        return
    service = _service_of(name, plan["prefix"])
    public, loopback = plan.get("public") or {}, plan.get("loopback") or {}
    for port in ports:
        ip, external = port.get("ip") or "", port.get("external")
        if external is None:
            report(f"container {name} publishes port {int(port.get('internal', 0))} on a random host port")
            continue
        external = int(external)
        if ip in LOOPBACK:
            if loopback.get(str(external)) != service:
                report(f"container {name} binds {ip}:{external}, a loopback port the stack does not declare for {service}")
        elif ip in PUBLIC_ADDRESSES and public.get(str(external)) == service:
            continue
        else:
            allowed = ", ".join(f"{p} ({s})" for p, s in sorted(public.items())) or "none"
            report(f"container {name} publishes {ip or '0.0.0.0'}:{external} beyond loopback; "
                   f"public ports are the gateway's alone: {allowed}")


# --- hardening: health check, restart policy, memory limit ---------------------------------------

RESTART_POLICIES = ("unless-stopped", "always", "on-failure")


def check_health_check(args: ResourceValidationArgs, report: ReportViolation) -> None:
    tests = list(prop(args, "healthcheck", {}).get("tests") or [])
    # an empty command always succeeds: that is no check either
    if not tests or tests[0] not in ("CMD", "CMD-SHELL") or not "".join(map(str, tests[1:])).strip():
        report(f"container {label(args)} has no health check (healthcheck.tests {tests or 'unset'})")


def check_restart_policy(args: ResourceValidationArgs, report: ReportViolation) -> None:
    restart = prop(args, "restart", "no")
    if restart not in RESTART_POLICIES:
        report(f"container {label(args)} has restart policy {restart!r}; "
               f"use one of {', '.join(RESTART_POLICIES)}")


def check_memory_limit(args: ResourceValidationArgs, report: ReportViolation) -> None:
    memory = prop(args, "memory", 0)
    if memory <= 0:
        report(f"container {label(args)} has no memory limit (memory in MB must be > 0)")


# --- pinned images ------------------------------------------------------------------------------

IMAGE_ID = re.compile(r"^sha256:[0-9a-f]{64}$")
DIGEST = re.compile(r"@sha256:[0-9a-f]{64}$")
TAG = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
CONTENT_HASH = re.compile(r"^[0-9a-f]{12,64}$")


def pinned_problem(reference: str) -> str | None:
    """Why an image reference is not pinned, or None. Pinned means a digest (`@sha256:` and 64
    hex digits), or a tag that names one version: not `latest`, and carrying a digit (`16.4-alpine`,
    `aspnetapp-9.0`) or a content hash of 12+ hex characters (`coderz/pyapi:<hash>`), so floating
    tags such as `alpine`, `stable` or `lts` are refused."""
    if DIGEST.search(reference):
        return None
    last = reference.rsplit("/", 1)[-1]
    if ":" not in last:
        return "has no tag (that means latest)"
    tag = last.rsplit(":", 1)[1]
    if not TAG.match(tag):
        return f"has a malformed tag {tag!r}"
    if tag == "latest":
        return "is tagged latest"
    if not re.search(r"\d", tag) and not CONTENT_HASH.match(tag):
        return f"has the floating tag {tag!r} (a pinned tag carries a version or a content hash)"
    return None


def check_pinned_image(args: ResourceValidationArgs, report: ReportViolation) -> None:
    if args.resource_type == REMOTE_IMAGE:
        reference = prop(args, "name", "")
        problem = pinned_problem(reference)
        if problem:
            report(f"image {reference!r} {problem}")
        return
    image = prop(args, "image", "")
    # Containers take RemoteImage.image_id (an immutable ID); a name is held to the tag rules.
    if IMAGE_ID.match(image):
        return
    problem = pinned_problem(image)
    if problem:
        report(f"container {label(args)} runs image {image!r}, which {problem}")


# --- no secret in plain text --------------------------------------------------------------------

SECRET_KEY = re.compile(r"(?i)(pass(word|wd|phrase)?|secret|token|api[_-]?key|private[_-]?key|credentials?)$")
# A secret word anywhere in a name, as one of its parts (AWS_SECRET_ACCESS_KEY, DB_PASSWORD_PLAIN),
# unless the name ends in a part that only points at the secret (GITHUB_TOKEN_FILE,
# smtp_sasl_password_maps).
SECRET_PARTS = {"PASSWORD", "PASSWD", "PASSPHRASE", "SECRET", "TOKEN", "CREDENTIAL", "CREDENTIALS"}
REFERENCE_PARTS = {"FILE", "PATH", "MAP", "MAPS", "DIR", "URL"}
ENV_ENTRY = re.compile(r"^([A-Za-z_][A-Za-z0-9_.]*)=(.*)$", re.S)
SECRET_PATTERNS = (
    ("a PEM private key", re.compile(r"-----BEGIN ([A-Z0-9]+ )*PRIVATE KEY-----")),
    ("an AWS access key", re.compile(r"\bAKIA[0-9A-Z]{16}\b")),
    ("a GitHub token", re.compile(r"\bgh[pousr]_[A-Za-z0-9]{36,}")),
    ("a GitLab token", re.compile(r"\bglpat-[A-Za-z0-9_-]{20,}")),
    ("a Slack token", re.compile(r"\bxox[abprs]-[A-Za-z0-9-]{10,}")),
    ("a JSON web token", re.compile(r"\beyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}")),
    ("a password in a URL", re.compile(r"\b[a-z][a-z0-9+.-]*://[^/\s:@$]+:[^/\s@$]+@")),
)
ASSIGNMENT = re.compile(
    r"(?i)\b[A-Za-z0-9_.-]*(password|passwd|secret|token|api[_-]?key)[\"']?\s*[=:]\s*(\"[^\"]*\"|'[^']*'|[^\s,;]+)")
NOT_A_VALUE = re.compile(r"(?i)^(nil|null|none|true|false|\$.*|\{.*|<.*|%.*|.*\(.*)$")


def _assigns_secret(text: str) -> bool:
    """`password: hunter2` or `token = "abc"`, but not code or templates that only name one
    (`password = os.getenv("X")`, `password = nil`, `${SMTP_PASSWORD}`)."""
    for match in ASSIGNMENT.finditer(text):
        value = match.group(2).strip("\"'")
        if len(value) >= 3 and not NOT_A_VALUE.match(value):
            return True
    return False


def secret_name(name: str) -> bool:
    parts = re.split(r"[_.-]", name.upper())
    if parts[-1] in REFERENCE_PARTS:
        return False
    return bool(SECRET_KEY.search(name)) or any(part in SECRET_PARTS for part in parts)


def secret_problem(text: str) -> str | None:
    """What secret-looking content `text` carries, or None (never the value itself)."""
    entry = ENV_ENTRY.match(text)
    if entry and entry.group(2) and secret_name(entry.group(1)):
        return f"{entry.group(1)}=... (a secret-named variable)"
    for what, pattern in SECRET_PATTERNS:
        if pattern.search(text):
            return what
    return "a password assignment" if _assigns_secret(text) else None


def _plain_strings(value: Any, where: str) -> Iterator[tuple[str, str]]:
    """(path, text) of every string under `value` that is not inside a `Secret`."""
    if isinstance(value, Secret):
        return
    if isinstance(value, str):
        yield where, value
    elif isinstance(value, Mapping):
        for key in value:
            yield from _plain_strings(value[key], f"{where}.{key}")
    elif isinstance(value, Sequence):
        for index, item in enumerate(value):
            yield from _plain_strings(item, f"{where}[{index}]")


SECRET_FIELDS = {
    CONTAINER: ("envs", "command", "entrypoints", "uploads"),
    **{command: ("create", "update", "delete", "environment", "stdin") for command in COMMANDS},
}


def check_plaintext_secrets(args: ResourceValidationArgs, report: ReportViolation) -> None:
    for field in SECRET_FIELDS.get(args.resource_type, ()):
        if field not in args.props:
            continue
        value = args.props[field]
        if field == "environment" and isinstance(value, Mapping):
            # a command's environment is a map: its names count as a container's `NAME=value`
            value = {key: item if isinstance(item, Secret) else f"{key}={item}" for key, item in value.items()}
        for where, text in _plain_strings(value, field):
            problem = secret_problem(text)
            if problem:
                report(f"{args.name}: {where} carries {problem} in plain text; pass it as a secret Output")


# --- data volumes -------------------------------------------------------------------------------


def check_data_volume_protected(args: ResourceValidationArgs, report: ReportViolation) -> None:
    name = label(args)
    # Without the stack's pack config nothing says it may lose its data: protect every one
    # (a forgotten --policy-pack-config makes the pack stricter, never weaker).
    config = args.get_config() or {}
    keep = config.get("keepData", True)
    if keep and name.endswith("-data") and not args.opts.protect:
        report(f"data volume {name} is not protected (protect=True, with retain_on_delete, keeps it through destroy)")


# --- SSH key authentication ---------------------------------------------------------------------

# Keyboard-interactive is how most servers ask for a password, so it counts as one.
PASSWORD_SSH_OPTIONS = re.compile(r"(?i)((Password|KbdInteractive|ChallengeResponse)Authentication\s*[= ]\s*yes"
                                  r"|PreferredAuthentications\s*[= ]\s*\S*(password|keyboard))")


def _ssh_opts(value: Any) -> list[str]:
    # A provider's inputs reach the engine as strings: a list arrives as JSON text.
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            return value.split()
    return [str(item) for item in (value or [])]


def check_ssh_key_auth(args: ResourceValidationArgs, report: ReportViolation) -> None:
    if args.resource_type == DOCKER_PROVIDER:
        host = prop(args, "host", "")
        if not host.startswith("ssh://"):
            return
        if re.match(r"^ssh://[^@/]*:[^@/]*@", host):
            report(f"{args.name}: the ssh host URL carries a password")
        opts = _ssh_opts(prop(args, "sshOpts"))
        keyed = any(opt == "-i" and index + 1 < len(opts) and opts[index + 1] for index, opt in enumerate(opts))
        if not keyed:
            report(f"{args.name}: ssh target {host} has no key (-i <file>) in ssh_opts")
        joined = " ".join(opts)
        if PASSWORD_SSH_OPTIONS.search(joined) or "sshpass" in joined:
            report(f"{args.name}: ssh_opts allow password authentication")
        return
    connection = prop(args, "connection")
    if args.resource_type == "command:remote:Command" and connection is not None:
        if connection.get("password"):
            report(f"{args.name}: remote command connects with a password")
        if not connection.get("privateKey") and not connection.get("agentSocketPath"):
            report(f"{args.name}: remote command connection has no private key")


# --- the pack -----------------------------------------------------------------------------------


def _policy(name: str, description: str, validate, types, schema: dict | None = None) -> ResourceValidationPolicy:
    def only(args: ResourceValidationArgs, report: ReportViolation) -> None:
        if args.resource_type in types:
            validate(args, report)

    return ResourceValidationPolicy(
        name=name, description=description, validate=only,
        config_schema=PolicyConfigSchema(properties=schema) if schema else None,
    )


PORT_PLAN_SCHEMA = {
    "prefix": {"type": "string"},
    "public": {"type": "object", "additionalProperties": {"type": "string"}},
    "loopback": {"type": "object", "additionalProperties": {"type": "string"}},
}

POLICIES = [
    _policy("coderz-published-ports",
            "Only the gateway's public ports and the loopback ports the stack declares are published.",
            check_published_ports, (CONTAINER,), PORT_PLAN_SCHEMA),
    _policy("coderz-health-check", "Every container has a health check.", check_health_check, (CONTAINER,)),
    _policy("coderz-restart-policy", "Every container restarts by itself.", check_restart_policy, (CONTAINER,)),
    _policy("coderz-memory-limit", "Every container has a memory limit.", check_memory_limit, (CONTAINER,)),
    _policy("coderz-pinned-images", "Images are pinned: a digest or a version tag, never latest or a floating tag.",
            check_pinned_image, (CONTAINER, REMOTE_IMAGE)),
    _policy("coderz-no-plaintext-secrets",
            "No secret-looking value in plain text in a container's env, command or uploads, or in a command.",
            check_plaintext_secrets, tuple(SECRET_FIELDS)),
    _policy("coderz-data-volumes-protected", "Data volumes of a stack that keeps its data are protected.",
            check_data_volume_protected, (VOLUME,), {"keepData": {"type": "boolean"}}),
    _policy("coderz-ssh-key-auth", "SSH targets authenticate with a key, never a password.",
            check_ssh_key_auth, (DOCKER_PROVIDER, "command:remote:Command")),
]
