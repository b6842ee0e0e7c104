"""The stack config: one frozen model tree, validated once, before any resource exists.

Lookup order, written down once: a key `coderz:<section>` of the stack file
`Pulumi.<stack>.yaml` (set with `pulumi config set --path`), else the default below. Secrets
(`sshPrivateKey`, `tlsPrivateKey`, `smtpPassword`) are read from the same namespace but never
enter the model: they leave the loader only wrapped as `pulumi.Output.secret`.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Mapping

import pulumi
from pydantic import Field, ValidationError

from components.backup.settings import BackupConfig
from components.gateway.acme import AcmeConfig
from components.host import TargetConfig
from components.k3s.settings import K3sConfig
from components.logging.settings import LoggingConfig
from components.mail.settings import SmtpRelayConfig, upstream_problem
from components.monitoring.settings import MonitoringConfig, SmtpConfig
from components.docs_site import DocsConfig
from components.k6.settings import K6Config
from components.pgadmin.settings import PgAdminConfig
from components.prefect.settings import PrefectConfig
from components.spec import Catalog, Frozen, Limits, PinnedImage
from components.validators import DomainName, FieldError, ssh_private_key_problem
from components.yamltext import load_yaml
from infra.tls import check_gateway_tls

PROJECT = "coderz"
REPO_ROOT = Path(__file__).resolve().parent.parent
SECRET_KEYS = ("sshPrivateKey", "tlsPrivateKey", "smtpPassword", "backupS3AccessKey", "backupS3SecretKey")
Environment = Literal["dev", "qa", "prod"]
# Pulumi's own rule for a stack name (pkg/workspace validateStackName). Names are free (`qa-2`,
# `pr-123`); `coderz:environment` is the KIND of environment that picks defaults and protection.
STACK_NAME = re.compile(r"[A-Za-z0-9_.-]{1,100}")


class ConfigError(Exception):
    """A stack file that cannot be deployed; the message names the file and the key."""


class PortsConfig(Frozen):
    """Host ports. `base` starts the stack's block of loopback ports (prod 5000, qa 5100, as in
    the deployment reference); http/https are the gateway's public ports."""

    base: int = Field(ge=1024, le=65_000)
    http: int = Field(default=8088, ge=1, le=65535)
    https: int | None = Field(default=None, ge=1, le=65535)


class TlsConfig(Frozen):
    """A certificate set by hand: the PEM chain (leaf first); its key is the secret
    `tlsPrivateKey`. Both are parsed before anything is deployed (infra/tls.py)."""

    certificate: str = Field(min_length=1)


class GatewayConfig(Frozen):
    """The gateway. With a `domain` it serves HTTPS, its certificate from ACME (`acme`, the
    default) or set by hand (`tls`); infra/tls.py checks the choice."""

    domain: DomainName | None = None
    # nginx refuses `burst=0`; above these bounds a per-client limit limits nothing.
    rate_limit_rps: int = Field(default=20, ge=1, le=100_000)
    rate_limit_burst: int = Field(default=40, ge=1, le=1_000_000)
    tls: TlsConfig | None = None
    acme: AcmeConfig | None = None
    # the landing page at / and its assets at /static/, from site/
    landing_page: bool = True

    @property
    def tls_mode(self) -> Literal["acme", "manual"] | None:
        """Where the certificate comes from; None for plain HTTP."""
        if self.tls is not None:
            return "manual"
        return "acme" if self.acme is not None else None


class ApiConfig(Frozen):
    image: PinnedImage | None = None
    replicas: int = Field(default=1, ge=1, le=1000)
    cache_ttl_s: int = Field(default=30, ge=0, le=86_400)


class ApisConfig(Frozen):
    dotnet: ApiConfig = ApiConfig()
    python: ApiConfig = ApiConfig()


class PostgresConfig(Frozen):
    image: PinnedImage = "postgres:16.4-alpine"
    max_connections: int = Field(default=100, ge=10, le=10_000)


class RedisConfig(Frozen):
    image: PinnedImage = "redis:7.2.5-alpine"


