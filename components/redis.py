"""`Redis`: the stack's Redis, with append-only persistence on its own volume and a generated
password that leaves only as secret outputs."""

from __future__ import annotations

import pulumi
import pulumi_docker as docker
from pydantic import BaseModel, ConfigDict

from components.container import ContainerService, ContainerServiceArgs, Placement, VolumeMount, retained
from components.secrets import generated_password
from components.spec import ServiceSpec


def redis_command(memory_mb: int) -> list[str]:
    """Start Redis with the password from the environment (never on the command line shown by
    `docker inspect`), AOF on, and a memory cap below the container limit. `volatile-lru`
    evicts only keys with a TTL (cached responses), never the API's counters."""
    maxmemory = max(8, memory_mb * 3 // 4)
    return [
        "sh", "-c",
        'exec redis-server --requirepass "$REDIS_PASSWORD" --appendonly yes --appendfsync everysec '
        f"--maxmemory {maxmemory}mb --maxmemory-policy volatile-lru",
    ]


class RedisArgs(BaseModel):
    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    spec: ServiceSpec
    placement: Placement
    keep_data: bool


class Redis(pulumi.ComponentResource):
    """Owns the Redis container, its volume and its password."""

    host: pulumi.Output[str]
    port: pulumi.Output[int]
    password: pulumi.Output[str]
    url: pulumi.Output[str]

    def __init__(self, name: str, args: RedisArgs, *, opts: pulumi.ResourceOptions | None = None):
        super().__init__("coderz:data:Redis", name, None, opts)
        spec = args.spec
        child = pulumi.ResourceOptions(parent=self)
        secret = generated_password(f"{name}-password", parent=self)
        volume = docker.Volume(
            f"{name}-data", name=f"{args.placement.prefix}-{spec.name}-data", opts=retained(args.keep_data, self, args.placement.provider)
        )
        self.service = ContainerService(
            name,
            ContainerServiceArgs(
                spec=spec,
                placement=args.placement,
                envs=[pulumi.Output.concat("REDIS_PASSWORD=", secret)],
                volumes=[VolumeMount(container_path="/data", volume_name=volume.name)],
                command=redis_command(spec.limits.memory_mb),
            ),
            opts=child,
        )
        self.host = pulumi.Output.from_input(spec.name)
        self.port = pulumi.Output.from_input(spec.port)
        self.password = pulumi.Output.secret(secret)
        self.url = pulumi.Output.secret(pulumi.Output.format("redis://:{0}@{1}:{2}/0", secret, spec.name, spec.port))
        self.register_outputs({"host": self.host, "port": self.port, "password": self.password, "url": self.url})
