"""A small Kubernetes API client and the checks read from its answers: nodes Ready,
deployments at their desired replicas.

It reaches the API either from a URL and a bearer token (`KUBERNETES_TOKEN`), or from a
kubeconfig file (k3s writes one: server, CA and client certificate), whichever the rendered
file names.
"""

from __future__ import annotations

import base64
import ssl
import tempfile
from pathlib import Path
from typing import Any

import httpx
import yaml

from flows.config import Kubernetes
from flows.report import Check


def _from_kubeconfig(path: str) -> tuple[str, ssl.SSLContext | bool, dict[str, str]]:
    """(server URL, TLS context, headers) of the kubeconfig's current context."""
    document = yaml.safe_load(Path(path).read_text())
    current = document.get("current-context")
    context = next(c["context"] for c in document["contexts"] if c["name"] == current) if current \
        else document["contexts"][0]["context"]
    cluster = next(c["cluster"] for c in document["clusters"] if c["name"] == context["cluster"])
    user = next(u["user"] for u in document["users"] if u["name"] == context["user"])
    tls: ssl.SSLContext | bool = False
    if not cluster.get("insecure-skip-tls-verify"):
        tls = ssl.create_default_context()
        if "certificate-authority-data" in cluster:
            tls.load_verify_locations(cadata=base64.b64decode(cluster["certificate-authority-data"]).decode())
        elif "certificate-authority" in cluster:
            tls.load_verify_locations(cafile=cluster["certificate-authority"])
    if "client-certificate-data" in user:
        if tls is False:
            tls = ssl.create_default_context()
            tls.check_hostname, tls.verify_mode = False, ssl.CERT_NONE
        # ssl reads a key pair from files only: a private temp folder, gone when loaded
        with tempfile.TemporaryDirectory() as folder:
            cert, key = Path(folder) / "client.crt", Path(folder) / "client.key"
            cert.write_bytes(base64.b64decode(user["client-certificate-data"]))
            key.write_bytes(base64.b64decode(user["client-key-data"]))
            tls.load_cert_chain(cert, key)
    headers = {"Authorization": f"Bearer {user['token']}"} if user.get("token") else {}
    return cluster["server"], tls, headers


class KubernetesApi:
    def __init__(self, settings: Kubernetes, timeout: float = 10.0):
        if settings.kubeconfig_file:
            url, verify, headers = _from_kubeconfig(settings.kubeconfig_file)
        else:
            url = settings.url or ""
            verify = False if settings.insecure else (settings.ca_file or True)
            headers = {"Authorization": f"Bearer {settings.token}"} if settings.token else {}
        self._client = httpx.Client(base_url=url.rstrip("/"), headers=headers, verify=verify, timeout=timeout)

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
