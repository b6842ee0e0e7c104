"""What the flows runner is given, derived from the declarations: the one flows config file
(health probes of every declared service, Prometheus and Alertmanager, thresholds, SMTP,
schedules, retention) and the socket proxy's allowlist of Docker API calls.

No password is ever written here: the runner reads those from secret environment variables.
"""

from __future__ import annotations

import json
import re
from typing import Any

from components.container import container_names
from components.monitoring.settings import AlertThresholds, SmtpConfig
from components.prefect.settings import PrefectConfig
from components.spec import Catalog, Frozen, ServiceSpec

CONFIG_PATH = "/etc/coderz/flows.json"
KUBECONFIG_PATH = "/etc/coderz/kubeconfig"
STATE_DIR = "/var/lib/coderz-flows"
STACK_LABEL = "coderz.stack"

# How a health check names its endpoint: a URL on the container's loopback (wget, Python),
# or bash's /dev/tcp with a request line. Anything else is probed as a TCP port.
_URL = re.compile(r"http://127\.0\.0\.1:(\d+)(/[^'\"\s]*)")
_BASH_PORT = re.compile(r"/dev/tcp/127\.0\.0\.1/(\d+)")
_BASH_PATH = re.compile(r"GET (/\S*) HTTP")

# The Docker API sections the flows use (flows/docker_api.py): container list/inspect/prune and
# image prune. The proxy refuses every other section (volumes, networks, exec, build, ...), and
# every method but GET/HEAD unless POST is on. POST is needed for the two prunes; it also opens
# POST on these two sections (create, start, ...): the proxy answers the runner alone, on the
# stack's private network.
SOCKET_PROXY_SECTIONS = {"CONTAINERS": "1", "IMAGES": "1", "POST": "1", "PING": "1"}
# Sections on by default in the image that the flows do not use.
SOCKET_PROXY_OFF = ("EVENTS", "VERSION", "INFO", "NETWORKS", "VOLUMES", "EXEC", "BUILD", "SYSTEM", "AUTH",
                    "SECRETS", "SERVICES", "TASKS", "NODES", "SWARM", "PLUGINS", "DISTRIBUTION", "COMMIT",
                    "CONFIGS", "SESSION", "ALLOW_START", "ALLOW_STOP", "ALLOW_RESTARTS")
_VERSION = r"(/v[0-9.]+)?"
# What the proxy lets through, as its rules read (section prefix, allowed methods).
DOCKER_ALLOW = {
    "GET": _VERSION + r"/(_ping|containers|images)(/.*)?",
    "POST": _VERSION + r"/(containers|images)(/.*)?",
}


class KubernetesApi(Frozen):
    """Where k8s-health reads the cluster: a kubeconfig file (uploaded as a secret file), or a
    URL whose bearer token is a secret env var of the runner."""

    url: str | None = None
    ca_file: str | None = None
    insecure: bool = False
    kubeconfig_file: str | None = None


def probe(spec: ServiceSpec, *, reached: bool = True) -> dict[str, Any]:
    """The service's health endpoint, reached from another container: its health check's URL
    with the service's host instead of 127.0.0.1; TCP on its port where the check is no HTTP.
    A service nothing reaches over the network (`reached` False) may serve its health on its
    own loopback (Filebeat does): there the flow reads Docker's verdict of the same check."""
    if not reached:
        return {"kind": "docker"}
    text = " ".join(spec.health.test)
    url, bash_port, bash_path = _URL.search(text), _BASH_PORT.search(text), _BASH_PATH.search(text)
    if url:
        return {"kind": "http", "port": int(url.group(1)), "path": url.group(2)}
    if bash_port and bash_path:
        return {"kind": "http", "port": int(bash_port.group(1)), "path": bash_path.group(1)}
    return {"kind": "tcp", "port": spec.port}


def reached_over_network(catalog: Catalog, spec: ServiceSpec) -> bool:
    """Routed, scraped, published, or depended on: something talks to it over the network."""
    dependents = {d for s in catalog.services for d in s.depends_on}
    return bool(spec.route or spec.metrics or spec.public_ports or spec.host_port or spec.name in dependents)


def probes(catalog: Catalog, prefix: str) -> list[dict[str, Any]]:
    """One probe per container of every declared service (replicas by their own names)."""
    return [
        # a service on the host itself (k3s over SSH) is reached where the gateway reaches it
        {"service": spec.name, "container": name, "host": (spec.route and spec.route.upstream_host) or name,
         **probe(spec, reached=reached_over_network(catalog, spec))}
        for spec in catalog.services
        for name in container_names(prefix, spec)
    ]


def socket_proxy_env() -> list[str]:
    """tecnativa/docker-socket-proxy's switches: the flows' sections on, every other one off."""
    return [f"{k}={v}" for k, v in SOCKET_PROXY_SECTIONS.items()] + [f"{k}=0" for k in SOCKET_PROXY_OFF]


def render_flows_config(
    catalog: Catalog,
    *,
    prefix: str,
    prefect: PrefectConfig,
    thresholds: AlertThresholds | None,
    smtp: SmtpConfig | None,
    docker_url: str,
    backup_metric: str | None = None,
    kubernetes: KubernetesApi | None = None,
    state_dir: str = STATE_DIR,
) -> str:
    """flows.json: everything the flows know about the stack, from the same declarations."""

    def url(service: str) -> str | None:
        return f"http://{service}:{catalog.get(service).port}" if service in catalog else None

    document = {
        "stack": prefix,
        "schedules": prefect.flows.effective(),
        "probes": probes(catalog, prefix),
        "prometheus_url": url("prometheus"),
        "alertmanager_url": url("alertmanager"),
        "thresholds": thresholds.model_dump() if thresholds is not None else {},
        "backup_metric": backup_metric,
        "smtp": None if smtp is None else {
            "host": smtp.host, "port": smtp.port, "user": smtp.user, "from_address": smtp.from_address,
            "to": list(smtp.to), "starttls": smtp.starttls,
        },
        "docker_url": docker_url,
        "kubernetes": kubernetes.model_dump() if kubernetes is not None else None,
        "state_dir": state_dir,
        "log_retention_days": prefect.log_retention_days,
        "probe_timeout_s": prefect.probe_timeout_s,
    }
    return json.dumps(document, indent=2, sort_keys=True) + "\n"
