"""The k3s settings, as a stack file states them (`coderz:k3s`); infra/config.py composes them."""

from __future__ import annotations

from pydantic import Field, model_validator

from components.spec import Frozen, Limits, PinnedImage

# Kubernetes' default NodePort range (--service-node-port-range).
NODE_PORTS = (30000, 32767)


class WebConfig(Frozen):
    """The `coderz-web` Deployment: a static web server running as non-root on a read-only root."""

    image: PinnedImage = "nginxinc/nginx-unprivileged:1.27.2-alpine"
    replicas: int = Field(default=2, ge=1, le=50)
    # The container listens here (nginx-unprivileged's default); the Service maps it to nodePort.
    container_port: int = Field(default=8080, ge=1024, le=65535)
    node_port: int = Field(default=30080, ge=NODE_PORTS[0], le=NODE_PORTS[1])
    limits: Limits = Limits(memory_mb=64, cpus=0.25)
    cache_ttl_s: int = Field(default=30, ge=0, le=86_400)


class K3sConfig(Frozen):
    """`coderz:k3s`: off in dev by default; qa and prod turn it on in their stack files."""

    enabled: bool = False
    # A k3s release tag exactly as published (v1.31.2+k3s1); the container image uses '-' for '+'.
    version: str = Field(default="v1.31.2+k3s1", pattern=r"^v1\.\d{2}\.\d{1,2}\+k3s\d$")
    web: WebConfig = WebConfig()
    kube_state_metrics_image: PinnedImage = "registry.k8s.io/kube-state-metrics/kube-state-metrics:v2.13.0"
    kube_state_metrics_node_port: int = Field(default=30081, ge=NODE_PORTS[0], le=NODE_PORTS[1])
    # SSH targets: where containers on the stack network reach the host's k3s (the docker0
    # bridge gateway by default; containers route to it through the host).
    host_address: str = Field(default="172.17.0.1", pattern=r"^(\d{1,3})(\.\d{1,3}){3}$")

    @model_validator(mode="after")
    def _distinct_node_ports(self) -> "K3sConfig":
        if self.web.node_port == self.kube_state_metrics_node_port:
            raise ValueError("web.nodePort and kubeStateMetricsNodePort must differ")
        if any(int(octet) > 255 for octet in self.host_address.split(".")):
            raise ValueError("hostAddress is not an IPv4 address")
        return self

    @property
    def image(self) -> str:
        """The pinned `rancher/k3s` image of `version` (its tags spell '+' as '-')."""
        return f"rancher/k3s:{self.version.replace('+', '-')}"

    @property
    def kubernetes_minor(self) -> str:
        """The Kubernetes release the version ships (1.31), for schema validation."""
        return ".".join(self.version[1:].split(".")[:2])
