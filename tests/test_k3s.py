"""The k3s cluster of a stack under mocks (provider wiring, objects, on/off), its Kubernetes
objects against the pinned release's schema, its scripts with shellcheck and a stand-in host."""

from __future__ import annotations

import base64
import functools
import json
import os
import subprocess
from pathlib import Path

import pytest
import yaml

from components.gateway.render import routes_from_catalog
from components.k3s import pki
from components.k3s.cluster import install_script, tls_bundle, tunnel_commands
from components.k3s.settings import K3sConfig
from components.host import TargetConfig
from infra.catalog import declare_services
from infra.config import PLACEHOLDER_SECRETS, STACKS, ConfigError, load, stack_file_config, stack_file_values
from tests.mocks import deploy_stack, generated_secrets, is_secret, plaintext_leaks, service_of
from tests.servers import require_module, require_tool

K8S_PREFIX = "kubernetes:"
# dev with a cluster: the local-engine variant (k3s as a container on the stack network).
DEV_WITH_K3S = {"coderz:k3s": {"enabled": True}}


@functools.cache
def deployed(stack: str, with_k3s: bool = False):
    return deploy_stack(stack, **(DEV_WITH_K3S if with_k3s else {}))


def kubernetes_objects(monitor) -> list:
    return [r for r in monitor.registrations if r.type.startswith(K8S_PREFIX) and not r.type.startswith("kubernetes:index")
            and r.type != "pulumi:providers:kubernetes"]


# --- config -------------------------------------------------------------------------------------


def test_k3s_is_off_in_dev_and_on_in_qa_and_prod():
    assert {stack: stack_file_config(stack).k3s.enabled for stack in STACKS} == {"dev": False, "qa": True, "prod": True}


@pytest.mark.parametrize("change, key", [
    ({"version": "latest"}, "coderz:k3s.version"),
    ({"version": "v1.31.2"}, "coderz:k3s.version"),
    ({"web": {"replicas": 0}}, "coderz:k3s.web.replicas"),
    ({"web": {"nodePort": 8080}}, "coderz:k3s.web.nodePort"),
    ({"web": {"image": "nginx"}}, "coderz:k3s.web.image"),
    ({"kubeStateMetricsNodePort": 30080}, "coderz:k3s"),
    ({"hostAddress": "300.1.1.1"}, "coderz:k3s"),
    ({"hostAddress": "docker0"}, "coderz:k3s.hostAddress"),
    ({"enabeld": True}, "coderz:k3s.enabeld"),
])
def test_a_wrong_k3s_setting_is_refused_naming_its_key(change, key):
    raw = {**stack_file_values("qa"), **PLACEHOLDER_SECRETS, "coderz:k3s": json.dumps({"enabled": True, **change})}
    with pytest.raises(ConfigError) as error:
        load(raw, "qa", check_secrets=False)
    assert str(error.value).startswith(f"Pulumi.qa.yaml: {key}:"), str(error.value)


def test_the_k3s_image_is_the_pinned_release():
    config = K3sConfig(version="v1.30.6+k3s1")
    assert config.image == "rancher/k3s:v1.30.6-k3s1"
    assert config.kubernetes_minor == "1.30"


# --- on/off across the stacks -------------------------------------------------------------------


def test_a_stack_without_k3s_registers_no_kubernetes_resource_and_no_k3s_command():
    monitor, outputs = deployed("dev")
    assert kubernetes_objects(monitor) == []
    assert monitor.of_type("pulumi:providers:kubernetes") == []
    assert not [r for r in monitor.registrations if r.type.startswith("tls:") or "k3s" in r.name]
    assert "kubeconfig" not in outputs
    assert not {"kubernetes-apiserver", "kube-state-metrics"} & set(outputs["scrape_jobs"])


@pytest.mark.parametrize("stack, with_k3s", [("qa", False), ("prod", False), ("dev", True)])
def test_every_kubernetes_resource_uses_the_one_cluster_provider(stack, with_k3s):
    monitor, _ = deployed(stack, with_k3s)
    (provider,) = monitor.of_type("pulumi:providers:kubernetes")
    objects = kubernetes_objects(monitor)
    assert len(objects) >= 12
    for resource in objects:
        assert resource.provider.startswith(provider.urn + "::"), resource.name
    assert is_secret(provider.inputs["kubeconfig"]), "the kubeconfig reaches the provider only as a secret"


