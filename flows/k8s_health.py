"""k8s-health: the stack's k3s cluster through its API; a stack without k3s reports
"not deployed" and passes."""

from __future__ import annotations

import httpx
from prefect import flow

from flows.config import load_config
from flows.kubernetes import KubernetesApi, deployment_checks, node_checks
from flows.report import Check, finish


@flow(name="k8s-health")
def k8s_health():
    config = load_config()
    if config.kubernetes is None:
        return finish("k8s-health", config, [Check("kubernetes", True, "not deployed on this stack")])
    api = KubernetesApi(config.kubernetes)
    try:
        checks = node_checks(api.nodes()) + deployment_checks(api.deployments())
    except (httpx.HTTPError, ValueError, KeyError) as exc:
        checks = [Check("kubernetes", False, f"API at {config.kubernetes.url} did not answer: {exc}")]
    return finish("k8s-health", config, checks)
