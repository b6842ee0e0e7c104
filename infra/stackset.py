"""The set of stacks: every `Pulumi.<stack>.yaml` beside `Pulumi.yaml`, and the rule that
stacks on one Docker host share no host port.

This is the one module that knows which stack files exist. Each stack owns, on its host, the
loopback block `[ports.base, ports.base + 100)` and its public ports (the gateway's http and
https). Two stacks on the same host clash when their blocks overlap, when they share a public
port, or when a public port of one lies in the other's block: Docker would refuse to bind the
second container. Container, volume and network names cannot clash: they start with
`coderz-<stack>-` and a stack name is unique in the project.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from components.host import TargetConfig
from infra.config import PLACEHOLDER_SECRETS, PROJECT, REPO_ROOT, ConfigError, StackConfig, parse, stack_file_values

BLOCK_SIZE = 100
# Blocks are searched from the deployment reference's first block (prod 5000, qa 5100, dev 5200),
# aligned on hundreds, up to the highest base `ports.base` accepts.
FIRST_BASE, LAST_BASE = 5000, 65_000


def host_of(target: TargetConfig) -> str:
    """Which machine a stack's containers run on: the SSH host and port (whoever logs in), or
    the local engine's socket."""
    if target.kind == "ssh":
        return f"ssh://{(target.host or '').lower().rstrip('.')}:{target.port}"
    return target.socket


@dataclass(frozen=True)
class StackFile:
    name: str
    config: StackConfig

    @property
    def file(self) -> str:
        return f"Pulumi.{self.name}.yaml"

    @property
    def host(self) -> str:
        return host_of(self.config.target)

    @property
    def block(self) -> range:
        return range(self.config.ports.base, self.config.ports.base + BLOCK_SIZE)

    @property
    def public_ports(self) -> dict[int, str]:
        """Public port -> the key that sets it."""
        ports = {self.config.ports.http: f"{PROJECT}:ports.http"}
        if self.config.ports.https is not None:
            ports[self.config.ports.https] = f"{PROJECT}:ports.https"
        return ports


def stack_names(root: Path = REPO_ROOT) -> list[str]:
    """Every stack that has a file at the project root."""
    return sorted(p.name[len("Pulumi."):-len(".yaml")] for p in root.glob("Pulumi.?*.yaml"))


def read_stack(name: str, root: Path = REPO_ROOT) -> StackFile:
    """A stack file's validated config. Secrets are not needed to know ports and hosts: they
    stand in as placeholders, so an SSH stack file without its key still reads."""
    config, _ = parse({**stack_file_values(name, root), **PLACEHOLDER_SECRETS}, name, check_secrets=False)
    return StackFile(name, config)


def read_stacks(root: Path = REPO_ROOT) -> dict[str, StackFile]:
    return {name: read_stack(name, root) for name in stack_names(root)}


def _span(block: range) -> str:
    return f"{block.start}-{block[-1]}"


def clash(mine: StackFile, other: StackFile) -> str | None:
    """Why `mine` cannot run beside `other`, as `Pulumi.mine.yaml: key: message`; else None."""
    if mine.host != other.host:
        return None
    where = f"on host {mine.host}"
    if mine.block.start < other.block.stop and other.block.start < mine.block.stop:
        return (f"{mine.file}: {PROJECT}:ports.base: loopback block {_span(mine.block)} overlaps "
                f"{other.file}'s block {_span(other.block)} {where}")
    for port, key in mine.public_ports.items():
        if port in other.public_ports:
            return f"{mine.file}: {key}: public port {port} is also {other.file}'s {other.public_ports[port]} {where}"
        if port in other.block:
            return f"{mine.file}: {key}: public port {port} lies in {other.file}'s loopback block {_span(other.block)} {where}"
    for port, key in other.public_ports.items():
        if port in mine.block:
            return (f"{mine.file}: {PROJECT}:ports.base: loopback block {_span(mine.block)} holds {other.file}'s "
                    f"public port {port} ({key}) {where}")
    return None


def first_clash(mine: StackFile, stacks: Iterable[StackFile]) -> str | None:
    for other in stacks:
        if other.name != mine.name:
            found = clash(mine, other)
            if found:
                return found
    return None


def check_siblings(name: str, config: StackConfig, root: Path = REPO_ROOT) -> None:
    """Refuse a stack whose ports clash with any other stack file on the same host. A sibling
    file that does not validate is refused too: its ports could not be checked."""
    others = (read_stack(other, root) for other in stack_names(root) if other != name)
    found = first_clash(StackFile(name, config), others)
    if found:
        raise ConfigError(found)


def next_free_block(host: str, stacks: Iterable[StackFile], *, public_ports: Iterable[int] = ()) -> int:
    """The lowest free base (a multiple of 100 from 5000) on `host`: no overlap with another
    stack's block, none of their public ports inside it, nor any of `public_ports` (those the
    new stack keeps)."""
    on_host = [s for s in stacks if s.host == host]
    taken = [s.block for s in on_host]
    public = {port for s in on_host for port in s.public_ports} | set(public_ports)
    for base in range(FIRST_BASE, LAST_BASE + 1, BLOCK_SIZE):
        block = range(base, base + BLOCK_SIZE)
        if all(block.start >= t.stop or t.start >= block.stop for t in taken) and not any(p in block for p in public):
            return base
    raise ValueError(f"no free port block left on host {host}")