@pytest.mark.parametrize("stack, with_k3s", [("qa", False), ("prod", False), ("dev", True)])
def test_cluster_credentials_never_appear_in_plain_text(stack, with_k3s):
    monitor, outputs = deployed(stack, with_k3s)
    secrets = generated_secrets(monitor)
    assert any(value.startswith("mock-k3s-pki-") for value in secrets), "the CA keys are among the checked values"
    assert plaintext_leaks(monitor.registrations, secrets) == []
    kubeconfig = yaml.safe_load(outputs["kubeconfig"])
    assert kubeconfig["users"][0]["user"]["client-key-data"]


def test_the_local_cluster_is_a_privileged_k3s_container_with_the_programs_cas():
    monitor, outputs = deployed("dev", True)
    (server,) = [c for c in monitor.of_type("docker:index/container:Container") if c.plain["name"] == "coderz-dev-k3s"]
    spec = server.plain
    assert spec["privileged"] is True
    assert spec["command"][0] == "server" and "--disable=traefik" in spec["command"] and "--disable=servicelb" in spec["command"]
    assert "--tls-san=k3s" in spec["command"]
    assert {m["containerPath"] for m in spec["volumes"]} == {"/var/lib/rancher/k3s"}
    assert [(p["internal"], p["external"], p["ip"]) for p in spec["ports"]] == [(6443, 5264, "127.0.0.1")]
    assert {u["file"] for u in spec["uploads"]} == {f"{pki.TLS_DIR}/{ca}.{ext}" for ca in pki.CA_NAMES for ext in ("crt", "key")}
    # the CA keys are secret, so the whole upload list travels as one
    assert is_secret(server.inputs["uploads"])
    server_url = yaml.safe_load(outputs["kubeconfig"])["clusters"][0]["cluster"]["server"]
    assert server_url == "https://127.0.0.1:5264"
    assert outputs["kubernetes_api"] == "k3s:6443"


@pytest.mark.parametrize("stack", ["qa", "prod"])
def test_the_ssh_cluster_is_installed_on_the_host_and_reached_through_a_tunnel(stack):
    monitor, outputs = deployed(stack)
    assert not [c for c in monitor.of_type("docker:index/container:Container") if c.plain["name"].endswith("-k3s")]
    install = monitor.named("k3s-install")
    assert is_secret(install.inputs["stdin"]), "the CA keys travel as a secret"
    assert "INSTALL_K3S_VERSION=\"$version\"" in install.plain["create"]
    assert "version='v1.31.2+k3s1'" in install.plain["create"]
    assert install.plain["triggers"]
    tunnel = monitor.named("k3s-tunnel")
    base = {"qa": 5100, "prod": 5000}[stack]
    assert f"-L 127.0.0.1:{base + 64}:127.0.0.1:6443" in tunnel.plain["create"]
    assert f"deploy@{stack if stack == 'qa' else 'prod'}.coderz.example" in tunnel.plain["create"]
    assert outputs["kubernetes_api"] == "172.17.0.1:6443"


@pytest.mark.parametrize("stack, with_k3s, upstream", [
    ("dev", True, ("k3s", 30080)), ("qa", False, ("172.17.0.1", 30080)), ("prod", False, ("172.17.0.1", 30080))])
def test_the_gateway_routes_web_to_the_nodeport(stack, with_k3s, upstream):
    _, outputs = deployed(stack, with_k3s)
    config = load({**stack_file_values(stack), **PLACEHOLDER_SECRETS,
                   **({"coderz:k3s": '{"enabled": true}'} if with_k3s else {})}, stack, check_secrets=False).config
    routes = {r.path_prefix: (r.host, r.port) for r in routes_from_catalog(declare_services(config))}
    assert routes["/web/"] == upstream


