"""`ContainerService`: the replicas of one declared service, as Docker containers.

Every container of the platform is made here, so the rules hold in one place: pinned image
referenced by `image_id`, health check, restart policy, memory and CPU limits, log rotation,
the stack's private network with the service name as DNS alias, config files uploaded through
the Docker API with their digest in a label (a change of content replaces the container).
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Literal, Mapping, Sequence

import pulumi
import pulumi_docker as docker
from pydantic import BaseModel, ConfigDict

from components.spec import InputStr, ServiceSpec

# Fields the Docker daemon fills in by itself and reports back as drift
# (kreuzwerker/terraform-provider-docker#473, pulumi/pulumi-docker#1272). Log driver and
# options are set explicitly below, so daemon.json defaults cannot drift them.
DAEMON_FILLED_FIELDS = ["networkMode", "domainname"]
LOG_OPTS = {"max-size": "10m", "max-file": "3"}


class ConfigFile(BaseModel):
    """A file placed in the container at creation; `content` may be a secret Output."""

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    path: str
    content: InputStr
    executable: bool = False


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
    user: str | None = None
    build_context: Path | None = None
    build_args: Mapping[str, str] = {}
    shm_size_mb: int | None = None
    # "host" for an agent that reports on the host's processes (node exporter).
    pid_mode: Literal["host"] | None = None
    depends_on: Sequence[pulumi.Resource] = ()


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
    """Owns one image and the `spec.replicas` containers that run it."""

    image_id: pulumi.Output[str]
    container_names: pulumi.Output[list[str]]

    def __init__(self, name: str, args: ContainerServiceArgs, *, opts: pulumi.ResourceOptions | None = None):
        super().__init__("coderz:runtime:ContainerService", name, None, opts)
        spec = args.spec
        child = pulumi.ResourceOptions(parent=self, provider=args.placement.provider)

        build = None
        if args.build_context is not None:
            build = docker.RemoteImageBuildArgs(context=str(args.build_context), dockerfile="Dockerfile",
                                                build_args=dict(args.build_args) or None)
        image = docker.RemoteImage(
            f"{name}-image",
            name=spec.image,
            keep_locally=True,
            build=build,
            opts=child,
        )

        files_digest = pulumi.Output.all(*[f.content for f in args.files]).apply(
            lambda contents: _digest(*[f.path for f in args.files], *contents)
        )
        uploads = [
            docker.ContainerUploadArgs(file=f.path, content=f.content, executable=f.executable)
            for f in args.files
        ]
        health = spec.health
        ports = [docker.ContainerPortArgs(internal=spec.port, external=spec.host_port, ip="127.0.0.1")] if spec.host_port else []
        ports += public_port_bindings(spec)

        containers = []
        for index in range(1, spec.replicas + 1):
            suffix = "" if spec.replicas == 1 else f"-{index}"
            container_name = f"{args.placement.prefix}-{spec.name}{suffix}"
            containers.append(
                docker.Container(
                    f"{name}{suffix}",
                    name=container_name,
                    hostname=container_name,
                    image=image.image_id,
                    envs=list(args.envs),
                    command=list(args.command) if args.command else None,
                    user=args.user,
                    uploads=uploads,
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
                        docker.ContainerNetworksAdvancedArgs(name=args.placement.network_name, aliases=[spec.name])
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
                    cpus=f"{spec.limits.cpus:g}",
                    log_driver="json-file",
                    log_opts=LOG_OPTS,
                    labels=[
                        docker.ContainerLabelArgs(label="coderz.stack", value=args.placement.prefix),
                        docker.ContainerLabelArgs(label="coderz.service", value=spec.name),
                        docker.ContainerLabelArgs(label="coderz.config-digest", value=files_digest),
                    ],
                    # others depend on it: `pulumi up` moves on only once it is healthy
                    wait=True,
                    wait_timeout=max(60, health.start_period_s + health.retries * health.interval_s),
                    opts=pulumi.ResourceOptions.merge(
                        child,
                        pulumi.ResourceOptions(
                            depends_on=list(args.depends_on),
                            ignore_changes=DAEMON_FILLED_FIELDS,
                        ),
                    ),
                )
            )

        self.containers = containers
        self.image_id = image.image_id
        self.container_names = pulumi.Output.all(*[c.name for c in containers])
        self.register_outputs({"image_id": self.image_id, "container_names": self.container_names})


def public_port_bindings(spec: ServiceSpec) -> list[docker.ContainerPortArgs]:
    return [docker.ContainerPortArgs(internal=p.container, external=p.host) for p in spec.public_ports]