class StackConfig(Frozen):
    """Everything a stack file may say, under the `coderz:` namespace. The defaults are the
    `dev` stack's: the local Docker engine, loopback ports from 5200, the gateway on 8088."""

    environment: Environment = "dev"
    target: TargetConfig = TargetConfig(kind="local")
    ports: PortsConfig = PortsConfig(base=5200)
    protect_data: bool | None = None
    gateway: GatewayConfig = GatewayConfig()
    apis: ApisConfig = ApisConfig()
    postgres: PostgresConfig = PostgresConfig()
    redis: RedisConfig = RedisConfig()
    monitoring: MonitoringConfig = MonitoringConfig()
    logging: LoggingConfig = LoggingConfig()
    prefect: PrefectConfig = PrefectConfig()
    smtp: SmtpConfig | None = None
    smtp_relay: SmtpRelayConfig = SmtpRelayConfig()
    pgadmin: PgAdminConfig = PgAdminConfig()
    k6: K6Config = K6Config()
    docs: DocsConfig = DocsConfig()
    k3s: K3sConfig = K3sConfig()
    backup: BackupConfig = BackupConfig()
    # Per-service overrides of the limits declared in the catalog, by service name.
    limits: dict[str, Limits] = {}

    @property
    def keeps_data(self) -> bool:
        """Data volumes survive `pulumi destroy`: prod by default, any stack that asks."""
        return self.environment == "prod" if self.protect_data is None else self.protect_data


@dataclass(frozen=True)
class Secrets:
    """Secret config values, each only ever an `Output` marked secret."""

    ssh_private_key: pulumi.Output[str] | None
    tls_private_key: pulumi.Output[str] | None
    smtp_password: pulumi.Output[str] | None
    # (access key, secret key) of an S3 backup repository
    backup_s3_keys: tuple[pulumi.Output[str], pulumi.Output[str]] | None = None


@dataclass(frozen=True)
class Stack:
    name: str
    config: StackConfig
    secrets: Secrets

    @property
    def prefix(self) -> str:
        """What every container, network and volume name starts with."""
        return f"{PROJECT}-{self.name}"


def _decode(value: Any) -> Any:
    # The engine hands structured values over as JSON text.
    if isinstance(value, str) and value[:1] in ("{", "["):
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            return value
    return value


def _key(loc: tuple[Any, ...]) -> str:
    head, *rest = loc
    path = f"{PROJECT}:{head}"
    for part in rest:
        path += f"[{part}]" if isinstance(part, int) else f".{part}"
    return path


def _error(stack: str, key: str, message: str) -> ConfigError:
    return ConfigError(f"Pulumi.{stack}.yaml: {key}: {message}")


def required_secrets(config: StackConfig) -> dict[str, str]:
    """The secret keys a stack with this config must set, each with the message naming why: the
    one rule `parse` enforces and `coderz clone` lists for a new stack."""
    needed: dict[str, str] = {}
    if config.target.kind == "ssh":
        needed["sshPrivateKey"] = "an ssh target needs a key (pulumi config set --secret sshPrivateKey)"
    if config.gateway.tls:
        needed["tlsPrivateKey"] = "gateway.tls needs its key (pulumi config set --secret tlsPrivateKey)"
    if config.smtp and config.smtp.user:
        needed["smtpPassword"] = "smtp.user needs a password (pulumi config set --secret smtpPassword)"
    if config.backup.enabled and config.backup.s3:
        for key in ("backupS3AccessKey", "backupS3SecretKey"):
            needed[key] = f"backup.s3 needs its keys (pulumi config set --secret {key})"
    return needed


