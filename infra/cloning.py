"""Plan a clone: the stack file `Pulumi.NEW.yaml` that `coderz clone SOURCE NEW` writes.

The new file is SOURCE's config with the same environment kind, a new host, domain and port
block. Public ports: on a host where SOURCE's public ports are free (another host), the clone
keeps them; where they are taken (the same host, or another stack there), the clone takes them
from its own block: http = base + 98, https = base + 99. Secrets are never copied as text: a
stack file's `secure:` values are encrypted for that stack alone (pulumi/pulumi#1583), so they
are left out and re-encrypted by Pulumi's own `config copy`, or set again by the operator.

Everything here is checked before anything is written; a refusal raises `CloneRefused` with
the reason.
"""

from __future__ import annotations

import copy
import json
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from infra.catalog import LOOPBACK_OFFSETS
from infra.config import PLACEHOLDER_SECRETS, PROJECT, STACK_NAME, ConfigError, StackConfig, load, required_secrets
from infra.stackset import BLOCK_SIZE, LAST_BASE, StackFile, first_clash, host_of, next_free_block, read_stacks
from components.yamltext import dump_yaml, load_yaml

# Where a clone's public ports go in its block when SOURCE's are taken on the host.
PUBLIC_OFFSETS = {"http": 98, "https": 99}
assert not set(PUBLIC_OFFSETS.values()) & set(LOOPBACK_OFFSETS.values())
# RFC 1123 host names (IPv4 literals match too); also what `--domain` accepts.
HOST_NAME = re.compile(r"(?=.{1,253}$)[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*")
# Keys Pulumi writes per stack (its secrets provider's salt and key): never copied.
PER_STACK_KEYS = ("encryptionsalt", "encryptedkey", "secretsprovider")


class CloneRefused(Exception):
    """A clone that must not be made; nothing has been written."""


@dataclass(frozen=True)
class ClonePlan:
    source: str
    new: str
    path: Path
    text: str
    config: StackConfig
    # secret keys SOURCE's file holds (to re-encrypt with `pulumi config copy`)
    copied_secrets: tuple[str, ...]
    # secrets the new stack needs that SOURCE's file does not hold (the operator sets them)
    missing_secrets: tuple[str, ...]

    def set_secret_lines(self, keys: tuple[str, ...]) -> list[str]:
        return [f"pulumi config set --secret {key} --stack {self.new}" for key in keys]


def needed_secrets(config: StackConfig) -> tuple[str, ...]:
    """The secret keys the loader requires of a stack with this config (`required_secrets`)."""
    return tuple(f"{PROJECT}:{key}" for key in required_secrets(config))


def _is_secure(value: Any) -> bool:
    return isinstance(value, dict) and set(value) == {"secure"}


def _validate(new: str, values: dict[str, Any]) -> StackConfig:
    """The new file through the full loader (config, catalog, ports), secrets as placeholders."""
    raw = {key: value if isinstance(value, str) else json.dumps(value) for key, value in values.items()}
    raw.update(PLACEHOLDER_SECRETS)
    try:
        return load(raw, new, check_secrets=False).config
    except ConfigError as error:
        raise CloneRefused(f"the clone would not validate: {error}") from None


