"""weekly-cleanup: this stack's stopped containers and dangling images, and the runner's own
log files older than the retention window. Never volumes, never another stack's objects."""

from __future__ import annotations

import time

import httpx
from prefect import flow

from flows.config import FlowsConfig, load_config
from flows.docker_api import DockerApi
from flows.report import Check, finish


def old_logs(config: FlowsConfig) -> list[str]:
    """Delete `*.log` files under the log folder older than the retention; their names."""
    cutoff = time.time() - config.log_retention_days * 86_400
    removed = []
    for path in sorted(config.log_dir.glob("*.log")) if config.log_dir.is_dir() else []:
        if path.is_file() and not path.is_symlink() and path.stat().st_mtime < cutoff:
            path.unlink()
            removed.append(path.name)
    return removed


@flow(name="weekly-cleanup")
def weekly_cleanup():
    config = load_config()
    api = DockerApi(config.docker_url, config.stack)
    checks = []
    try:
        containers = api.prune_containers()
        images = api.prune_images()
        gone = containers.get("ContainersDeleted") or []
        checks.append(Check("containers", True, f"removed {len(gone)} stopped container(s) of {config.stack}"))
        freed = (containers.get("SpaceReclaimed", 0) + images.get("SpaceReclaimed", 0)) // (1024 * 1024)
        checks.append(Check("images", True, f"removed {len(images.get('ImagesDeleted') or [])} dangling image layer(s); {freed} MiB freed"))
    except (httpx.HTTPError, OSError) as exc:
        checks.append(Check("docker", False, f"Docker API at {config.docker_url} did not answer: {exc}"))
    removed = old_logs(config)
    checks.append(Check("logs", True, f"removed {len(removed)} log file(s) older than {config.log_retention_days} days"))
    return finish("weekly-cleanup", config, checks)
