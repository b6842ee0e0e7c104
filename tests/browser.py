"""Headless Chromium (Debian's) driven over the DevTools protocol on a pipe
(`--remote-debugging-pipe`: fd 3 carries commands, fd 4 answers, NUL-terminated JSON), stdlib
only. `Chromium.visit(url)` loads a page the way a person's browser would and reports what a
person would not see: Content-Security-Policy violations, script errors, every request made.

Nothing but loopback can be reached: every other host name fails to resolve in the browser.
"""

from __future__ import annotations

import fcntl
import json
import os
import select
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from tests.docs_build import render_diagrams  # docs/render_diagrams.py: the build's browser flags
from tests.servers import require_tool, scratch_dir

# Runs before any script of the page: the browser's own record of each CSP violation.
RECORD_VIOLATIONS = """
window.__cspViolations = [];
document.addEventListener("securitypolicyviolation", (e) => window.__cspViolations.push(
    `${e.effectiveDirective} blocked ${e.blockedURI || "inline"} (${e.sourceFile || e.documentURI}:${e.lineNumber})`));
"""
LOCAL_SCHEMES = ("data", "blob", "about", "chrome", "devtools")
LOOPBACK = ("127.0.0.1", "localhost", "::1", "[::1]")


@dataclass
class Visit:
    url: str
    violations: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)
    page: dict = field(default_factory=dict)  # what `probe` returned

    @property
    def remote_requests(self) -> list[str]:
        """Requests that left (or tried to leave) the machine: any host but loopback."""
        return [url for url in self.requests if urlsplit(url).scheme not in LOCAL_SCHEMES
                and urlsplit(url).hostname not in LOOPBACK]


class Chromium:
    """One headless browser for a test module; `visit` opens each page in a fresh tab."""

    def __init__(self) -> None:
        binary = require_tool("chromium")
        self.profile = scratch_dir("chromium-")
        self._log = open(self.profile / "stderr.log", "wb")
        commands_r, commands_w = os.pipe()
        answers_r, answers_w = os.pipe()

        def on_fds_3_and_4() -> None:  # in the child, before exec
            high = [fcntl.fcntl(fd, fcntl.F_DUPFD, 10) for fd in (commands_r, answers_w)]
            os.dup2(high[0], 3)
            os.dup2(high[1], 4)

        self.proc = subprocess.Popen([*render_diagrams.chromium_argv(binary, str(self.profile / "profile")),
                                      "--remote-debugging-pipe", "about:blank"],
                                     preexec_fn=on_fds_3_and_4, pass_fds=(3, 4), stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=self._log)
        os.close(commands_r)
        os.close(answers_w)
        self._out, self._in = commands_w, answers_r
        self._buffer = b""
        self._next_id = 0
        self.events: list[dict] = []

    def close(self) -> None:
        os.close(self._out)
        os.close(self._in)
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self._log.close()
        shutil.rmtree(self.profile, ignore_errors=True)

    def _receive(self, deadline: float) -> dict | None:
        """The next message, or None when nothing came before `deadline`."""
        while b"\0" not in self._buffer:
            ready, _, _ = select.select([self._in], [], [], max(0.0, deadline - time.monotonic()))
            if not ready:
                return None
            chunk = os.read(self._in, 1 << 16)
            if not chunk:
                raise RuntimeError(f"chromium exited ({self.proc.poll()}); see {self.profile}/stderr.log")
            self._buffer += chunk
        message, _, self._buffer = self._buffer.partition(b"\0")
        return json.loads(message)

    def call(self, method: str, session: str | None = None, timeout: float = 20.0, **params) -> dict:
        self._next_id += 1
        message = {"id": self._next_id, "method": method, "params": params}
        if session:
            message["sessionId"] = session
        os.write(self._out, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while (answer := self._receive(deadline)) is not None:
            if answer.get("id") == self._next_id:
                if "error" in answer:
                    raise RuntimeError(f"{method}: {answer['error']}")
                return answer["result"]
            self.events.append(answer)
        raise TimeoutError(f"{method}: no answer in {timeout}s")

    def _settle(self, session: str, quiet: float, timeout: float) -> None:
        """Wait for the load event, then until the page has sent nothing for `quiet` seconds."""
        deadline = time.monotonic() + timeout
        loaded = False
        while time.monotonic() < deadline:
            event = self._receive(min(deadline, time.monotonic() + quiet) if loaded else deadline)
            if event is None:
                if loaded:
                    return
                break
            self.events.append(event)
            loaded = loaded or (event.get("sessionId") == session and event.get("method") == "Page.loadEventFired")
        raise TimeoutError(f"the page did not load and settle in {timeout}s")

    def visit(self, url: str, probe: str = "({})", quiet: float = 0.75, timeout: float = 30.0) -> Visit:
        """Load `url` in a new tab; `probe` is a JS expression evaluated once the page settled
        (its JSON value lands in Visit.page)."""
        target = self.call("Target.createTarget", url="about:blank")["targetId"]
        session = self.call("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
        try:
            for domain in ("Page", "Network", "Log", "Runtime"):
                self.call(f"{domain}.enable", session)
            self.call("Page.addScriptToEvaluateOnNewDocument", session, source=RECORD_VIOLATIONS)
            first = len(self.events)
            self.call("Page.navigate", session, url=url)
            self._settle(session, quiet, timeout)
            result = self.call("Runtime.evaluate", session, returnByValue=True, expression=(
                f"JSON.stringify({{violations: window.__cspViolations || ['listener missing'], page: {probe}}})"))
            found = json.loads(result["result"]["value"])
            visit = Visit(url, violations=found["violations"], page=found["page"])
            for event in self.events[first:]:
                if event.get("sessionId") != session:
                    continue
                params = event.get("params", {})
                if event["method"] == "Network.requestWillBeSent":
                    visit.requests.append(params["request"]["url"])
                elif event["method"] == "Log.entryAdded" and "Content Security Policy" in params["entry"]["text"]:
                    visit.violations.append("console: " + params["entry"]["text"][:300])
                elif event["method"] == "Runtime.exceptionThrown":
                    visit.errors.append(json.dumps(params["exceptionDetails"])[:300])
            return visit
        finally:
            self.call("Target.closeTarget", targetId=target)