def plan_clone(root: Path, source: str, new: str, *, host: str | None = None, port_base: int | None = None,
               domain: str | None = None) -> ClonePlan:
    for role, name in (("SOURCE", source), ("NEW", new)):
        if not STACK_NAME.fullmatch(name):
            raise CloneRefused(f"{role} {name!r} is not a valid stack name (1-100 letters, digits, '-', '_' or '.')")
    path = root / f"Pulumi.{new}.yaml"
    if path.exists():
        raise CloneRefused(f"stack {new!r} exists already ({path.name})")
    if not (root / f"Pulumi.{source}.yaml").is_file():
        raise CloneRefused(f"no stack {source!r}: there is no Pulumi.{source}.yaml in {root}")
    try:
        stacks = read_stacks(root)
    except ConfigError as error:
        raise CloneRefused(f"a stack file does not validate: {error}") from None
    origin = stacks[source].config
    for flag, value in (("--host", host), ("--domain", domain)):
        if value is not None and not HOST_NAME.fullmatch(value):
            raise CloneRefused(f"{flag} {value!r} is not a host name")
    if host is not None and origin.target.kind != "ssh":
        raise CloneRefused(f"--host needs an ssh source; {source!r} runs on the local engine {origin.target.socket}")
    if port_base is not None and not 1024 <= port_base <= LAST_BASE:
        raise CloneRefused(f"--port-base {port_base} is outside 1024-{LAST_BASE}")

    document = load_yaml((root / f"Pulumi.{source}.yaml").read_text()) or {}
    source_values: dict[str, Any] = document.get("config") or {}
    values = {key: copy.deepcopy(value) for key, value in source_values.items() if not _is_secure(value)}
    values[f"{PROJECT}:environment"] = origin.environment  # the kind, written out even where it was a default
    if host is not None:
        values[f"{PROJECT}:target"] = {**values[f"{PROJECT}:target"], "host": host}
    if domain is not None:
        values[f"{PROJECT}:gateway"] = {**values.get(f"{PROJECT}:gateway", {}), "domain": domain}
    new_host = host_of(origin.target.model_copy(update={"host": host or origin.target.host}))
    neighbours = [s for s in stacks.values() if s.host == new_host]

    ports = {"http": origin.ports.http, **({"https": origin.ports.https} if origin.ports.https else {})}
    keep_public = not any(port in s.public_ports or port in s.block for s in neighbours for port in ports.values())
    if port_base is None:
        try:
            port_base = next_free_block(new_host, neighbours, public_ports=ports.values() if keep_public else ())
        except ValueError as error:
            raise CloneRefused(str(error)) from None
    if not keep_public:
        ports = {key: port_base + PUBLIC_OFFSETS[key] for key in ports}
        if origin.gateway.tls_mode == "acme":
            # ACME's HTTP-01 check comes to port 80 of the host, which SOURCE's gateway holds:
            # a clone beside it serves plain HTTP on its own port, without the domain.
            if domain is not None:
                raise CloneRefused(f"--domain {domain} needs ACME on port 80 of the host, which {source!r} holds: "
                                   "clone to another host (--host) or give NEW a certificate by hand")
            gateway = {k: v for k, v in values.get(f"{PROJECT}:gateway", {}).items() if k not in ("domain", "acme")}
            values[f"{PROJECT}:gateway"] = gateway
            ports.pop("https", None)
    values[f"{PROJECT}:ports"] = {"base": port_base, **ports}
    backup = values.get(f"{PROJECT}:backup")
    if isinstance(backup, dict) and isinstance(backup.get("s3"), dict) and "path" in backup["s3"]:
        # SOURCE's path in the bucket holds SOURCE's repository: NEW archives and backs up under
        # its own (/coderz/<NEW>), and `coderz restore --into NEW` reads SOURCE's path.
        values[f"{PROJECT}:backup"] = {**backup, "s3": {k: v for k, v in backup["s3"].items() if k != "path"}}

    config = _validate(new, values)
    found = first_clash(StackFile(new, config), neighbours)
    if found:
        raise CloneRefused(f"the ports would clash: {found}")
    secure = tuple(key for key, value in source_values.items() if _is_secure(value))
    header = (f"# {new}: a clone of {source} made by `coderz clone` ({config.environment} environment,\n"
              f"# loopback ports {port_base}-{port_base + BLOCK_SIZE - 1}). Secrets are not in this file.\n")
    return ClonePlan(
        source=source, new=new, path=path, text=header + dump_yaml({"config": values}), config=config,
        copied_secrets=secure, missing_secrets=tuple(k for k in needed_secrets(config) if k not in secure),
    )


def write_new_file(path: Path, text: str) -> None:
    """Create `path` atomically and only if it does not exist: the text goes to a temporary file
    in the same folder, which is then hard-linked to its name (fails if the name is taken)."""
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(handle, "w") as out:
            out.write(text)
            out.flush()
            os.fsync(out.fileno())
        try:
            os.link(temporary, path)
        except FileExistsError:
            raise CloneRefused(f"stack {path.name} appeared while cloning; left as it is") from None
    finally:
        os.unlink(temporary)
