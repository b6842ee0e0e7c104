"""The Prefect server started with the settings our component gives its container (read from
the registered container under mocks), on this machine's Prefect (the same version as the
image): the UI answers under /prefect/, the API under /prefect/api behind basic auth, and the
health endpoint the container's health check calls answers without it. Only the database
differs: SQLite in a temp folder instead of the stack's PostgreSQL."""

from __future__ import annotations

import base64
import json
import shutil
import sys

from tests.mocks import deploy_stack, service_of
from tests.servers import free_port, http, process, require_module, scratch_dir

AUTH = "admin:generated-prefect-api-auth"


def server_env() -> dict[str, str]:
    monitor, _ = deploy_stack("dev")
    (server,) = [c for c in monitor.of_type("docker:index/container:Container")
                 if service_of(c) == "prefect-server"]
    return dict(e.split("=", 1) for e in server.plain["envs"])


def test_the_server_serves_ui_and_api_under_prefect_with_basic_auth():
    require_module("prefect")
    env = server_env()
    assert env["PREFECT_SERVER_API_AUTH_STRING"] == AUTH
    port, folder = free_port(), scratch_dir("prefect-server-")
    env.update(PREFECT_SERVER_API_HOST="127.0.0.1", PREFECT_SERVER_API_PORT=str(port), PREFECT_HOME=str(folder),
               PREFECT_API_DATABASE_CONNECTION_URL=f"sqlite+aiosqlite:///{folder}/prefect.db",
               PREFECT_SERVER_ANALYTICS_ENABLED="false", PREFECT_API_URL="", PREFECT_LOGGING_LEVEL="WARNING")
    base = f"http://127.0.0.1:{port}"
    try:
        with process([sys.executable, "-m", "prefect", "server", "start", "--no-services"], port=port, env=env,
                     log=folder / "server.log", timeout=90):
            assert http("GET", f"{base}/prefect/api/health", timeout=30)[:3:2] == (200, b"true")
            status, headers, page = http("GET", f"{base}/prefect/")
            assert status == 200 and "text/html" in headers["content-type"] and b"/prefect/" in page
            status, _, settings = http("GET", f"{base}/prefect/ui-settings")
            assert status == 200 and json.loads(settings)["api_url"] == "/prefect/api"
            body, kind = b"{}", {"Content-Type": "application/json"}
            assert http("POST", f"{base}/prefect/api/flows/filter", body=body, headers=kind)[0] == 401
            wrong = {**kind, "Authorization": "Basic " + base64.b64encode(b"admin:guess").decode()}
            assert http("POST", f"{base}/prefect/api/flows/filter", body=body, headers=wrong)[0] == 401
            right = {**kind, "Authorization": "Basic " + base64.b64encode(AUTH.encode()).decode()}
            assert http("POST", f"{base}/prefect/api/flows/filter", body=body, headers=right)[0] == 200
            assert http("GET", f"{base}/api/health")[0] != 200  # the API lives under /prefect/api only
    finally:
        shutil.rmtree(folder, ignore_errors=True)
