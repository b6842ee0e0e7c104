"""`DockerHost`: the machine a stack runs on, the Docker provider that reaches it and the
stack's private network.

For an SSH target it also owns the host bootstrap (Docker Engine when missing, the firewall of
the deployment reference: deny incoming; allow SSH, 80, 443 and the ports the stack publishes)
and the private key file that the Docker provider's ssh client uses.
"""

from __future__ import annotations

import hashlib
from typing import Literal, Sequence

import pulumi
import pulumi_command as command
import pulumi_docker as docker
from pydantic import BaseModel, ConfigDict, Field, model_validator

from components.container import Placement
from components.spec import Frozen, InputStr
from components.validators import DockerSocket, FieldError, HostName, LoginName


class TargetConfig(Frozen):
    """The Docker host: the local engine, or a VPS reached over SSH. Every value ends up in an
    `ssh://user@host:port` URL and an ssh command line, so each is checked for its grammar."""

    kind: Literal["local", "ssh"]
    host: HostName | None = None
    user: LoginName = "deploy"
    port: int = Field(default=22, ge=1, le=65535)
    socket: DockerSocket = "unix:///var/run/docker.sock"

    @model_validator(mode="after")
    def _ssh_needs_host(self) -> "TargetConfig":
        if self.kind == "ssh" and not self.host:
            raise ValueError("an ssh target needs host")
        if self.kind == "local" and self.host is not None:
            raise FieldError("host", "is only read for an ssh target (kind: ssh); a local target uses socket")
        return self

    @property
    def docker_host(self) -> str:
        """The engine's address, as the Docker provider and `DOCKER_HOST` take it."""
        return f"ssh://{self.user}@{self.host}:{self.port}" if self.kind == "ssh" else self.socket


INSTALL_DOCKER = (
    "set -eu; "
    "if ! command -v docker >/dev/null 2>&1; then curl -fsSL https://get.docker.com | sudo -n sh; fi; "
    "sudo -n systemctl enable --now docker; "
    'sudo -n usermod -aG docker "$(id -un)"'
)


# Docker's default address pools for bridge networks: where the stack's containers come from
# when they reach a service on the host itself.
DOCKER_BRIDGES = "172.16.0.0/12"


def firewall_script(ssh_port: int, open_ports: Sequence[int], bridge_ports: Sequence[int] = ()) -> str:
    """ufw rules: everything incoming denied but SSH, web and the published ports; `bridge_ports`
    (host services the stack's containers use, such as k3s) only from Docker's bridges. Idempotent."""
    allowed = sorted({ssh_port, 80, 443, *open_ports})
    lines = [
        "set -eu",
        "command -v ufw >/dev/null 2>&1 || sudo -n apt-get install -y ufw",
        "sudo -n ufw default deny incoming",
        "sudo -n ufw default allow outgoing",
        *[f"sudo -n ufw allow {port}/tcp" for port in allowed],
        *[f"sudo -n ufw allow proto tcp from {DOCKER_BRIDGES} to any port {port}" for port in sorted(set(bridge_ports))],
        "sudo -n ufw --force enable",
    ]
    return "; ".join(lines)


def ssh_options(key_path: str) -> list[str]:
    # One shared SSH connection: a session per resource trips sshd's MaxStartups
    # (kreuzwerker/terraform-provider-docker#262).
    return [
        "-o", "ControlMaster=auto",
        "-o", "ControlPath=~/.ssh/coderz-%r@%h:%p",
        "-o", "ControlPersist=10m",
        "-o", "StrictHostKeyChecking=accept-new",
        "-o", "IdentitiesOnly=yes",
        "-i", key_path,
    ]


