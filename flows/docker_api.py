"""The few Docker Engine API calls the flows make: container list, inspect and prune, image
prune. The socket proxy in front of the daemon lets only these API sections through
(components/prefect/render.py).

Every call is scoped by the stack's label (`coderz.stack=<prefix>`), so a flow never sees or
touches another stack's containers or images, and never volumes.
"""

from __future__ import annotations

import json
from typing import Any

import httpx

LABEL = "coderz.stack"


class DockerApi:
    def __init__(self, url: str, stack: str, timeout: float = 30.0):
        if url.startswith("unix://"):
            transport = httpx.HTTPTransport(uds=url.removeprefix("unix://"))
            self._client = httpx.Client(transport=transport, base_url="http://docker", timeout=timeout)
        else:
            self._client = httpx.Client(base_url=url.replace("tcp://", "http://").rstrip("/"), timeout=timeout)
        self.stack = stack
        # (method, path) of every request: a test checks each against the proxy's rules
        self.calls: list[tuple[str, str]] = []

    def _request(self, method: str, path: str, filters: dict[str, list[str]], **params: str) -> Any:
        self.calls.append((method, path))
        response = self._client.request(method, path, params={"filters": json.dumps(filters), **params})
        response.raise_for_status()
        return response.json()

    def _label(self) -> list[str]:
        return [f"{LABEL}={self.stack}"]

    def containers(self) -> list[dict[str, Any]]:
        """This stack's containers, running or not."""
        return self._request("GET", "/containers/json", {"label": self._label()}, all="1")

    def inspect(self, container_id: str) -> dict[str, Any]:
        # The list omits RestartCount; only inspect has it.
        self.calls.append(("GET", f"/containers/{container_id}/json"))
        response = self._client.get(f"/containers/{container_id}/json")
        response.raise_for_status()
        return response.json()

    def prune_containers(self) -> dict[str, Any]:
        """Remove this stack's stopped containers (never running ones, never volumes)."""
        return self._request("POST", "/containers/prune", {"label": self._label()})

    def prune_images(self) -> dict[str, Any]:
        """Remove dangling images that carry this stack's label."""
        return self._request("POST", "/images/prune", {"label": self._label(), "dangling": ["true"]})
