"""The stack's log pipelines: Promtail -> Loki -> Grafana, and Filebeat -> Logstash ->
Elasticsearch -> Kibana for the gateway's access log. See component.py and render.py."""

from components.logging.component import ELK_SERVICES, LOKI_SERVICES, Logging, LoggingArgs

__all__ = ["ELK_SERVICES", "LOKI_SERVICES", "Logging", "LoggingArgs"]