@pytest.mark.parametrize("stack", ["qa", "prod"])
def test_prometheus_scrapes_the_api_server_and_kube_state_metrics(stack, tmp_path):
    monitor, outputs = deployed(stack)
    assert {"kubernetes-apiserver", "kube-state-metrics"} <= set(outputs["scrape_jobs"])
    (prometheus,) = [c for c in monitor.of_type("docker:index/container:Container") if c.plain["name"].endswith("-prometheus")]
    uploads = {Path(u["file"]): u["content"] for u in prometheus.plain["uploads"]}
    (config_path,) = [path for path in uploads if path.name == "prometheus.yml"]
    jobs = {job["job_name"]: job for job in yaml.safe_load(uploads[config_path])["scrape_configs"]}
    assert jobs["kubernetes-apiserver"]["static_configs"][0]["targets"] == ["172.17.0.1:6443"]
    assert jobs["kube-state-metrics"]["static_configs"][0]["targets"] == ["172.17.0.1:30081"]
    assert jobs["kubernetes-apiserver"]["scheme"] == "https"
    assert uploads[config_path.parent / "kubernetes-token"].startswith("mock-token-")
    assert "BEGIN CERTIFICATE" in uploads[config_path.parent / "kubernetes-ca.crt"]
    # promtool checks the stack's own files, moved from the container's folder into tmp_path
    for path, content in uploads.items():
        if path.parent == config_path.parent:
            (tmp_path / path.name).write_text(content.replace(str(config_path.parent), str(tmp_path)))
    result = subprocess.run([require_tool("promtool"), "check", "config", str(tmp_path / "prometheus.yml")],
                            capture_output=True, text=True)
    assert result.returncode == 0 and "SUCCESS" in result.stdout, result.stdout + result.stderr
    (grafana,) = [c for c in monitor.of_type("docker:index/container:Container") if service_of(c) == "grafana"]
    assert any(u["file"].endswith("/kubernetes.json") for u in grafana.plain["uploads"])


# --- the workload objects -----------------------------------------------------------------------


def objects_by_kind(monitor) -> dict[str, list[dict]]:
    found: dict[str, list[dict]] = {}
    for resource in kubernetes_objects(monitor):
        if resource.name.endswith("-live"):
            continue  # a read of an object, not one the program declares
        found.setdefault(resource.plain["kind"], []).append(resource.plain)
    return found


