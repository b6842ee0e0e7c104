"""`Logging`: the stack's log pipelines, each one a per-stack toggle.

- Loki (`logging.loki.enabled`): Loki with its data volume, Promtail reading this stack's
  containers through the Docker socket (read-only mount).
- ELK (`logging.elk.enabled`): Elasticsearch with its data volume, Logstash (which PUTs the
  ILM policy and index template before it starts), Kibana (127.0.0.1 only, or unpublished),
  Filebeat reading the gateway's json-file log (read-only mounts).

Images, ports, health checks and limits come from the catalog (infra/services_logging.py);
this component adds config files (render.py), mounts, volumes and start order. A pipeline
that is off leaves no container, volume or URL behind.

Elasticsearch security: off (`xpack.security.enabled=false`). It and Logstash are reached
only on the stack's private Docker network, never published; Kibana is on the host's
loopback (an SSH tunnel away), so who reaches them already has the Docker host. The gap:
every container on the stack network (gateway, APIs) could write or delete indices.

Docker socket: mounted read-only into Promtail and Filebeat. That stops the socket file from
being replaced, not API calls: both agents can drive the Docker API (root on the host). A
read-only socket proxy (GET /containers, /events only) would narrow it; not done yet.
"""

from __future__ import annotations

import pulumi
import pulumi_docker as docker
from pydantic import BaseModel, ConfigDict, model_validator

from components.container import ConfigFile, ContainerService, ContainerServiceArgs, Placement, VolumeMount, retained
from components.logging import render
from components.logging.settings import LOGSTASH_HEAP_MB, LoggingConfig
from components.spec import Catalog, ServiceSpec

LOKI_SERVICES = ("loki", "promtail")
ELK_SERVICES = ("elasticsearch", "logstash", "kibana", "filebeat")
DOCKER_SOCKET = "/var/run/docker.sock"
DOCKER_CONTAINERS = "/var/lib/docker/containers"
LOGSTASH_SETUP_DIR = "/usr/share/logstash/setup"
ES_DATA_DIR = "/usr/share/elasticsearch/data"


class LoggingArgs(BaseModel):
    """What the logging tier needs: the stack's catalog (holding the services of
    `logging_services` for the enabled pipelines), its logging config, network and provider."""

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    catalog: Catalog
    config: LoggingConfig
    placement: Placement
    keeps_data: bool = False
    # Paths on the Docker host, mounted read-only into Promtail and Filebeat.
    docker_socket: str = DOCKER_SOCKET
    docker_containers_dir: str = DOCKER_CONTAINERS
    gateway_service: str = "gateway"

    @model_validator(mode="after")
    def _catalog_matches_toggles(self) -> "LoggingArgs":
        for enabled, names in ((self.config.loki.enabled, LOKI_SERVICES), (self.config.elk.enabled, ELK_SERVICES)):
            for service in names:
                if enabled and service not in self.catalog:
                    raise ValueError(f"the catalog lacks {service} (add logging_services(config) to it)")
                if not enabled and service in self.catalog:
                    raise ValueError(f"the catalog declares {service} but its pipeline is off")
        return self


