"""Config files of the logging tier, as pure functions of their inputs.

- `render_loki_config`: Loki 3.1 single binary, TSDB schema v13 on the filesystem, compactor
  retention. Checked against `schemas/loki-3.1.schema.json` in the tests.
- `render_promtail_config`: Docker service discovery on the socket, kept to one stack by the
  `coderz.stack` label (filtered by the Docker API and again by relabelling).
- `render_filebeat_config`: Docker autodiscover; a `container` input on the gateway
  container's json-file log only, shipped to Logstash :5044.
- `render_logstash_pipeline`: beats :5044 -> json/mutate/date (no ruby) -> `gateway-YYYY.MM.dd`.
- `ilm_policy` / `index_template` and `render_es_setup_script`: the retention of the daily
  indices. Logstash's start command runs the script (PUT is idempotent) before Logstash itself,
  so the template exists before the first index of the day is created.

The gateway's access-log fields and their Elasticsearch types are declared once
(`GATEWAY_FIELDS`); the pipeline's conversions and the index mapping both follow from it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Literal

import jinja2

from components.yamltext import dump_yaml

LOKI_DATA_DIR = "/loki"
ILM_POLICY_NAME = "gateway-retention"
INDEX_TEMPLATE_NAME = "gateway"
INDEX_PREFIX = "gateway"
# Logstash's sprintf date of the event's @timestamp (UTC): one index a day.
DAILY_INDEX = INDEX_PREFIX + "-%{+YYYY.MM.dd}"
NOT_JSON_TAG = "_gateway_not_json"
UPSTREAM_TIME_TAG = "_gateway_upstream_time_unparsed"

EsType = Literal["keyword", "integer", "long", "float", "ip", "text"]


@dataclass(frozen=True)
class GatewayField:
    """One key of the gateway's JSON access-log line. `multi`: nginx writes one value per
    upstream tried, "0.010, 0.020" (a colon separates internal redirects); such a value becomes
    a list, and "-" or "" (no upstream: a cache hit, a 429) removes the field."""

    es_type: EsType
    multi: bool = False


GATEWAY_FIELDS: dict[str, GatewayField] = {
    "time": GatewayField("keyword"),  # $time_iso8601; parsed into @timestamp
    "remote_addr": GatewayField("ip"),
    "request_id": GatewayField("keyword"),
    "method": GatewayField("keyword"),
    "uri": GatewayField("keyword"),
    "args": GatewayField("keyword"),
    "host": GatewayField("keyword"),
    "status": GatewayField("integer"),
    "bytes_sent": GatewayField("long"),
    "request_time": GatewayField("float"),
    "upstream_response_time": GatewayField("float", multi=True),
    "upstream_addr": GatewayField("keyword", multi=True),
    "upstream_status": GatewayField("keyword", multi=True),
    "cache_status": GatewayField("keyword"),
    "cache": GatewayField("keyword"),  # the gateway's name for cache_status today
    "route": GatewayField("keyword"),
    "user_agent": GatewayField("text"),
}
_LOGSTASH_CONVERT = {"integer": "integer", "long": "integer", "float": "float"}


def _yaml(data: dict) -> str:
    return dump_yaml(data)


@cache
def _templates() -> jinja2.Environment:
    folder = resources.files("components.logging") / "templates"
    return jinja2.Environment(
        loader=jinja2.FunctionLoader(lambda name: (folder / name).read_text()),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        autoescape=False,
    )


# --- Loki ---------------------------------------------------------------------------------

def render_loki_config(retention_days: int, *, http_port: int = 3100, data_dir: str = LOKI_DATA_DIR) -> str:
    """Loki 3.1 single binary: filesystem chunks and TSDB index under `data_dir` (a volume),
    retention by the compactor after `retention_days` (a multiple of the 24h index period)."""
    if retention_days < 1:
        raise ValueError("Loki retention is at least one day")
    retention = f"{retention_days * 24}h"
    return _yaml({
        "auth_enabled": False,  # one tenant ("fake"); Loki is reachable only on the stack network
        "server": {"http_listen_port": http_port, "grpc_listen_port": 9096, "log_level": "info"},
        "common": {
            "instance_addr": "127.0.0.1",
            "path_prefix": data_dir,
            "storage": {
                "filesystem": {
                    "chunks_directory": f"{data_dir}/chunks",
                    "rules_directory": f"{data_dir}/rules",
                }
            },
            "replication_factor": 1,
            "ring": {"kvstore": {"store": "inmemory"}},
        },
        "schema_config": {
            "configs": [
                {
                    "from": "2024-01-01",
                    "store": "tsdb",
                    "object_store": "filesystem",
                    "schema": "v13",
                    "index": {"prefix": "index_", "period": "24h"},
                }
            ]
        },
        "compactor": {
            "working_directory": f"{data_dir}/compactor",
            "compaction_interval": "10m",
            "retention_enabled": True,
            "retention_delete_delay": "2h",
            "retention_delete_worker_count": 50,
            # Required with retention_enabled since Loki 3.0 (shared_store was removed).
            "delete_request_store": "filesystem",
        },
        "limits_config": {
            "retention_period": retention,
            "reject_old_samples": True,
            "reject_old_samples_max_age": f"{min(retention_days, 7) * 24}h",
            "ingestion_rate_mb": 4,
            "ingestion_burst_size_mb": 8,
            "max_query_lookback": retention,
        },
        "query_range": {"results_cache": {"cache": {"embedded_cache": {"enabled": True, "max_size_mb": 64}}}},
        "analytics": {"reporting_enabled": False},
    })


# --- Promtail -----------------------------------------------------------------------------

def render_promtail_config(
    stack: str,
    loki_push_url: str,
    *,
    docker_host: str = "unix:///var/run/docker.sock",
    positions_file: str = "/var/lib/promtail/positions.yaml",
    http_port: int = 9080,
) -> str:
    """Promtail: every container labelled `coderz.stack=<stack>`, to Loki with the labels
    `stack`, `service` (label `coderz.service`), `container` (name) and `stream`."""
    return _yaml({
        "server": {"http_listen_port": http_port, "grpc_listen_port": 0, "log_level": "info"},
        "positions": {"filename": positions_file},
        "clients": [{"url": loki_push_url}],
        "scrape_configs": [
            {
                "job_name": "docker",
                "docker_sd_configs": [
                    {
                        "host": docker_host,
                        "refresh_interval": "15s",
                        # The Docker API lists only this stack's containers...
                        "filters": [{"name": "label", "values": [f"coderz.stack={stack}"]}],
                    }
                ],
                "relabel_configs": [
                    # ...and the relabelling keeps nothing else, should the filter be dropped.
                    {
                        "source_labels": ["__meta_docker_container_label_coderz_stack"],
                        "regex": _re_literal(stack),
                        "action": "keep",
                    },
                    {"source_labels": ["__meta_docker_container_label_coderz_stack"], "target_label": "stack"},
                    {"source_labels": ["__meta_docker_container_label_coderz_service"], "target_label": "service"},
                    {"source_labels": ["__meta_docker_container_name"], "regex": "/?(.*)", "target_label": "container"},
                    {"source_labels": ["__meta_docker_container_log_stream"], "target_label": "stream"},
                ],
            }
        ],
    })


def _re_literal(text: str) -> str:
    # Prometheus relabel regexes are RE2, anchored; stack names are [a-z0-9-], escape anyway.
    return "".join("\\" + c if c in ".^$*+?()[]{}|\\" else c for c in text)


# --- Filebeat -----------------------------------------------------------------------------

def render_filebeat_config(
    gateway_container: str,
    *,
    logstash_hosts: tuple[str, ...] = ("logstash:5044",),
    containers_dir: str = "/var/lib/docker/containers",
    docker_host: str = "unix:///var/run/docker.sock",
    http_port: int = 5066,
) -> str:
    """Filebeat: a `container` input on the json-file log of `gateway_container` (its stdout,
    the access log; the error log on stderr goes to Loki), found by Docker autodiscover."""
    return _yaml({
        "filebeat.autodiscover": {
            "providers": [
                {
                    "type": "docker",
                    "host": docker_host,
                    "templates": [
                        {
                            "condition": {"equals": {"docker.container.name": gateway_container}},
                            "config": [
                                {
                                    "type": "container",
                                    "paths": [f"{containers_dir}/${{data.docker.container.id}}/*.log"],
                                    "stream": "stdout",
                                }
                            ],
                        }
                    ],
                }
            ]
        },
        "output.logstash": {"hosts": list(logstash_hosts)},
        # Stats endpoint for the container's health check, inside the container only.
        "http.enabled": True,
        "http.host": "127.0.0.1",
        "http.port": http_port,
        "logging.level": "info",
        "logging.metrics.enabled": False,
    })


# --- Logstash and Elasticsearch -----------------------------------------------------------

def render_logstash_pipeline(elasticsearch_url: str, *, beats_port: int = 5044) -> str:
    """The one pipeline (`main`): the gateway's JSON line into typed fields, daily indices."""
    multi = [name for name, f in GATEWAY_FIELDS.items() if f.multi]
    convert = {name: _LOGSTASH_CONVERT[f.es_type] for name, f in GATEWAY_FIELDS.items()
               if f.es_type in _LOGSTASH_CONVERT and not f.multi}
    multi_convert = {name: _LOGSTASH_CONVERT[f.es_type] for name, f in GATEWAY_FIELDS.items()
                     if f.es_type in _LOGSTASH_CONVERT and f.multi}
    return _templates().get_template("logstash.conf.j2").render(
        beats_port=beats_port,
        elasticsearch_url=elasticsearch_url,
        index=DAILY_INDEX,
        multi_fields=multi,
        convert=convert,
        multi_convert=multi_convert,
        not_json_tag=NOT_JSON_TAG,
        upstream_time_tag=UPSTREAM_TIME_TAG,
    )


