"""`Api`: one application service (its replicas) wired to its PostgreSQL database and to Redis.

The two flavours differ only in how they read their settings: the Python reference API takes
URLs (`DATABASE_URL`, `REDIS_URL`), the .NET API takes ASP.NET Core connection strings.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal, Sequence

import pulumi
from pydantic import BaseModel, ConfigDict

from components.container import ContainerService, ContainerServiceArgs, Placement
from components.spec import InputStr, ServiceSpec

ASPNETCORE_ENVIRONMENTS = {"dev": "Development", "qa": "Staging", "prod": "Production"}
# PostgreSQL connections one replica may hold: the .NET pool's `Maximum Pool Size`, and the
# Python API's own pool (PG_MAX_CONNECTIONS in apps/pyapi/app.py; a test keeps them equal).
DB_POOL_PER_REPLICA = {"dotnet": 50, "python": 5}


class Database(BaseModel):
    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    host: str
    port: int
    name: str
    password: InputStr


class RedisEndpoint(BaseModel):
    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    host: str
    port: int
    password: InputStr


class ApiArgs(BaseModel):
    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    spec: ServiceSpec
    flavour: Literal["python", "dotnet"]
    environment: str
    placement: Placement
    database: Database
    redis: RedisEndpoint
    build_context: Path | None = None
    depends_on: Sequence[pulumi.Resource] = ()


def api_env(args: ApiArgs) -> list[InputStr]:
    """The container environment; entries holding a password are secret Outputs."""
    db, redis, spec = args.database, args.redis, args.spec
    if args.flavour == "python":
        return [
            f"PORT={spec.port}",
            f"SERVICE_NAME={spec.name}",
            pulumi.Output.secret(
                pulumi.Output.format("DATABASE_URL=postgresql://{0}:{1}@{2}:{3}/{0}", db.name, db.password, db.host, db.port)
            ),
            pulumi.Output.secret(pulumi.Output.format("REDIS_URL=redis://:{0}@{1}:{2}/0", redis.password, redis.host, redis.port)),
        ]
    return [
        f"ASPNETCORE_URLS=http://+:{spec.port}",
        f"ASPNETCORE_ENVIRONMENT={ASPNETCORE_ENVIRONMENTS.get(args.environment, 'Production')}",
        "DOTNET_PRINT_TELEMETRY_MESSAGE=false",
        pulumi.Output.secret(
            pulumi.Output.format(
                "ConnectionStrings__Default=Host={0};Port={1};Database={2};Username={2};Password={3};Maximum Pool Size={4}",
                db.host, db.port, db.name, db.password, DB_POOL_PER_REPLICA["dotnet"],
            )
        ),
        pulumi.Output.secret(
            pulumi.Output.format("ConnectionStrings__Redis={0}:{1},password={2},abortConnect=false", redis.host, redis.port, redis.password)
        ),
    ]


class Api(pulumi.ComponentResource):
    """Owns the replicas of one API and their image (pulled, or built from `build_context`)."""

    container_names: pulumi.Output[list[str]]

    def __init__(self, name: str, args: ApiArgs, *, opts: pulumi.ResourceOptions | None = None):
        super().__init__("coderz:app:Api", name, None, opts)
        self.service = ContainerService(
            name,
            ContainerServiceArgs(
                spec=args.spec,
                placement=args.placement,
                envs=api_env(args),
                build_context=args.build_context,
                depends_on=args.depends_on,
            ),
            opts=pulumi.ResourceOptions(parent=self),
        )
        self.container_names = self.service.container_names
        self.register_outputs({"container_names": self.container_names, "replicas": args.spec.replicas})