class Logging(pulumi.ComponentResource):
    """Owns the containers and data volumes of the enabled log pipelines."""

    loki_enabled: bool
    loki_url: str | None
    elasticsearch_enabled: bool
    elasticsearch_url: str | None
    kibana_url: str | None
    services: dict[str, ContainerService]
    volumes: dict[str, docker.Volume]

    def __init__(self, name: str, args: LoggingArgs, *, opts: pulumi.ResourceOptions | None = None):
        super().__init__("coderz:logging:Logging", name, None, opts)
        self._name, self._args = name, args
        self.services, self.volumes = {}, {}
        catalog, config = args.catalog, args.config

        self.loki_enabled = config.loki.enabled
        self.loki_url = _url(catalog.get("loki")) if self.loki_enabled else None
        if self.loki_enabled:
            self._loki(catalog.get("loki"), catalog.get("promtail"), config.loki.retention_days)

        self.elasticsearch_enabled = config.elk.enabled
        self.elasticsearch_url = _url(catalog.get("elasticsearch")) if self.elasticsearch_enabled else None
        self.kibana_url = None
        if self.elasticsearch_enabled:
            kibana = catalog.get("kibana")
            self.kibana_url = f"http://127.0.0.1:{kibana.host_port}" if kibana.host_port else None
            self._elk(catalog.get("elasticsearch"), catalog.get("logstash"), kibana, catalog.get("filebeat"))

        self.container_names = pulumi.Output.all(*[s.container_names for s in self.services.values()]).apply(
            lambda names: sorted(n for group in names for n in group)
        )
        self.register_outputs({
            "loki_enabled": self.loki_enabled,
            "loki_url": self.loki_url,
            "elasticsearch_enabled": self.elasticsearch_enabled,
            "elasticsearch_url": self.elasticsearch_url,
            "kibana_url": self.kibana_url,
            "container_names": self.container_names,
        })

    # --- helpers --------------------------------------------------------------------------

    def _volume(self, service: str, *, data: bool) -> docker.Volume:
        """A named volume; `data` ones are retained and protected where the stack keeps data."""
        args = self._args
        opts = (retained(args.keeps_data, self, args.placement.provider) if data
                else pulumi.ResourceOptions(parent=self, provider=args.placement.provider))
        suffix = "data" if data else "state"
        volume = docker.Volume(
            f"{self._name}-{service}-{suffix}",
            name=f"{args.placement.prefix}-{service}-{suffix}",
            labels=[docker.VolumeLabelArgs(label="coderz.stack", value=args.placement.prefix)],
            opts=opts,
        )
        self.volumes[service] = volume
        return volume

    def _run(self, spec: ServiceSpec, *, depends_on: tuple[str, ...] = (), **extra) -> ContainerService:
        args = self._args
        service = ContainerService(
            f"{self._name}-{spec.name}",
            ContainerServiceArgs(
                spec=spec,
                placement=args.placement,
                depends_on=[self.services[d] for d in depends_on],
                **extra,
            ),
            opts=pulumi.ResourceOptions(parent=self),
        )
        self.services[spec.name] = service
        return service

    def _host_mount(self, host_path: str, container_path: str | None = None) -> VolumeMount:
        return VolumeMount(container_path=container_path or host_path, host_path=host_path, read_only=True)

    # --- pipelines ------------------------------------------------------------------------

    def _loki(self, loki: ServiceSpec, promtail: ServiceSpec, retention_days: int) -> None:
        data = self._volume(loki.name, data=True)
        self._run(
            loki,
            files=[ConfigFile(path="/etc/loki/local-config.yaml",
                              content=render.render_loki_config(retention_days, http_port=loki.port))],
            volumes=[VolumeMount(container_path=render.LOKI_DATA_DIR, volume_name=data.name)],
        )
        positions = self._volume(promtail.name, data=False)
        self._run(
            promtail,
            depends_on=(loki.name,),
            files=[ConfigFile(
                path="/etc/promtail/config.yml",
                content=render.render_promtail_config(
                    self._args.placement.prefix, f"{self.loki_url}/loki/api/v1/push", http_port=promtail.port
                ),
            )],
            volumes=[
                self._host_mount(self._args.docker_socket, DOCKER_SOCKET),
                VolumeMount(container_path="/var/lib/promtail", volume_name=positions.name),
            ],
        )

    def _elk(self, es: ServiceSpec, logstash: ServiceSpec, kibana: ServiceSpec, filebeat: ServiceSpec) -> None:
        args, elk = self._args, self._args.config.elk
        data = self._volume(es.name, data=True)
        self._run(
            es,
            envs=[
                "discovery.type=single-node",
                f"cluster.name={args.placement.prefix}-logs",
                f"node.name={args.placement.prefix}-{es.name}",
                f"ES_JAVA_OPTS=-Xms{elk.heap_mb}m -Xmx{elk.heap_mb}m",
                "xpack.security.enabled=false",
                "xpack.ml.enabled=false",
                "ingest.geoip.downloader.enabled=false",
                # No need to raise the host's vm.max_map_count: niofs instead of mmap.
                "node.store.allow_mmap=false",
            ],
            volumes=[VolumeMount(container_path=ES_DATA_DIR, volume_name=data.name)],
        )
        self._run(
            logstash,
            depends_on=(es.name,),
            envs=[
                f"ES_URL={self.elasticsearch_url}",
                f"LS_JAVA_OPTS=-Xms{LOGSTASH_HEAP_MB}m -Xmx{LOGSTASH_HEAP_MB}m",
                "XPACK_MONITORING_ENABLED=false",
                "PIPELINE_WORKERS=1",
            ],
            files=[
                ConfigFile(path="/usr/share/logstash/pipeline/logstash.conf",
                           content=render.render_logstash_pipeline(self.elasticsearch_url, beats_port=logstash.port)),
                ConfigFile(path=f"{LOGSTASH_SETUP_DIR}/es-setup.sh", content=render.render_es_setup_script(),
                           executable=True),
                ConfigFile(path=f"{LOGSTASH_SETUP_DIR}/ilm-policy.json",
                           content=render.render_ilm_policy(elk.retention_days)),
                ConfigFile(path=f"{LOGSTASH_SETUP_DIR}/index-template.json", content=render.render_index_template()),
            ],
            # The image's entrypoint maps the env to logstash.yml, then runs this.
            command=["bash", "-c", f"sh {LOGSTASH_SETUP_DIR}/es-setup.sh && exec logstash"],
        )
        self._run(
            kibana,
            depends_on=(es.name,),
            envs=[
                f'ELASTICSEARCH_HOSTS=["{self.elasticsearch_url}"]',
                f"SERVER_NAME={args.placement.prefix}-kibana",
                *([f"SERVER_PUBLICBASEURL={self.kibana_url}"] if self.kibana_url else []),
                "TELEMETRY_OPTIN=false",
                "NODE_OPTIONS=--max-old-space-size=640",
            ],
        )
        registry = self._volume(filebeat.name, data=False)
        self._run(
            filebeat,
            depends_on=(logstash.name,),
            user="root",  # reads root-owned /var/lib/docker/containers and the socket
            command=["-environment", "container", "--strict.perms=false"],
            files=[ConfigFile(
                path="/usr/share/filebeat/filebeat.yml",
                content=render.render_filebeat_config(
                    f"{args.placement.prefix}-{args.gateway_service}",
                    logstash_hosts=(f"{logstash.name}:{logstash.port}",),
                    containers_dir=DOCKER_CONTAINERS,
                    http_port=filebeat.port,
                ),
            )],
            volumes=[
                self._host_mount(args.docker_containers_dir, DOCKER_CONTAINERS),
                self._host_mount(args.docker_socket, DOCKER_SOCKET),
                VolumeMount(container_path="/usr/share/filebeat/data", volume_name=registry.name),
            ],
        )


def _url(spec: ServiceSpec) -> str:
    """A service's address on the stack network: its DNS alias and container port."""
    return f"http://{spec.name}:{spec.port}"