def parse(raw: Mapping[str, Any], stack: str, *, check_secrets: bool = True) -> tuple[StackConfig, dict[str, str]]:
    """Validate the raw `project:key` map; return the model and the secret values by key.
    `check_secrets=False` where the secrets are placeholders (readers that need none)."""
    if not STACK_NAME.fullmatch(stack):
        raise ConfigError(f"stack name {stack!r}: a stack name is 1-100 letters, digits, '-', '_' or '.'")
    sections: dict[str, Any] = {}
    secrets: dict[str, str] = {}
    for full_key, value in raw.items():
        namespace, _, key = full_key.partition(":")
        if namespace != PROJECT:
            continue
        if key in SECRET_KEYS:
            if not isinstance(value, str) or not value:
                raise _error(stack, full_key, "must be a non-empty string set with --secret")
            problem = ssh_private_key_problem(value) if key == "sshPrivateKey" and check_secrets else None
            if problem:
                raise _error(stack, full_key, problem)
            secrets[key] = value
        else:
            sections[key] = _decode(value)
    try:
        config = StackConfig.model_validate(sections)
    except ValidationError as exc:
        first = exc.errors()[0]
        loc, message = tuple(first["loc"]), first["msg"]
        error = (first.get("ctx") or {}).get("error")
        if first["type"] == "extra_forbidden":
            message = "unknown key (typo?)"
        elif first["type"] == "missing":
            message = "required key is missing"
        elif isinstance(error, FieldError):  # a rule across fields, about one of them
            loc, message = loc + tuple(error.field.split(".")), str(error)
        elif isinstance(error, ValueError):
            message = str(error)
        raise _error(stack, _key(loc), message) from None
    # A stack named like a kind must be of that kind; any other name may be of any kind.
    if config.environment != stack and stack in ("dev", "qa", "prod"):
        raise _error(stack, f"{PROJECT}:environment", f"says {config.environment!r} in stack {stack!r}")
    if config.target.kind == "ssh" and "sshPrivateKey" not in secrets:
        raise _error(stack, f"{PROJECT}:sshPrivateKey", required_secrets(config)["sshPrivateKey"])
    tls_problem = check_gateway_tls(config, secrets)
    if tls_problem:
        key, message = tls_problem
        raise _error(stack, f"{PROJECT}:{key}", message)
    for key, message in required_secrets(config).items():
        if key not in secrets:
            raise _error(stack, f"{PROJECT}:{key}", message)
    if config.backup.enabled and "alpine" in config.postgres.image:
        raise _error(stack, f"{PROJECT}:postgres.image", "backup.enabled needs a Debian-based image "
                     "(e.g. postgres:16.4-bookworm): pgBackRest is added from the PostgreSQL apt repository")
    if config.pgadmin.enabled and not config.monitoring.enabled:
        raise _error(stack, f"{PROJECT}:pgadmin.enabled",
                     "pgAdmin logs in as the monitor role, which exists with monitoring.enabled only")
    relay_problem = upstream_problem(config.smtp) if config.smtp_relay.enabled else None
    if relay_problem:
        key, message = relay_problem
        raise _error(stack, f"{PROJECT}:{key}", message)
    return config, secrets


def load(raw: Mapping[str, Any], stack: str, *, check_secrets: bool = True) -> Stack:
    """Parse and check a stack: the config, the service catalog's port plan, the secrets."""
    from infra.catalog import check_ports, declare_services  # the catalog imports this module

    config, secret_values = parse(raw, stack, check_secrets=check_secrets)
    try:
        catalog = declare_services(config)
    except ValidationError as exc:
        raise _error(stack, PROJECT, f"the services it declares are inconsistent: {exc.errors()[0]['msg']}") from None
    for service in config.limits:
        if service not in catalog:
            known = ", ".join(s.name for s in catalog.services)
            raise _error(stack, f"{PROJECT}:limits.{service}", f"no such service in this stack (one of: {known})")
    if "elasticsearch" in catalog and catalog.get("elasticsearch").limits.memory_mb < config.logging.elk.heap_mb * 3 // 2:
        raise _error(stack, f"{PROJECT}:limits.elasticsearch.memoryMb",
                     f"must leave room above the {config.logging.elk.heap_mb} MB heap (at least 1.5x)")
    for service in catalog.services:
        if service.limits.memory_mb < service.min_memory_mb:
            raise _error(stack, f"{PROJECT}:limits.{service.name}.memoryMb",
                         f"{service.name} needs at least {service.min_memory_mb} MB to start")
    _check_connections(stack, config, catalog)
    clash = check_ports(config)
    if clash:
        key, message = clash
        raise _error(stack, key, message)

    def secret(key: str) -> pulumi.Output[str] | None:
        return pulumi.Output.secret(secret_values[key]) if key in secret_values else None

    return Stack(
        name=stack,
        config=config,
        secrets=Secrets(
            secret("sshPrivateKey"), secret("tlsPrivateKey"), secret("smtpPassword"),
            (secret("backupS3AccessKey"), secret("backupS3SecretKey")) if "backupS3AccessKey" in secret_values else None,
        ),
    )


