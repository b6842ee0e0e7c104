"""system-health, threshold-alerts, services-health, k8s-health and daily-summary run by a real
Prefect server (the test harness), reading a real Prometheus that scrapes a real node
exporter, mailing a real SMTP sink (aiosmtpd) with login. k8s-health's "deployed" path reads a
fake Kubernetes API on 127.0.0.1 (no k3s here): it proves the client and the parsing only.
daily-summary also reads the alerts a real Alertmanager holds."""

from __future__ import annotations

import base64
import email
import email.policy
import json
import shutil
import ssl
import subprocess
import threading
import time
from contextlib import ExitStack, contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Iterator

import pytest

from components.monitoring import render as monitoring_render
from flows.prometheus import HOST_EXPRESSIONS
from tests.flows_support import checks_of, write_config
from tests.servers import free_port, process, require_tool, scratch_dir
from tests.test_alert_email import alertmanager, post_alert, smtp_sink
from tests.test_monitoring_render import wait_for_series

SMTP_USER, SMTP_PASSWORD = "flows", "flows-secret-password"


@pytest.fixture(scope="module")
def prometheus_url() -> Iterator[str]:
    """A real Prometheus scraping a real node exporter every second; its URL once the host
    expressions the flows use return series."""
    node_exporter, prometheus = require_tool("prometheus-node-exporter"), require_tool("prometheus")
    folder = scratch_dir("flows-prometheus-")
    prom_port, node_port = free_port(), free_port()
    (folder / "prometheus.yml").write_text(json.dumps({
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "scrape_configs": [{"job_name": "node-exporter", "static_configs": [{"targets": [f"127.0.0.1:{node_port}"]}]}],
    }))
    argv = [prometheus, *monitoring_render.prometheus_flags(retention_days=1, config_dir=str(folder),
                                                            data_dir=str(folder / "data")),
            f"--web.listen-address=127.0.0.1:{prom_port}"]
    try:
        with process([node_exporter, f"--web.listen-address=127.0.0.1:{node_port}"], port=node_port,
                     log=folder / "node.log"), \
                process(argv, port=prom_port, log=folder / "prometheus.log"):
            for expression in HOST_EXPRESSIONS.values():
                wait_for_series(prom_port, expression, timeout=30)
            yield f"http://127.0.0.1:{prom_port}"
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def sink(monkeypatch):
    """An SMTP sink that wants a login; the flows get the password as the runner does: an env var."""
    monkeypatch.setenv("SMTP_PASSWORD", SMTP_PASSWORD)
    with smtp_sink(SMTP_USER, SMTP_PASSWORD) as (port, messages, logins):
        smtp = {"host": "127.0.0.1", "port": port, "user": SMTP_USER, "from_address": "flows@coderz.test",
                "to": ["ops@coderz.test"], "starttls": False}
        yield smtp, messages, logins


def subjects(messages) -> list[str]:
    return [email.message_from_bytes(m.original_content, policy=email.policy.default)["Subject"] for m in messages]