def test_coderz_web_is_hardened_rolled_without_downtime_and_budgeted():
    monitor, _ = deployed("qa")
    objects = objects_by_kind(monitor)
    (web,) = [d for d in objects["Deployment"] if d["metadata"]["name"] == "coderz-web"]
    assert web["metadata"]["namespace"] == "coderz"
    assert web["spec"]["replicas"] == 2
    assert web["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    pod = web["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    (container,) = pod["containers"]
    assert container["image"] == "nginxinc/nginx-unprivileged:1.27.2-alpine"
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert container["resources"]["limits"] and container["resources"]["requests"]
    assert container["readinessProbe"]["httpGet"]["port"] == 8080 and container["livenessProbe"]
    (pdb,) = objects["PodDisruptionBudget"]
    assert pdb["spec"]["selector"]["matchLabels"] == web["spec"]["selector"]["matchLabels"]
    services = {s["metadata"]["name"]: s for s in objects["Service"]}
    assert services["coderz-web"]["spec"]["type"] == "NodePort"
    assert services["coderz-web"]["spec"]["ports"][0]["nodePort"] == 30080
    assert services["kube-state-metrics"]["spec"]["ports"][0]["nodePort"] == 30081
    (namespace,) = objects["Namespace"]
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"


def test_the_monitor_identity_is_read_only():
    monitor, _ = deployed("prod")
    roles = {r["metadata"]["name"]: r for r in objects_by_kind(monitor)["ClusterRole"]}
    for role in roles.values():
        for rule in role["rules"]:
            assert set(rule["verbs"]) <= {"get", "list", "watch"}, role["metadata"]["name"]
    monitor_rules = roles["coderz-monitor"]["rules"]
    assert {"nonResourceURLs": ["/metrics", "/readyz", "/livez"], "verbs": ["get"]} in monitor_rules
    (token,) = [s for s in objects_by_kind(monitor)["Secret"]]
    assert token["type"] == "kubernetes.io/service-account-token"
    assert token["metadata"]["annotations"] == {"kubernetes.io/service-account.name": "coderz-monitor"}


def validate(objects: list[dict], version: str) -> list[str]:
    kubernetes_validate = require_module("kubernetes_validate")
    errors = []
    for document in objects:
        try:
            kubernetes_validate.validate(document, version, strict=True)
        except kubernetes_validate.ValidationError as error:
            errors.append(f"{document['kind']}/{document['metadata']['name']}: {error.message}")
    return errors


@pytest.mark.parametrize("stack", ["qa", "prod"])
def test_every_object_is_valid_for_the_pinned_kubernetes_release(stack):
    monitor, _ = deployed(stack)
    objects = [o for kind in objects_by_kind(monitor).values() for o in kind]
    version = stack_file_config(stack).k3s.kubernetes_minor
    assert len(objects) >= 12
    assert validate(objects, version) == []


def test_a_planted_mistake_fails_the_schema():
    monitor, _ = deployed("qa")
    (web,) = [d for d in objects_by_kind(monitor)["Deployment"] if d["metadata"]["name"] == "coderz-web"]
    broken = yaml.safe_load(yaml.safe_dump(web))
    broken["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["httpGet"]["prot"] = 8080
    wrong_type = yaml.safe_load(yaml.safe_dump(web))
    wrong_type["spec"]["replicas"] = "two"
    errors = validate([broken, wrong_type], "1.31")
    assert len(errors) == 2, errors


# --- kubeconfig, scripts ------------------------------------------------------------------------


def test_the_kubeconfig_is_accepted_by_kubectl(tmp_path):
    kubectl = require_tool("kubectl")
    text = pki.render_kubeconfig("https://127.0.0.1:5264", "CA PEM", "CERT PEM", "KEY PEM", cluster="coderz-qa")
    path = tmp_path / "kubeconfig"
    path.write_text(text)
    out = subprocess.run([kubectl, "config", "view", "--kubeconfig", str(path), "--raw", "-o", "json"],
                         capture_output=True, text=True, check=True).stdout
    view = yaml.safe_load(out)
    assert view["current-context"] == "coderz-qa"
    assert view["clusters"][0]["cluster"]["server"] == "https://127.0.0.1:5264"
    assert base64.b64decode(view["users"][0]["user"]["client-key-data"]).decode() == "KEY PEM"


def shellcheck(text: str) -> str:
    result = subprocess.run([require_tool("shellcheck"), "-s", "sh", "-"], input=text, capture_output=True, text=True)
    return result.stdout


def test_the_install_and_tunnel_scripts_pass_shellcheck():
    assert shellcheck(install_script(K3sConfig(), ("172.17.0.1", "127.0.0.1"))) == ""
    create, delete = tunnel_commands(TargetConfig(kind="ssh", host="qa.coderz.example"), "~/.ssh/coderz-qa.key", 5164)
    assert shellcheck(create) == "" and shellcheck(delete) == ""


@pytest.fixture
def stand_in_host(tmp_path):
    """A stand-in host directory and PATH: `k3s`, `curl` and `systemctl` record their calls; the
    piped installer "installs" k3s by creating the `k3s` command of the pinned version."""
    root, bin_dir, calls = tmp_path / "root", tmp_path / "bin", tmp_path / "calls"
    bin_dir.mkdir()
    (bin_dir / "curl").write_text(f"""#!/bin/sh
echo "curl $*" >> {calls}
cat <<'INSTALLER'
echo "installer INSTALL_K3S_VERSION=$INSTALL_K3S_VERSION INSTALL_K3S_EXEC=$INSTALL_K3S_EXEC" >> {calls}
printf '#!/bin/sh\\necho "k3s version %s (abc)"\\n' "$INSTALL_K3S_VERSION" > {bin_dir}/k3s
chmod +x {bin_dir}/k3s
INSTALLER
""")
    (bin_dir / "systemctl").write_text(f"#!/bin/sh\necho \"systemctl $*\" >> {calls}\n")
    for tool in ("curl", "systemctl"):
        (bin_dir / tool).chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "K3S_ROOT": str(root), "K3S_SUDO": ""}
    return root, calls, env


def run_install(script: str, bundle: str, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run(["sh", "-c", script], input=bundle, env=env, capture_output=True, text=True, timeout=30)


def test_the_install_script_is_idempotent_on_a_stand_in_host(stand_in_host):
    root, calls, env = stand_in_host
    script = install_script(K3sConfig(), ("172.17.0.1", "127.0.0.1"))
    files = {f"{pki.TLS_DIR}/{ca}.{ext}": f"{ca} {ext} pem\n" for ca in pki.CA_NAMES for ext in ("crt", "key")}
    first = run_install(script, tls_bundle(files), env)
    assert first.returncode == 0, first.stderr
    tls_dir = root / pki.TLS_DIR.lstrip("/")
    assert {p.name: p.read_text() for p in tls_dir.iterdir()} == {Path(k).name: v for k, v in files.items()}
    assert oct(tls_dir.stat().st_mode & 0o777) == "0o700"
    assert all(oct(p.stat().st_mode & 0o777) == "0o600" for p in tls_dir.iterdir())
    log = calls.read_text()
    assert log.count("installer ") == 1
    assert "INSTALL_K3S_VERSION=v1.31.2+k3s1" in log and "--disable=traefik --disable=servicelb" in log
    second = run_install(script, tls_bundle(files), env)
    assert second.returncode == 0, second.stderr
    assert calls.read_text().count("installer ") == 1, "a second run must not reinstall"
    assert "is installed" in second.stdout
    # a new version installs again; the CAs stay
    upgraded = run_install(install_script(K3sConfig(version="v1.31.3+k3s1"), ("k3s",)), tls_bundle(files), env)
    assert upgraded.returncode == 0 and calls.read_text().count("installer ") == 2


def test_the_install_script_refuses_a_host_whose_k3s_has_other_cas(stand_in_host):
    root, calls, env = stand_in_host
    script = install_script(K3sConfig(), ("k3s",))
    files = {f"{pki.TLS_DIR}/server-ca.crt": "ours\n"}
    assert run_install(script, tls_bundle(files), env).returncode == 0
    other = run_install(script, tls_bundle({f"{pki.TLS_DIR}/server-ca.crt": "theirs\n"}), env)
    assert other.returncode != 0 and "has other CAs" in other.stderr
    assert (root / pki.TLS_DIR.lstrip("/") / "server-ca.crt").read_text() == "ours\n"


@pytest.mark.parametrize("name", ["../../etc/passwd.crt", ".hidden.key", "k3s.yaml"])
def test_the_install_script_refuses_a_file_name_outside_the_tls_folder(stand_in_host, name):
    root, _, env = stand_in_host
    bundle = f"{name} {base64.b64encode(b'x').decode()}\n"
    result = run_install(install_script(K3sConfig(), ("k3s",)), bundle, env)
    assert result.returncode != 0 and "unexpected file name" in result.stderr
    assert not (root / "etc").exists()


@pytest.mark.parametrize("stack, with_k3s, server", [
    ("qa", False, "https://172.17.0.1:6443"), ("dev", True, "https://k3s:6443")])
def test_the_k8s_health_flow_reads_the_cluster_as_the_monitor_identity(stack, with_k3s, server):
    from components.prefect.render import KUBECONFIG_PATH

    monitor, _ = deployed(stack, with_k3s)
    (runner,) = [c for c in monitor.of_type("docker:index/container:Container") if service_of(c) == "flows-runner"]
    assert is_secret(runner.inputs["uploads"])
    uploads = {u["file"]: u["content"] for u in runner.plain["uploads"]}
    kubeconfig = yaml.safe_load(uploads[KUBECONFIG_PATH])
    assert kubeconfig["clusters"][0]["cluster"]["server"] == server
    assert kubeconfig["users"][0] == {"name": "coderz-monitor", "user": {"token": "mock-token-k3s-workloads-monitor-token-live"}}
    assert base64.b64decode(kubeconfig["clusters"][0]["cluster"]["certificate-authority-data"]).decode().startswith(
        "-----BEGIN CERTIFICATE-----")
    flows = json.loads(uploads["/etc/coderz/flows.json"])
    assert flows["kubernetes"]["kubeconfig_file"] == KUBECONFIG_PATH


def test_the_tunnel_command_is_an_ssh_line_ssh_itself_accepts():
    """`ssh -G` parses the options and prints the resulting config without connecting."""
    import shlex

    create, _ = tunnel_commands(TargetConfig(kind="ssh", host="qa.coderz.example", port=2222),
                                "~/.ssh/coderz-qa.key", 5164)
    argv = shlex.split(create.split(" || ", 1)[1])
    assert argv[0] == "ssh"
    result = subprocess.run([require_tool("ssh"), "-G", *argv[1:]], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    config = [tuple(line.split(" ", 1)) for line in result.stdout.splitlines() if " " in line]
    values = {key: value for key, value in config}
    assert "controlpath" not in values and values["controlmaster"] == "false"  # ControlPath=none: no master
    assert (values["hostname"], values["port"], values["user"]) == ("qa.coderz.example", "2222", "deploy")
    # the stack's key only (ssh -G leaves out a key file that does not exist on this machine)
    assert values["identitiesonly"] == "yes" and argv[argv.index("-i") + 1] == "~/.ssh/coderz-qa.key"
    assert values["exitonforwardfailure"] == "yes"
    assert values["localforward"] == "[127.0.0.1]:5164 [127.0.0.1]:6443"
