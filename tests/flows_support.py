"""Helpers of the flows tests: a rendered flows config in a temp folder, a real Docker daemon,
a tiny local image, and the states Prefect hands back."""

from __future__ import annotations

import io
import json
import subprocess
import tarfile
from pathlib import Path
from typing import Any

import pytest

from tests.servers import IN_CI, require_tool

DOCKER_SOCKET = "/var/run/docker.sock"


def write_config(folder: Path, monkeypatch, **fields: Any) -> Path:
    """A flows.json like the program renders (minimal defaults), pointed to by the env var."""
    document = {
        "stack": "coderz-flows-test", "schedules": {}, "probes": [], "docker_url": f"unix://{DOCKER_SOCKET}",
        "state_dir": str(folder / "state"), "log_retention_days": 14, "probe_timeout_s": 2,
    }
    document.update(fields)
    path = folder / "flows.json"
    path.write_text(json.dumps(document))
    monkeypatch.setenv("CODERZ_FLOWS_CONFIG", str(path))
    return path


def checks_of(state) -> dict[str, dict[str, Any]]:
    """A finished flow run's checks by name (its data, whether it Completed or Failed)."""
    return {c["name"]: c for c in state.result(raise_on_failure=False)}


def require_docker() -> None:
    """A reachable Docker daemon: skip by hand, fail under CI (scripts/test starts one)."""
    docker = require_tool("docker")
    if subprocess.run([docker, "info"], capture_output=True, timeout=30).returncode != 0:
        message = "the Docker daemon is not running (start it: dockerd &)"
        if IN_CI:
            pytest.fail(message + " -- a missing daemon is a failure under CI=true")
        pytest.skip(message)


def docker(*argv: str, check: bool = True) -> str:
    result = subprocess.run(["docker", *argv], capture_output=True, text=True, timeout=120)
    if check and result.returncode != 0:
        raise AssertionError(f"docker {' '.join(argv)}: {result.stderr}")
    return result.stdout.strip()


def busybox_image(tag: str | None, *, label: str | None = None, applets: tuple[str, ...] = (),
                  changes: tuple[str, ...] = (), extra: tuple[tuple[tarfile.TarInfo, bytes | None], ...] = ()) -> str:
    """Import a one-binary image (busybox-static and its applet links): no pull needed.
    Without a tag the image is dangling. `applets` adds links, `changes` Dockerfile lines
    (`USER 5050`), `extra` more entries (folders, files). Returns the image id."""
    binary = Path(require_tool("busybox")).resolve()
    assert b"ld-linux" not in binary.read_bytes()[:8192], f"{binary} is not static (install busybox-static)"
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        tar.add(str(binary), arcname="bin/busybox")
        for applet in ("sh", "sleep", "true", "false", "echo", *applets):
            link = tarfile.TarInfo(f"bin/{applet}")
            link.type, link.linkname = tarfile.SYMTYPE, "busybox"
            tar.addfile(link)
        for info, data in extra:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    options = [*(["--change", f"LABEL coderz.stack={label}"] if label else []),
               *(option for change in changes for option in ("--change", change))]
    result = subprocess.run(["docker", "import", *options, "-", *([tag] if tag else [])], input=buffer.getvalue(),
                            capture_output=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return result.stdout.decode().strip()
