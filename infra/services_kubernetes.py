"""The stack's k3s server, declared once. Its API (6443) is what the program and Prometheus
talk to; the gateway's `/web/` route goes to `coderz-web`'s NodePort on the same server.

On the local engine the server is a container on the stack network (reached by its alias
`k3s`, API published on the loopback for the program); on an SSH target k3s runs on the host,
reached from the stack network at `k3s.hostAddress`, and by the program through an SSH tunnel.
"""

from __future__ import annotations

from components.spec import HealthCheck, Limits, Route, ServiceSpec
from infra.catalog import loopback_port
from infra.config import StackConfig

K3S_API_PORT = 6443
WEB_ROUTE_PREFIX = "/web/"


def kubernetes_services(config: StackConfig) -> list[ServiceSpec]:
    """[the k3s server] where `k3s.enabled`, else []."""
    k3s = config.k3s
    if not k3s.enabled:
        return []
    on_host = config.target.kind == "ssh"
    return [
        ServiceSpec(
            name="k3s",
            image=k3s.image,
            port=K3S_API_PORT,
            tier="kubernetes",
            description=(f"k3s {k3s.version} " + ("on the host" if on_host else "server container")
                         + f": Kubernetes API, coderz-web on NodePort {k3s.web.node_port}"),
            health=HealthCheck(test=("CMD", "kubectl", "get", "--raw=/readyz"), interval_s=10, retries=12,
                               start_period_s=60),
            limits=Limits(memory_mb=1024, cpus=1.0),
            stateful=True,  # the cluster's datastore volume takes one server at a time
            route=Route(path_prefix=WEB_ROUTE_PREFIX, cache_ttl_s=k3s.web.cache_ttl_s,
                        upstream_host=k3s.host_address if on_host else None, upstream_port=k3s.web.node_port),
            host_port=None if on_host else loopback_port(config, "k3s"),
        )
    ]
