"""A real pgAdmin 4 (PyPI's `pgadmin4`, the release of the pinned dpage/pgadmin4 image) in SERVER
mode on 127.0.0.1, set up the way the image's entrypoint does it, and a small client of its
HTTP API.

pgAdmin pins its own dependencies (Flask, SQLAlchemy, psycopg...), so it lives in a venv of its
own, kept in the user's cache and keyed by release and Python: `scripts/test` makes it
(`python -m tests.pgadmin_server`, minutes of pip), the tests only use it.
"""

from __future__ import annotations

import contextlib
import http.cookiejar
import json
import os
import re
import shutil
import subprocess
import sys
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Iterator

from components.pgadmin.settings import CONFIG, PgAdminConfig
from tests.servers import free_port, missing, process

VERSION = PgAdminConfig().image.rsplit(":", 1)[1]
CACHE = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "coderz-infra"
VENV = CACHE / f"pgadmin4-{VERSION}-py{sys.version_info.major}{sys.version_info.minor}"
READY = VENV / ".installed"


def install() -> Path:
    """Make the venv unless it is there. The marker is written last: a half-made venv (an
    interrupted pip) has none and is made again."""
    if READY.exists():
        return VENV
    shutil.rmtree(VENV, ignore_errors=True)
    CACHE.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
    # pgAdmin 8.12 pins typer 0.12.5 but not click: click 8.2+ breaks that typer (its setup.py
    # CLI fails with "Secondary flag is not valid"); the image was built with click 8.1.
    subprocess.run([str(VENV / "bin" / "pip"), "install", "-q", "--disable-pip-version-check", f"pgadmin4=={VERSION}",
                    "click<8.2"], check=True)
    READY.write_text(VERSION + "\n")
    return VENV


def pgadmin_home() -> Path | None:
    """The pgadmin4 package folder (setup.py, pgAdmin4.py) of the cached venv, if made."""
    if not READY.exists():
        return None
    found = sorted(VENV.glob("lib/python*/site-packages/pgadmin4/pgAdmin4.py"))
    return found[0].parent if found else None


def config_local(data_dir: Path, port: int) -> str:
    """config_local.py: SERVER mode, every path in `data_dir`, the image's PGADMIN_CONFIG_* settings."""
    lines = [
        "SERVER_MODE = True",
        f"DATA_DIR = {str(data_dir)!r}",
        f"SQLITE_PATH = {str(data_dir / 'pgadmin4.db')!r}",
        f"SESSION_DB_PATH = {str(data_dir / 'sessions')!r}",
        f"STORAGE_DIR = {str(data_dir / 'storage')!r}",
        f"LOG_FILE = {str(data_dir / 'pgadmin4.log')!r}",
        "DEFAULT_SERVER = '127.0.0.1'",
        f"DEFAULT_SERVER_PORT = {port}",
        *(f"{key} = {value}" for key, value in CONFIG.items()),
    ]
    return "\n".join(lines) + "\n"


class PgAdmin:
    """pgAdmin set up in `work`: its config, its SQLite database and its admin user."""

    def __init__(self, home: Path, work: Path, email: str, password: str):
        self.home, self.work, self.email, self.password = home, work, email, password
        self.port = free_port()
        self.data = work / "data"
        conf = work / "conf"
        conf.mkdir(parents=True)
        (conf / "config_local.py").write_text(config_local(self.data, self.port))
        # pgAdmin imports config_local from the path; the shared venv stays untouched
        self.env = {"PYTHONPATH": str(conf), "PGADMIN_SETUP_EMAIL": email, "PGADMIN_SETUP_PASSWORD": password}
        self.python = str(VENV / "bin" / "python")

    def setup(self, *args: str) -> subprocess.CompletedProcess:
        """`setup.py ARGS` as the entrypoint runs it."""
        return subprocess.run([self.python, str(self.home / "setup.py"), *args], cwd=self.home,
                              env={**os.environ, **self.env}, capture_output=True, text=True, timeout=120)

    @contextlib.contextmanager
    def running(self) -> Iterator[str]:
        """pgAdmin's web app on its port; yields its base URL."""
        with process([self.python, str(self.home / "pgAdmin4.py")], port=self.port, cwd=self.home, env=self.env,
                      log=self.work / "pgadmin.out", timeout=60):
            yield f"http://127.0.0.1:{self.port}"


class Client:
    """A browser session on pgAdmin's API: cookies, and the CSRF token its forms carry."""

    def __init__(self, base: str):
        self.base = base
        self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()))
        self.csrf = ""

    def request(self, method: str, path: str, *, form: dict | None = None, body: dict | None = None,
                timeout: float = 30) -> tuple[int, bytes]:
        headers = {"X-pgA-CSRFToken": self.csrf} if self.csrf else {}
        data = None
        if form is not None:
            data = urllib.parse.urlencode(form).encode()
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        elif body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        request = urllib.request.Request(self.base + path, data=data, method=method, headers=headers)
        try:
            with self.opener.open(request, timeout=timeout) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as err:
            return err.code, err.read()

    def json(self, method: str, path: str, **kwargs) -> tuple[int, dict]:
        status, raw = self.request(method, path, **kwargs)
        return status, json.loads(raw) if raw.strip().startswith(b"{") else {"raw": raw.decode(errors="replace")}

    def login(self, email: str, password: str) -> int:
        """Log in as the browser does; returns the login's status. The login form's CSRF token
        is in the page's props; the app's (sent as X-pgA-CSRFToken) in /browser/js/utils.js."""
        _, page = self.request("GET", "/login")
        status, _ = self.request("POST", "/authenticate/login", form={
            "csrf_token": _token(rb'"csrfToken": "([^"]+)"', page), "email": email, "password": password,
            "language": "en", "internal_button": "Login"})
        _, script = self.request("GET", "/browser/js/utils.js")
        self.csrf = _token(rb"pgAdmin\['csrf_token'\] = '([^']+)'", script)
        return status


def _token(pattern: bytes, text: bytes) -> str:
    found = re.search(pattern, text)
    if found is None:
        raise AssertionError(f"no CSRF token in pgAdmin's answer: {text[:200]!r}")
    return found.group(1).decode()


def require_pgadmin() -> Path:
    """The pgadmin4 folder of the cached venv; skip (by hand) or fail (CI) without it."""
    home = pgadmin_home()
    if home is None:
        missing(f"pgAdmin {VERSION} is not installed in {VENV} (scripts/test makes it: python -m tests.pgadmin_server)")
    return home


if __name__ == "__main__":
    print(install())