def wait_for_mail(messages, count: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while len(messages) < count and time.monotonic() < deadline:
        time.sleep(0.05)


# --- system-health ------------------------------------------------------------------------

def test_system_health_reads_host_cpu_memory_and_disk(prefect_api, prometheus_url, tmp_path, monkeypatch):
    from flows.system_health import system_health

    write_config(tmp_path, monkeypatch, prometheus_url=prometheus_url,
                 thresholds={"cpu_percent": 100, "memory_percent": 100, "disk_percent": 100})
    state = system_health(return_state=True)
    checks = checks_of(state)
    assert state.is_completed(), state.message
    assert {name.split()[1] for name in checks} == {"cpu", "memory", "disk"}
    assert all("% used (threshold 100%)" in c["detail"] for c in checks.values())

    write_config(tmp_path, monkeypatch, prometheus_url=prometheus_url, thresholds={"memory_percent": 1})
    state = system_health(return_state=True)
    failed = [c for c in checks_of(state).values() if not c["ok"]]
    assert state.is_failed() and [c["name"].split()[1] for c in failed] == ["memory"]
    assert "threshold 1%" in failed[0]["detail"] and "host memory" in state.message


def test_an_unreachable_prometheus_is_a_failed_check_not_a_crash(prefect_api, tmp_path, monkeypatch):
    from flows.system_health import system_health
    from flows.threshold_alerts import threshold_alerts

    write_config(tmp_path, monkeypatch, prometheus_url=f"http://127.0.0.1:{free_port()}")
    for flow in (system_health, threshold_alerts):
        state = flow(return_state=True)
        assert state.is_failed(), flow.name
        assert all(not c["ok"] and "did not answer" in c["detail"] for c in checks_of(state).values())
        assert "did not answer" in state.message


def test_without_prometheus_the_host_flows_say_so_and_pass(prefect_api, tmp_path, monkeypatch):
    from flows.system_health import system_health
    from flows.threshold_alerts import threshold_alerts

    write_config(tmp_path, monkeypatch)
    for flow in (system_health, threshold_alerts):
        state = flow(return_state=True)
        assert state.is_completed() and "monitoring off" in checks_of(state)["prometheus"]["detail"]


# --- threshold-alerts ---------------------------------------------------------------------

def test_threshold_alerts_mail_a_breach_once_when_it_starts_and_once_when_it_clears(
        prefect_api, prometheus_url, sink, tmp_path, monkeypatch):
    from flows.threshold_alerts import threshold_alerts

    smtp, messages, logins = sink
    breach = {"cpu_percent": 100, "memory_percent": 1, "disk_percent": 100}
    write_config(tmp_path, monkeypatch, prometheus_url=prometheus_url, smtp=smtp, thresholds=breach)
    first = threshold_alerts(return_state=True)
    wait_for_mail(messages, 1)
    assert first.is_failed() and "host-memory" in first.message
    assert len(messages) == 1 and subjects(messages)[0].startswith("[coderz-flows-test] ALERT host-memory 127.0.0.1:")
    assert (SMTP_USER, SMTP_PASSWORD) in [(login, password) for _, login, password in logins]
    assert messages[0].rcpt_tos == ["ops@coderz.test"]

    again = threshold_alerts(return_state=True)  # still breached: nothing new to say
    assert again.is_failed()
    time.sleep(0.5)
    assert len(messages) == 1

    write_config(tmp_path, monkeypatch, prometheus_url=prometheus_url, smtp=smtp,
                 thresholds={**breach, "memory_percent": 100})
    cleared = threshold_alerts(return_state=True)
    wait_for_mail(messages, 2)
    assert cleared.is_completed(), cleared.message
    assert len(messages) == 2 and subjects(messages)[1].startswith("[coderz-flows-test] RESOLVED host-memory")
    assert threshold_alerts(return_state=True).is_completed()
    time.sleep(0.5)
    assert len(messages) == 2
    journal = (tmp_path / "state" / "events.jsonl").read_text().splitlines()
    assert [json.loads(line)["kind"] for line in journal] == ["alert"]


def test_a_stack_without_smtp_logs_the_alert_and_an_unreachable_smtp_fails_the_check(
        prefect_api, prometheus_url, tmp_path, monkeypatch):
    from flows.threshold_alerts import threshold_alerts

    breach = {"memory_percent": 1}
    (tmp_path / "logged").mkdir()
    write_config(tmp_path / "logged", monkeypatch, prometheus_url=prometheus_url, thresholds=breach)
    checks = checks_of(threshold_alerts(return_state=True))
    assert checks["e-mail"]["ok"] and "logged (the stack has no SMTP settings)" in checks["e-mail"]["detail"]

    (tmp_path / "down").mkdir()
    smtp = {"host": "127.0.0.1", "port": free_port(), "from_address": "flows@coderz.test", "to": ["ops@coderz.test"],
            "starttls": False}
    write_config(tmp_path / "down", monkeypatch, prometheus_url=prometheus_url, thresholds=breach, smtp=smtp)
    state = threshold_alerts(return_state=True)
    assert state.is_failed() and not checks_of(state)["e-mail"]["ok"]
    assert "could not mail" in checks_of(state)["e-mail"]["detail"]


# --- services-health ----------------------------------------------------------------------

@contextmanager
def http_service(status: int = 200) -> Iterator[int]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(status if self.path == "/health" else 404)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


def test_services_health_reports_which_containers_are_down_and_since_when(prefect_api, tmp_path, monkeypatch):
    from flows.services_health import services_health

    closed = free_port()
    with http_service() as up, http_service(status=503) as sick:
        probes = [
            {"service": "api", "container": "api-1", "kind": "http", "host": "127.0.0.1", "port": up, "path": "/health"},
            {"service": "api", "container": "api-2", "kind": "http", "host": "127.0.0.1", "port": sick, "path": "/health"},
            {"service": "db", "container": "db", "kind": "tcp", "host": "127.0.0.1", "port": up},
            {"service": "cache", "container": "cache", "kind": "tcp", "host": "127.0.0.1", "port": closed},
        ]
        write_config(tmp_path, monkeypatch, probes=probes)
        first = services_health(return_state=True)
        second = services_health(return_state=True)
    checks = checks_of(first)
    assert first.is_failed() and {n for n, c in checks.items() if not c["ok"]} == {"api-2", "cache"}
    assert "answered 503" in checks["api-2"]["detail"] and "unreachable" in checks["cache"]["detail"]
    assert checks["api-1"]["ok"] and checks["db"]["ok"]
    since = checks["cache"]["detail"].split("down since ")[1].split(":")[0]
    assert checks_of(second)["cache"]["detail"].split("down since ")[1].split(":")[0] == since  # kept, not reset
    journal = [json.loads(line) for line in (tmp_path / "state" / "events.jsonl").read_text().splitlines()]
    assert sorted(e["detail"].split(":")[0] for e in journal) == ["api-2", "cache"]  # once each


# --- k8s-health ---------------------------------------------------------------------------

NODES = {"items": [
    {"metadata": {"name": "k3s-1"}, "status": {"conditions": [{"type": "Ready", "status": "True"}]}},
    {"metadata": {"name": "k3s-2"}, "status": {"conditions": [{"type": "Ready", "status": "False",
                                                               "reason": "KubeletNotReady"}]}},
]}
DEPLOYMENTS = {"items": [
    {"metadata": {"namespace": "default", "name": "coderz-web"}, "spec": {"replicas": 2},
     "status": {"availableReplicas": 2}},
    {"metadata": {"namespace": "kube-system", "name": "kube-state-metrics"}, "spec": {"replicas": 1}, "status": {}},
]}


@contextmanager
def fake_kubernetes(token: str | None, tls: ssl.SSLContext | None = None) -> Iterator[tuple[int, list[str]]]:
    """A fake Kubernetes API answering the two reads k8s-health makes, for a bearer token (or,
    with `tls` requiring a client certificate, for any client the TLS handshake let in)."""
    seen: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            seen.append(self.headers.get("Authorization", ""))
            body = {"/api/v1/nodes": NODES, "/apis/apps/v1/deployments": DEPLOYMENTS}.get(self.path)
            authorized = token is None or self.headers.get("Authorization") == f"Bearer {token}"
            self.send_response(200 if body and authorized else 401 if not authorized else 404)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(json.dumps(body or {"kind": "Status"}).encode())

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    if tls is not None:
        server.socket = tls.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield server.server_address[1], seen
    finally:
        server.shutdown()
        server.server_close()


def test_k8s_health_without_k3s_reports_not_deployed_and_passes(prefect_api, tmp_path, monkeypatch):
    from flows.k8s_health import k8s_health

    write_config(tmp_path, monkeypatch)
    state = k8s_health(return_state=True)
    assert state.is_completed() and checks_of(state) == {
        "kubernetes": {"name": "kubernetes", "ok": True, "detail": "not deployed on this stack"}}


def test_k8s_health_reads_nodes_and_deployments_through_the_api(prefect_api, tmp_path, monkeypatch):
    from flows.k8s_health import k8s_health

    monkeypatch.setenv("KUBERNETES_TOKEN", "k3s-test-token")
    with fake_kubernetes("k3s-test-token") as (port, seen):
        write_config(tmp_path, monkeypatch, kubernetes={"url": f"http://127.0.0.1:{port}"})
        state = k8s_health(return_state=True)
        monkeypatch.setenv("KUBERNETES_TOKEN", "wrong")
        refused = k8s_health(return_state=True)
    checks = checks_of(state)
    assert state.is_failed()
    assert {n: c["ok"] for n, c in checks.items()} == {
        "node k3s-1": True, "node k3s-2": False,
        "deployment default/coderz-web": True, "deployment kube-system/kube-state-metrics": False}
    assert "KubeletNotReady" in checks["node k3s-2"]["detail"]
    assert checks["deployment kube-system/kube-state-metrics"]["detail"] == "0/1 replicas available"
    assert seen[:2] == ["Bearer k3s-test-token"] * 2
    assert refused.is_failed() and "401" in checks_of(refused)["kubernetes"]["detail"]


def certificates(folder: Path) -> dict[str, Path]:
    """A CA, a server certificate for 127.0.0.1 and a client certificate, made by openssl."""
    openssl = require_tool("openssl")

    def run(*argv: str) -> None:
        subprocess.run([openssl, *argv], check=True, capture_output=True, cwd=folder)

    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.crt", "-days", "2",
        "-subj", "/CN=k3s-test-ca")
    for name, extra in (("server", "subjectAltName=IP:127.0.0.1"), ("client", "extendedKeyUsage=clientAuth")):
        run("req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.csr",
            "-subj", f"/CN={name}")
        (folder / f"{name}.ext").write_text(extra + "\n")
        run("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
            "-out", f"{name}.crt", "-days", "2", "-extfile", f"{name}.ext")
    return {p.name: p for p in folder.iterdir()}


