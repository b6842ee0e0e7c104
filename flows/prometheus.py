"""Instant PromQL queries, and the host expressions (node exporter series) the flows share."""

from __future__ import annotations

import httpx

# Percent used, per instance (disk: the fullest real filesystem).
HOST_EXPRESSIONS = {
    "cpu": '100 * (1 - avg by (instance) (rate(node_cpu_seconds_total{mode="idle"}[5m])))',
    "memory": "100 * (1 - node_memory_MemAvailable_bytes / node_memory_MemTotal_bytes)",
    "disk": '100 * max by (instance) (1 - node_filesystem_avail_bytes{fstype!~"tmpfs|overlay|squashfs|nsfs|ramfs"}'
            ' / node_filesystem_size_bytes{fstype!~"tmpfs|overlay|squashfs|nsfs|ramfs"})',
}


class Unreachable(Exception):
    """Prometheus did not answer, or answered with an error: a finding, not a crash."""


def query(url: str, promql: str, timeout: float = 10.0) -> list[tuple[dict[str, str], float]]:
    try:
        response = httpx.get(f"{url.rstrip('/')}/api/v1/query", params={"query": promql}, timeout=timeout)
        body = response.json()
    except (httpx.HTTPError, ValueError) as exc:
        raise Unreachable(f"Prometheus at {url} did not answer: {exc}") from None
    if response.status_code != 200 or body.get("status") != "success":
        raise Unreachable(f"Prometheus at {url} refused {promql!r}: {body.get('error', response.status_code)}")
    return [(item["metric"], float(item["value"][1])) for item in body["data"]["result"]]
