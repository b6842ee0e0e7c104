"""A small Kubernetes API client (bearer token over HTTPS) and the checks read from its
answers: nodes Ready, deployments at their desired replicas."""

from __future__ import annotations

from typing import Any

import httpx

from flows.config import Kubernetes
from flows.report import Check


class KubernetesApi:
    def __init__(self, settings: Kubernetes, timeout: float = 10.0):
        verify: bool | str = False if settings.insecure else (settings.ca_file or True)
        headers = {"Authorization": f"Bearer {settings.token}"} if settings.token else {}
        self._client = httpx.Client(base_url=settings.url.rstrip("/"), headers=headers, verify=verify, timeout=timeout)

    def get(self, path: str) -> dict[str, Any]:
        response = self._client.get(path)
        response.raise_for_status()
        return response.json()

    def nodes(self) -> dict[str, Any]:
        return self.get("/api/v1/nodes")

    def deployments(self) -> dict[str, Any]:
        return self.get("/apis/apps/v1/deployments")


def node_checks(nodes: dict[str, Any]) -> list[Check]:
    checks = []
    for node in nodes.get("items", []):
        name = node["metadata"]["name"]
        ready = next((c for c in node.get("status", {}).get("conditions", []) if c.get("type") == "Ready"), None)
        ok = ready is not None and ready.get("status") == "True"
        why = "Ready" if ok else f"not Ready ({(ready or {}).get('reason', 'no Ready condition')})"
        checks.append(Check(f"node {name}", ok, why))
    return checks or [Check("nodes", False, "the cluster lists no node")]


def deployment_checks(deployments: dict[str, Any]) -> list[Check]:
    checks = []
    for item in deployments.get("items", []):
        meta, spec, status = item["metadata"], item.get("spec", {}), item.get("status", {})
        desired = spec.get("replicas", 1)
        available = status.get("availableReplicas", 0) or 0
        checks.append(Check(f"deployment {meta.get('namespace', 'default')}/{meta['name']}", available >= desired,
                            f"{available}/{desired} replicas available"))
    return checks