def kubeconfig(port: int, ca: Path, cert: Path, key: Path) -> str:
    def b64(path: Path) -> str:
        return base64.b64encode(path.read_bytes()).decode()

    # the shape k3s writes to /etc/rancher/k3s/k3s.yaml
    return json.dumps({
        "apiVersion": "v1", "kind": "Config", "current-context": "default",
        "clusters": [{"name": "default", "cluster": {"server": f"https://127.0.0.1:{port}",
                                                     "certificate-authority-data": b64(ca)}}],
        "contexts": [{"name": "default", "context": {"cluster": "default", "user": "default"}}],
        "users": [{"name": "default", "user": {"client-certificate-data": b64(cert), "client-key-data": b64(key)}}],
    })


def test_k8s_health_reads_the_api_with_a_k3s_kubeconfig_over_mutual_tls(prefect_api, tmp_path, monkeypatch):
    from flows.k8s_health import k8s_health

    files = certificates(tmp_path)
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.load_cert_chain(files["server.crt"], files["server.key"])
    tls.load_verify_locations(files["ca.crt"])
    tls.verify_mode = ssl.CERT_REQUIRED  # no client certificate, no answer
    with fake_kubernetes(None, tls) as (port, seen):
        config = tmp_path / "k3s.yaml"
        config.write_text(kubeconfig(port, files["ca.crt"], files["client.crt"], files["client.key"]))
        write_config(tmp_path, monkeypatch, kubernetes={"kubeconfig_file": str(config)})
        state = k8s_health(return_state=True)
        # a kubeconfig naming the client's own certificate as CA: the server is not trusted
        config.write_text(kubeconfig(port, files["client.crt"], files["client.crt"], files["client.key"]))
        untrusted = k8s_health(return_state=True)
    assert state.is_failed() and {n: c["ok"] for n, c in checks_of(state).items()} == {
        "node k3s-1": True, "node k3s-2": False,
        "deployment default/coderz-web": True, "deployment kube-system/kube-state-metrics": False}
    assert len(seen) == 2
    assert untrusted.is_failed() and "CERTIFICATE_VERIFY_FAILED" in checks_of(untrusted)["kubernetes"]["detail"]