class HostShell(BaseModel):
    """Where a command that needs the Docker CLI runs: on the SSH target over the stack's
    connection, or on this machine against the local engine."""

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    docker_host: str
    connection: command.remote.ConnectionArgs | None = None

    def run(self, name: str, create: pulumi.Input[str], *, triggers: list, opts: pulumi.ResourceOptions,
            stdin: InputStr | None = None) -> pulumi.CustomResource:
        """A command re-run only when `triggers` change (editing `create` alone does not).
        `stdin` carries what must not appear in the command line (a secret stays a secret)."""
        if self.connection is not None:
            return command.remote.Command(
                name, connection=self.connection, create=create, stdin=stdin, triggers=triggers, opts=opts
            )
        return command.local.Command(
            name, create=create, stdin=stdin, environment={"DOCKER_HOST": self.docker_host}, triggers=triggers,
            opts=opts,
        )


class DockerHostArgs(BaseModel):
    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    target: TargetConfig
    prefix: str
    public_ports: tuple[int, ...]
    # Ports of services on the host itself that the stack's containers reach (never public).
    bridge_ports: tuple[int, ...] = ()
    ssh_private_key: InputStr | None = None


class DockerHost(pulumi.ComponentResource):
    """Owns the Docker provider, the SSH bootstrap of a remote host, and the stack network."""

    provider: docker.Provider
    network_name: pulumi.Output[str]
    docker_host: pulumi.Output[str]
    shell: HostShell
    placement: Placement
    # The private key file the program's own ssh clients use (SSH targets only).
    ssh_key_path: str | None = None

    def __init__(self, name: str, args: DockerHostArgs, *, opts: pulumi.ResourceOptions | None = None):
        super().__init__("coderz:host:DockerHost", name, None, opts)
        target = args.target
        child = pulumi.ResourceOptions(parent=self)
        ready: list[pulumi.Resource] = []

        if target.kind == "ssh":
            assert target.host and args.ssh_private_key is not None  # guaranteed by config validation
            key_path = self.ssh_key_path = f"~/.ssh/{args.prefix}.key"
            key_file = command.local.Command(
                f"{name}-ssh-key",
                create=f"mkdir -p ~/.ssh && umask 077 && cat > {key_path}",
                delete=f"rm -f {key_path}",
                stdin=args.ssh_private_key,
                opts=child,
            )
            connection = command.remote.ConnectionArgs(
                host=target.host, port=target.port, user=target.user, private_key=args.ssh_private_key
            )
            install = command.remote.Command(
                f"{name}-install-docker",
                connection=connection,
                create=INSTALL_DOCKER,
                triggers=[hashlib.sha256(INSTALL_DOCKER.encode()).hexdigest()],
                opts=child,
            )
            rules = firewall_script(target.port, args.public_ports, args.bridge_ports)
            firewall = command.remote.Command(
                f"{name}-firewall",
                connection=connection,
                create=rules,
                triggers=[hashlib.sha256(rules.encode()).hexdigest()],
                opts=pulumi.ResourceOptions(parent=self, depends_on=[install]),
            )
            ready = [key_file, install, firewall]
            docker_host = target.docker_host
            provider_args = dict(host=docker_host, ssh_opts=ssh_options(key_path))
            self.shell = HostShell(docker_host=docker_host, connection=connection)
        else:
            docker_host = target.docker_host
            provider_args = dict(host=docker_host)
            self.shell = HostShell(docker_host=docker_host)

        self.provider = docker.Provider(
            f"{name}-docker", **provider_args, opts=pulumi.ResourceOptions(parent=self, depends_on=ready)
        )
        network = docker.Network(
            f"{name}-net",
            name=f"{args.prefix}-net",
            driver="bridge",
            labels=[docker.NetworkLabelArgs(label="coderz.stack", value=args.prefix)],
            opts=pulumi.ResourceOptions(parent=self, provider=self.provider),
        )
        self.network_name = network.name
        self.placement = Placement(prefix=args.prefix, network_name=network.name, provider=self.provider)
        self.docker_host = pulumi.Output.from_input(docker_host)
        self.register_outputs({"network_name": self.network_name, "docker_host": self.docker_host})

