"""`SmtpRelay`: the stack's one Postfix relay (boky/postfix), on the private network only.

Every sender of the stack (Alertmanager, Grafana, the Prefect flows) hands mail to it in plain
SMTP on the stack network; the relay alone holds the upstream's password and talks to it over
TLS with authentication. The Postfix settings come from settings.py, the same function the
tests feed to a real Postfix.
"""

from __future__ import annotations

import shlex

import pulumi
from pydantic import BaseModel, ConfigDict, model_validator

from components.container import ConfigFile, ContainerService, ContainerServiceArgs, Placement
from components.mail.settings import (
    LOCAL_ONLY_LOG, PASSWORD_MAP, RELAY_PORT, SmtpRelayConfig, password_map, postfix_settings, relayhost,
    sender_domain, upstream_problem,
)
from components.monitoring.settings import SmtpConfig
from components.spec import InputStr, ServiceSpec

# The image runs every *.sh here at the end of its start-up, after main.cf is written.
INIT_SCRIPT = "/docker-init.db/coderz-relay.sh"


class SmtpRelayArgs(BaseModel):
    """The relay's declaration, settings and upstream (None: mail is held in the relay)."""

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    spec: ServiceSpec
    placement: Placement
    config: SmtpRelayConfig
    upstream: SmtpConfig | None = None
    upstream_password: InputStr | None = None

    @model_validator(mode="after")
    def _upstream(self) -> "SmtpRelayArgs":
        problem = upstream_problem(self.upstream)
        if problem:
            raise ValueError(f"{problem[0]}: {problem[1]}")
        if self.upstream is not None and self.upstream_password is None:
            raise ValueError("an upstream SMTP needs upstream_password (the secret smtpPassword)")
        if self.spec.port != RELAY_PORT:
            raise ValueError(f"the relay image listens on {RELAY_PORT}, the spec says {self.spec.port}")
        return self


def client_config(upstream: SmtpConfig, spec: ServiceSpec) -> SmtpConfig:
    """What the stack's senders are given instead of the upstream: the relay, by its alias,
    without TLS or login (the private network; the relay's port is never published)."""
    return upstream.model_copy(update={"host": spec.name, "port": spec.port, "user": None, "starttls": False})


def mode_line(upstream: SmtpConfig | None) -> str:
    """The relay's one start-up line: where mail goes."""
    if upstream is None:
        return LOCAL_ONLY_LOG
    return f"coderz smtp-relay: relaying all mail to {relayhost(upstream)}, TLS required, logged in as {upstream.user}"


class SmtpRelay(pulumi.ComponentResource):
    """Owns the relay container; its password map is a secret upload."""

    endpoint: pulumi.Output[str]
    mode: pulumi.Output[str]

    def __init__(self, name: str, args: SmtpRelayArgs, *, opts: pulumi.ResourceOptions | None = None):
        super().__init__("coderz:mail:SmtpRelay", name, None, opts)
        upstream = args.upstream
        settings = postfix_settings(args.config, upstream)
        envs: list[InputStr] = [f"POSTFIX_{key}={value}" for key, value in settings.items()]
        # Said once at start-up, where `docker logs` shows it (the image's own lines speak of
        # direct delivery: it does not know the POSTFIX_relayhost set here).
        files = [ConfigFile(path=INIT_SCRIPT, content=f"#!/bin/sh\necho {shlex.quote(mode_line(upstream))}\n", executable=True)]
        if upstream is None:
            envs.append("ALLOW_EMPTY_SENDER_DOMAINS=true")
            pulumi.log.info(LOCAL_ONLY_LOG, resource=self)
        else:
            envs.append(f"ALLOWED_SENDER_DOMAINS={sender_domain(upstream)}")
            files.append(ConfigFile(path=PASSWORD_MAP, content=pulumi.Output.secret(args.upstream_password).apply(
                lambda password: password_map(upstream, password))))
        self.service = ContainerService(
            name, ContainerServiceArgs(spec=args.spec, placement=args.placement, envs=envs, files=files),
            opts=pulumi.ResourceOptions(parent=self),
        )
        self.endpoint = pulumi.Output.from_input(f"{args.spec.name}:{args.spec.port}")
        self.mode = pulumi.Output.from_input("local" if upstream is None else "upstream")
        self.register_outputs({"endpoint": self.endpoint, "mode": self.mode})