def _check_connections(stack: str, config: StackConfig, catalog: Catalog) -> None:
    """Every client's pool at its fullest must fit in `postgres.maxConnections`, less the slots
    PostgreSQL keeps for superusers; past it a replica's connection is refused under load."""
    from infra.platform import SUPERUSER_RESERVED_CONNECTIONS, postgres_connections

    wanted = postgres_connections(catalog)
    usable = config.postgres.max_connections - SUPERUSER_RESERVED_CONNECTIONS
    total = sum(wanted.values())
    if total > usable:
        clients = ", ".join(f"{name} {count}" for name, count in wanted.items())
        raise _error(stack, f"{PROJECT}:postgres.maxConnections",
                     f"{config.postgres.max_connections} leaves {usable} after {SUPERUSER_RESERVED_CONNECTIONS} superuser "
                     f"slots, but the clients may open {total} ({clients}): raise it to at least "
                     f"{total + SUPERUSER_RESERVED_CONNECTIONS} or lower apis.*.replicas")


def stack_file_values(stack: str, root: Path = REPO_ROOT) -> dict[str, Any]:
    """The raw config of `Pulumi.<stack>.yaml` as the engine hands it over (structured values as
    JSON text, scalars as text), after the file itself is checked (`check_stack_file`).
    Encrypted values (`secure: v1:...`) are left out: only the engine can decrypt them."""
    from infra.stackfile import check_stack_file

    document = check_stack_file(root / f"Pulumi.{stack}.yaml")
    return {
        key: value if isinstance(value, str) else json.dumps(value)
        for key, value in (document.get("config") or {}).items()
        if not (isinstance(value, dict) and set(value) == {"secure"})
    }


STACKS = ("dev", "qa", "prod")
# What stands in for the operator's secrets where a stack file is read without them (load with
# `check_secrets=False`).
PLACEHOLDER_SECRETS = {f"{PROJECT}:{key}": "placeholder" for key in SECRET_KEYS}


def stack_file_config(stack: str, root: Path = REPO_ROOT) -> StackConfig:
    """What `Pulumi.<stack>.yaml` (in `root`) declares, fully checked, for readers that need no
    secret (the README tables, the probe tests, the backup commands): secrets stand in as
    placeholders."""
    return load({**stack_file_values(stack, root), **PLACEHOLDER_SECRETS}, stack, check_secrets=False).config


def load_current(root: Path | None = None) -> Stack:
    """The running stack's config, as handed to the program by the Pulumi engine. The engine
    passes values, not the file: where `Pulumi.<stack>.yaml` is beside the program, the file
    itself is checked first (syntax, duplicate keys, stray keys, secrets in plain text); then
    the stack is checked against the other stack files on its host (infra/stackset.py)."""
    from pulumi.runtime import config as runtime_config

    from infra.stackfile import check_stack_file
    from infra.stackset import check_siblings  # the stack set reads files through this module

    name, root = pulumi.get_stack(), root or REPO_ROOT
    path = root / f"Pulumi.{name}.yaml"
    if path.is_file():
        check_stack_file(path)
    raw = {**runtime_config.get_config_env(), **runtime_config.CONFIG.get()}
    stack = load(raw, name)
    check_siblings(stack.name, stack.config, root)
    return stack