def ilm_policy(retention_days: int) -> dict:
    """Delete a daily index `retention_days` after its date (parsed from the name)."""
    if retention_days < 1:
        raise ValueError("index retention is at least one day")
    return {
        "policy": {
            "_meta": {"managed_by": "coderz-infra", "retention_days": retention_days},
            "phases": {
                "hot": {"min_age": "0ms", "actions": {}},
                "delete": {"min_age": f"{retention_days}d", "actions": {"delete": {}}},
            },
        }
    }


def index_template(policy_name: str = ILM_POLICY_NAME) -> dict:
    """Composable template for `gateway-*`: one shard, no replica (single node), the ILM
    policy, and the mapping of `GATEWAY_FIELDS` (malformed numbers are dropped, not the line)."""
    properties: dict[str, dict] = {"@timestamp": {"type": "date"}}
    for name, f in GATEWAY_FIELDS.items():
        if f.es_type == "keyword":
            properties[name] = {"type": "keyword", "ignore_above": 2048}
        elif f.es_type == "text":
            properties[name] = {"type": "text", "fields": {"keyword": {"type": "keyword", "ignore_above": 512}}}
        else:
            properties[name] = {"type": f.es_type, "ignore_malformed": True}
    return {
        "index_patterns": [f"{INDEX_PREFIX}-*"],
        "priority": 200,
        "template": {
            "settings": {
                "index.number_of_shards": 1,
                "index.number_of_replicas": 0,
                "index.lifecycle.name": policy_name,
                # Age counts from the date in `gateway-YYYY.MM.dd`, not from index creation.
                "index.lifecycle.parse_origination_date": True,
            },
            "mappings": {"properties": properties},
        },
        "_meta": {"managed_by": "coderz-infra"},
    }


def render_ilm_policy(retention_days: int) -> str:
    return json.dumps(ilm_policy(retention_days), indent=2) + "\n"


def render_index_template(policy_name: str = ILM_POLICY_NAME) -> str:
    return json.dumps(index_template(policy_name), indent=2) + "\n"


def render_es_setup_script() -> str:
    """POSIX sh + curl: wait for Elasticsearch, PUT the policy and the template (files beside
    the script). `ES_URL` and `ES_WAIT_S` come from the environment."""
    return _templates().get_template("es-setup.sh.j2").render(
        policy_name=ILM_POLICY_NAME,
        template_name=INDEX_TEMPLATE_NAME,
        policy_file="ilm-policy.json",
        template_file="index-template.json",
    )