# --- daily-summary ------------------------------------------------------------------------

@pytest.fixture
def exits():
    """Context managers a test enters, left when it ends."""
    with ExitStack() as stack:
        yield stack


def test_daily_summary_mails_the_last_day(prefect_api, prometheus_url, sink, exits, tmp_path, monkeypatch):
    from flows import state as flow_state
    from flows.config import load_config
    from flows.daily_summary import daily_summary

    smtp, messages, _ = sink
    am_port = exits.enter_context(alertmanager(monitoring_render.render_alertmanager_config(None, group_wait_s=1)))
    post_alert(am_port)
    write_config(tmp_path, monkeypatch, prometheus_url=prometheus_url, smtp=smtp,
                 alertmanager_url=f"http://127.0.0.1:{am_port}",
                 backup_metric="coderz_backup_last_success_timestamp_seconds")
    config = load_config()
    old = {"at": "2020-01-01T00:00:00+00:00", "kind": "restart", "detail": "ancient restart"}
    Path(config.state_dir).mkdir(parents=True)
    (Path(config.state_dir) / "events.jsonl").write_text(json.dumps(old) + "\n")
    flow_state.record(config, "alert", "host-memory: memory above 1%: 40.0")
    for _ in range(2):
        flow_state.record(config, "restart", "coderz-x-api restarted 1 time(s)")
    flow_state.record(config, "health-failure", "coderz-x-cache: tcp://cache:6379 unreachable")

    state = daily_summary(return_state=True)
    wait_for_mail(messages, 1)
    assert state.is_completed(), state.message
    assert subjects(messages) == ["[coderz-flows-test] daily summary (last 24 h)"]
    body = email.message_from_bytes(messages[0].original_content, policy=email.policy.default).get_content().replace("\r\n", "\n")
    assert "Prometheus alerts fired: none" in body and "Last good backup: none recorded" in body
    assert "Alerts active now: GatewayHighErrorRate" in body  # from the real Alertmanager
    assert "Threshold breaches: 1\n  host-memory: memory above 1%: 40.0" in body
    assert "Container restarts: 2\n  coderz-x-api restarted 1 time(s) (x2)" in body
    assert "Health failures: 1\n  coderz-x-cache" in body
    assert "ancient" not in body

    write_config(tmp_path, monkeypatch, alertmanager_url=f"http://127.0.0.1:{free_port()}")
    unanswered = daily_summary(return_state=True)
    assert unanswered.is_failed() and "did not answer" in checks_of(unanswered)["alertmanager"]["detail"]


def test_daily_summary_reports_the_last_good_backup_from_prometheus(prometheus_url, tmp_path, monkeypatch):
    """The backup line with a real value: any timestamp gauge stands in for the sidecar's
    metric (the node exporter's boot time), read back as the same instant in UTC."""
    from datetime import datetime, timezone

    from flows import prometheus as flow_prometheus
    from flows.config import load_config
    from flows.daily_summary import prometheus_lines

    write_config(tmp_path, monkeypatch, prometheus_url=prometheus_url, backup_metric="node_boot_time_seconds")
    ((_, boot),) = flow_prometheus.query(prometheus_url, "max(node_boot_time_seconds)")
    checks = []
    lines = prometheus_lines(load_config(), checks)
    assert f"Last good backup: {datetime.fromtimestamp(boot, timezone.utc).isoformat()}" in lines and checks == []
    write_config(tmp_path, monkeypatch, prometheus_url=prometheus_url)
    assert "Backups: no backup job on this stack" in prometheus_lines(load_config(), checks)
