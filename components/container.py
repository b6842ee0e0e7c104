"""`ContainerService`: the replicas of one declared service, as Docker containers.

Every container of the platform is made here, so the rules hold in one place: pinned image
referenced by `image_id`, health check, restart policy, memory and CPU limits, log rotation,
the stack's private network with the service name as DNS alias, config files uploaded through
the Docker API with their digest in a label (a change of content replaces the container), a
graceful stop, and the replacement order of the service's kind (`ContainerService`).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Literal, Mapping, Sequence

import pulumi
import pulumi_docker as docker
from pydantic import BaseModel, ConfigDict, model_validator

from components.drift_ignore import CONTAINER_IGNORE_CHANGES, PINNED_CONTAINER_ARGS
from components.spec import InputStr, ServiceSpec

LOG_OPTS = {"max-size": "10m", "max-file": "3"}
# How long a container may take to stop (SIGTERM) before it is killed and removed.
STOP_GRACE_S = 30


class ConfigFile(BaseModel):
    """A file placed in the container at creation; `content` may be a secret Output."""

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    path: str
    content: InputStr
    executable: bool = False
    # Numeric owner/group and octal mode of the file (pulumi-docker >= 5.2); unset: root, 0644.
    # A secret a container's non-root user must read, and no other user: its uid and "0400".
    owner: str | None = None
    group: str | None = None
    permissions: str | None = None


class VolumeMount(BaseModel):
    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    container_path: str
    volume_name: InputStr | None = None
    host_path: str | None = None
    read_only: bool = False


class Placement(BaseModel):
    """Where a stack's containers go: their name prefix (`coderz-<stack>`), the stack's private
    network and the one Docker provider that reaches the host."""

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    prefix: str
    network_name: InputStr
    provider: docker.Provider


class ContainerServiceArgs(BaseModel):
    """What a component adds to a `ServiceSpec` to run it."""

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    spec: ServiceSpec
    placement: Placement
    envs: Sequence[InputStr] = ()
    files: Sequence[ConfigFile] = ()
    volumes: Sequence[VolumeMount] = ()
    command: Sequence[str] | None = None
    # Replaces the image's entrypoint (a sidecar that runs a script around the image's binary).
    entrypoint: Sequence[str] | None = None
    user: str | None = None
    build_context: Path | None = None
    build_args: Mapping[str, str] = {}
    # The ID of an image another service of the stack owns (the backup sidecar runs the image
    # PostgreSQL's service builds): no image resource here, so one image is built once and a
    # rebuild replaces every container that runs it.
    image_id: InputStr | None = None
    shm_size_mb: int | None = None
    # "host" for an agent that reports on the host's processes (node exporter).
    pid_mode: Literal["host"] | None = None
    # k3s runs its own containers, cgroups and iptables: it needs a privileged container.
    privileged: bool = False
    tmpfs: Mapping[str, str] = {}
    depends_on: Sequence[pulumi.Resource] = ()

    @model_validator(mode="after")
    def _one_image_source(self) -> "ContainerServiceArgs":
        if self.image_id is not None and self.build_context is not None:
            raise ValueError(f"{self.spec.name}: give image_id or build_context, not both")
        return self

    @model_validator(mode="after")
    def _no_shared_volume_while_rolling(self) -> "ContainerServiceArgs":
        # Two generations of a rolling service run side by side for a moment: a named volume
        # would be written by both. Read-only host mounts (/proc, the Docker socket) are fine.
        if self.spec.rolling and any(v.volume_name is not None for v in self.volumes):
            raise ValueError(f"{self.spec.name} mounts a named volume: declare it stateful")
        return self


def retained(keep: bool, parent: pulumi.Resource, provider: docker.Provider) -> pulumi.ResourceOptions:
    """Options of a data volume: kept on `pulumi destroy` and protected where the stack keeps data."""
    return pulumi.ResourceOptions(parent=parent, provider=provider, retain_on_delete=keep, protect=keep)


def _digest(*parts: str) -> str:
    digest = hashlib.sha256()
    for part in parts:
        digest.update(part.encode())
        digest.update(b"\0")
    return digest.hexdigest()[:16]


class ContainerService(pulumi.ComponentResource):
    """Owns one image (unless `image_id` names one another service owns) and the
    `spec.replicas` containers that run it.

    How a deploy replaces them follows `spec.rolling`:
    - rolling (stateless, no host port): replica `i` is `<prefix>-<service>-<i>-<digest>`, the
      digest covering every input of the container, so a changed container gets a new name and
      is created beside the old one (`delete_before_replace=False`), waited healthy, and only
      then is the old one stopped (gracefully) and removed. Replica `i` keeps its name whatever
      the count, so scaling touches only the replicas added or removed.
    - otherwise (stateful, or binding a host port): one container `<prefix>-<service>`, stopped
      before its replacement starts (`delete_before_replace=True`, the provider's default for
      every container, said explicitly), on the same volumes.
    """

    image_id: pulumi.Output[str]
    container_names: pulumi.Output[list[str]]

    def __init__(self, name: str, args: ContainerServiceArgs, *, opts: pulumi.ResourceOptions | None = None):
        super().__init__("coderz:runtime:ContainerService", name, None, opts)
        spec = args.spec
        child = pulumi.ResourceOptions(parent=self, provider=args.placement.provider)

        if args.image_id is not None:
            image_id = pulumi.Output.from_input(args.image_id)
        else:
            build = None
            if args.build_context is not None:
                build = docker.RemoteImageBuildArgs(context=str(args.build_context), dockerfile="Dockerfile",
                                                    build_args=dict(args.build_args) or None)
            image_id = docker.RemoteImage(
                f"{name}-image",
                name=spec.image,
                keep_locally=True,
                build=build,
                opts=child,
            ).image_id

        containers = []
        if spec.rolling:
            for index in range(1, spec.replicas + 1):
                # Replica 1 was `name` while one replica had no index: the alias keeps it the
                # same resource, so a stack that had one is rolled, not deleted and recreated.
                aliases = [pulumi.Alias(name=name)] if index == 1 else []
                containers.append(self._container(
                    f"{name}-{index}", args, image_id, index=index,
                    opts=pulumi.ResourceOptions(delete_before_replace=False, aliases=aliases)))
        else:
            containers.append(self._container(
                name, args, image_id, index=None, opts=pulumi.ResourceOptions(delete_before_replace=True)))

        self.containers = containers
        self.image_id = image_id
        self.container_names = pulumi.Output.all(*[c.name for c in containers])
        self.register_outputs({"image_id": self.image_id, "container_names": self.container_names})

    def _container(self, resource_name: str, args: ContainerServiceArgs, image_id: pulumi.Output[str], *,
                   index: int | None, opts: pulumi.ResourceOptions) -> docker.Container:
        spec, placement = args.spec, args.placement
        stable = replica_name(placement.prefix, spec, index)
        inputs = container_inputs(args, image_id, hostname=stable)
        # A rolling replica's name carries a digest of everything else it is made of: any change
        # gives the replacement a name the running container does not hold. Secret inputs (a
        # password in the environment) go into the digest too, so a rotation rolls as well;
        # twelve hex digits of SHA-256 over the whole spec tell only that something changed.
        container_name = stable if index is None else pulumi.Output.unsecret(
            pulumi.Output.from_input(inputs).apply(lambda resolved: f"{stable}-{spec_digest(resolved)}"))
        return docker.Container(
            resource_name,
            name=container_name,
            **inputs,
            opts=pulumi.ResourceOptions.merge(
                pulumi.ResourceOptions(
                    parent=self,
                    provider=placement.provider,
                    depends_on=list(args.depends_on),
                    ignore_changes=CONTAINER_IGNORE_CHANGES,
                ),
                opts,
            ),
        )


def container_inputs(args: ContainerServiceArgs, image_id: pulumi.Input[str], *, hostname: str) -> dict[str, object]:
    """Every input of one container but its name: the rules every container follows."""
    spec = args.spec
    health = spec.health
    files_digest = pulumi.Output.all(*[f.content for f in args.files]).apply(
        lambda contents: _digest(*[f.path for f in args.files], *contents)
    )
    ports = [docker.ContainerPortArgs(internal=spec.port, external=spec.host_port, ip="127.0.0.1")] if spec.host_port else []
    ports += public_port_bindings(spec)
    return dict(
        hostname=hostname,
        image=image_id,
        envs=list(args.envs),
        command=list(args.command) if args.command else None,
        entrypoints=list(args.entrypoint) if args.entrypoint else None,
        user=args.user,
        uploads=[
            docker.ContainerUploadArgs(file=f.path, content=f.content, executable=f.executable,
                                       owner=f.owner, group=f.group, permissions=f.permissions)
            for f in args.files
        ],
        volumes=[
            docker.ContainerVolumeArgs(
                container_path=v.container_path,
                volume_name=v.volume_name,
                host_path=v.host_path,
                read_only=v.read_only,
            )
            for v in args.volumes
        ],
        networks_advanced=[
            # Every replica of every generation answers to the service name: the gateway's
            # resolver and Prometheus find the new ones and lose the old ones by themselves.
            # the stable replica name too, so a replica is reached by name whatever its generation
            docker.ContainerNetworksAdvancedArgs(name=args.placement.network_name,
                                                 aliases=[spec.name] + ([hostname] if spec.rolling else []))
        ],
        ports=ports,
        healthcheck=docker.ContainerHealthcheckArgs(
            tests=list(health.test),
            interval=f"{health.interval_s}s",
            timeout=f"{health.timeout_s}s",
            retries=health.retries,
            start_period=f"{health.start_period_s}s",
        ),
        restart="unless-stopped",
        memory=spec.limits.memory_mb,
        shm_size=args.shm_size_mb,
        pid_mode=args.pid_mode,
        privileged=args.privileged or None,
        tmpfs=dict(args.tmpfs) or None,
        cpus=f"{spec.limits.cpus:g}",
        log_driver="json-file",
        log_opts=LOG_OPTS,
        **PINNED_CONTAINER_ARGS,
        labels=[
            docker.ContainerLabelArgs(label=STACK_LABEL, value=args.placement.prefix),
            docker.ContainerLabelArgs(label=SERVICE_LABEL, value=spec.name),
            docker.ContainerLabelArgs(label=REPLICA_LABEL, value=hostname),
            docker.ContainerLabelArgs(label="coderz.config-digest", value=files_digest),
        ],
        # others depend on it: `pulumi up` moves on (and removes what it replaces) only once
        # it is healthy
        wait=True,
        wait_timeout=max(60, health.start_period_s + health.retries * health.interval_s),
        # Without it the provider removes a container with force (SIGKILL): requests in
        # flight are cut and PostgreSQL has to recover. With it, SIGTERM and this long to finish.
        destroy_grace_seconds=STOP_GRACE_S,
    )


def spec_digest(resolved: dict[str, object]) -> str:
    """Twelve hex digits of SHA-256 over a container's resolved inputs."""
    text = json.dumps(resolved, sort_keys=True, default=lambda value: vars(value))
    return hashlib.sha256(text.encode()).hexdigest()[:12]


# Every container's labels: its stack, its service, and its replica's stable name (a rolling
# replica's container name changes each generation; this label does not).
STACK_LABEL, SERVICE_LABEL, REPLICA_LABEL = "coderz.stack", "coderz.service", "coderz.replica"


def replica_name(prefix: str, spec: ServiceSpec, index: int | None) -> str:
    """A replica's stable name: `<prefix>-<service>` for a service that does not roll, else
    `<prefix>-<service>-<index>`. A rolling replica's container name adds a digest per
    generation; the stable name is its hostname, a network alias and its `coderz.replica` label."""
    return f"{prefix}-{spec.name}" + ("" if index is None else f"-{index}")


def container_names(prefix: str, spec: ServiceSpec) -> list[str]:
    """The stable names of a service's replicas (what the flows probe and report by)."""
    if not spec.rolling:
        return [replica_name(prefix, spec, None)]
    return [replica_name(prefix, spec, index) for index in range(1, spec.replicas + 1)]


def public_port_bindings(spec: ServiceSpec) -> list[docker.ContainerPortArgs]:
    return [docker.ContainerPortArgs(internal=p.container, external=p.host) for p in spec.public_ports]
