"""The logging services of a stack, declared once: only the pipelines its config turns on.

Two independent pipelines, each a per-stack toggle (`logging.loki.enabled`, `logging.elk.enabled`):
- Promtail -> Loki (internal only) -> Grafana: every container of the stack, by Docker labels.
- Filebeat -> Logstash :5044 -> Elasticsearch (internal only) -> Kibana: the gateway's JSON
  access log, one daily index `gateway-YYYY.MM.dd`, deleted after `elk.retention_days`.

Nothing here is published except Kibana, on the host's loopback only (`loopback_port`).
"""

from __future__ import annotations

from components.logging.component import ELK_SERVICES, LOKI_SERVICES
from components.logging.settings import LOGSTASH_HEAP_MB, LoggingConfig
from components.spec import HealthCheck, Limits, Metrics, ServiceSpec
from infra.catalog import bash_http_check, http_check, loopback_port
from infra.config import StackConfig

LOKI_IMAGE = "grafana/loki:3.1.1"  # alpine based: busybox wget for the health check
PROMTAIL_IMAGE = "grafana/promtail:3.1.1"  # debian based: no wget/curl, bash only
ELASTIC_VERSION = "8.15.3"
ELASTICSEARCH_IMAGE = f"docker.elastic.co/elasticsearch/elasticsearch:{ELASTIC_VERSION}"
LOGSTASH_IMAGE = f"docker.elastic.co/logstash/logstash:{ELASTIC_VERSION}"
KIBANA_IMAGE = f"docker.elastic.co/kibana/kibana:{ELASTIC_VERSION}"
FILEBEAT_IMAGE = f"docker.elastic.co/beats/filebeat:{ELASTIC_VERSION}"

LOKI_PORT = 3100
PROMTAIL_PORT = 9080
ELASTICSEARCH_PORT = 9200
LOGSTASH_BEATS_PORT = 5044
LOGSTASH_API_PORT = 9600
KIBANA_PORT = 5601
FILEBEAT_HTTP_PORT = 5066  # Filebeat's stats endpoint, bound to 127.0.0.1 in its container

# What Grafana's Elasticsearch datasource reads (index pattern, time field).
GATEWAY_INDEX_PATTERN = "gateway-*"
GATEWAY_TIME_FIELD = "@timestamp"

__all__ = ["ELK_SERVICES", "LOKI_SERVICES", "logging_services", "loki_url", "elasticsearch_url"]


def loki_url(config: LoggingConfig) -> str | None:
    """Loki's address on the stack network (Grafana's datasource), or None when Loki is off."""
    return f"http://loki:{LOKI_PORT}" if config.loki.enabled else None


def elasticsearch_url(config: LoggingConfig) -> str | None:
    """Elasticsearch's address on the stack network, or None when ELK is off."""
    return f"http://elasticsearch:{ELASTICSEARCH_PORT}" if config.elk.enabled else None


def _curl_check(url: str, *, grep: str | None = None, **timing: int) -> HealthCheck:
    # The Elastic images (Ubuntu based) ship curl; Elastic's own compose examples probe with it.
    probe = f"curl -fsS '{url}'" + (f" | grep -q '{grep}'" if grep else " >/dev/null")
    return HealthCheck(test=("CMD-SHELL", probe), **timing)


def logging_services(config: StackConfig) -> list[ServiceSpec]:
    """The logging services of the enabled pipelines, in start order."""
    logging = config.logging
    services: list[ServiceSpec] = []
    if logging.loki.enabled:
        services += [
            ServiceSpec(
                name="loki",
                image=LOKI_IMAGE,
                port=LOKI_PORT,
                tier="logging",
                description=f"Loki, single binary, filesystem storage, {logging.loki.retention_days} days",
                health=http_check(LOKI_PORT, "/ready").model_copy(update={"start_period_s": 30}),
                limits=Limits(memory_mb=512, cpus=0.5),
                min_memory_mb=128,
                metrics=Metrics(),
                stateful=True,  # its chunks and index volume take one server at a time
            ),
            ServiceSpec(
                name="promtail",
                image=PROMTAIL_IMAGE,
                port=PROMTAIL_PORT,
                tier="logging",
                description="Promtail: this stack's container logs to Loki",
                health=bash_http_check(PROMTAIL_PORT, "/ready"),
                limits=Limits(memory_mb=128, cpus=0.25),
                min_memory_mb=48,
                metrics=Metrics(),
                depends_on=("loki",),
                stateful=True,  # two would ship every line twice from one positions file
            ),
        ]
    if logging.elk.enabled:
        heap = logging.elk.heap_mb
        services += [
            ServiceSpec(
                name="elasticsearch",
                image=ELASTICSEARCH_IMAGE,
                port=ELASTICSEARCH_PORT,
                tier="logging",
                description=f"Elasticsearch, single node, {heap} MB heap",
                health=_curl_check(
                    f"http://127.0.0.1:{ELASTICSEARCH_PORT}/_cluster/health?wait_for_status=yellow&timeout=5s",
                    start_period_s=60, retries=10,
                ),
                # Heap is half of the container: the rest is Lucene's file cache and off-heap.
                limits=Limits(memory_mb=heap * 2, cpus=1.0),
                stateful=True,  # its data volume takes one node at a time (node.lock)
                min_memory_mb=heap * 3 // 2,  # the JVM heap and room above it for Lucene
            ),
            ServiceSpec(
                name="logstash",
                image=LOGSTASH_IMAGE,
                port=LOGSTASH_BEATS_PORT,
                tier="logging",
                description="Logstash: parses the gateway's JSON access log into daily indices",
                health=_curl_check(
                    f"http://127.0.0.1:{LOGSTASH_API_PORT}/_node/pipelines/main",
                    start_period_s=90, retries=10,
                ),
                limits=Limits(memory_mb=768, cpus=1.0),
                min_memory_mb=LOGSTASH_HEAP_MB * 3 // 2,
                depends_on=("elasticsearch",),
            ),
            ServiceSpec(
                name="kibana",
                image=KIBANA_IMAGE,
                port=KIBANA_PORT,
                tier="logging",
                description="Kibana over the gateway access-log indices",
                health=_curl_check(
                    f"http://127.0.0.1:{KIBANA_PORT}/api/status", grep='"level":"available"',
                    start_period_s=120, retries=12,
                ),
                limits=Limits(memory_mb=1024, cpus=1.0),
                min_memory_mb=512,  # Node.js; Kibana's own docs ask for more
                host_port=loopback_port(config, "kibana") if logging.elk.publish_kibana else None,
                depends_on=("elasticsearch",),
            ),
            ServiceSpec(
                name="filebeat",
                image=FILEBEAT_IMAGE,
                port=FILEBEAT_HTTP_PORT,
                tier="logging",
                description="Filebeat: the gateway container's JSON log to Logstash",
                health=_curl_check(f"http://127.0.0.1:{FILEBEAT_HTTP_PORT}/", start_period_s=30),
                limits=Limits(memory_mb=192, cpus=0.25),
                min_memory_mb=64,
                depends_on=("logstash",),
                stateful=True,  # its registry volume is locked by one Filebeat at a time
            ),
        ]
    return services
