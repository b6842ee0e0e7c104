"""k8s-health: the stack's k3s cluster through its API; a stack without k3s reports
"not deployed" and passes."""

from __future__ import annotations

import httpx
import yaml
from prefect import flow

from flows.config import load_config
from flows.kubernetes import KubernetesApi, deployment_checks, node_checks
from flows.report import Check, finish


@flow(name="k8s-health")
def k8s_health():
    config = load_config()
    if config.kubernetes is None:
        return finish("k8s-health", config, [Check("kubernetes", True, "not deployed on this stack")])
    where = config.kubernetes.url or config.kubernetes.kubeconfig_file
    try:
        api = KubernetesApi(config.kubernetes)
        checks = node_checks(api.nodes()) + deployment_checks(api.deployments())
    except (httpx.HTTPError, OSError, ValueError, KeyError, StopIteration, yaml.YAMLError) as exc:
        checks = [Check("kubernetes", False, f"API at {where} did not answer: {exc.__class__.__name__}: {exc}")]
    return finish("k8s-health", config, checks)
