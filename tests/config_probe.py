"""Hunt for stack-file values that pass the config check but break the deploy or the platform.

For every leaf key of the config model (and every service under `limits`), a hostile or absurd
value is written into a real stack file's config and the result is judged in three steps:

1. `load`: refused with a ConfigError is the wanted outcome; any other exception is a defect;
2. the whole program under mocks: an exception after N registered resources is a defect;
3. the configs the platform would run, checked by the real tools (`nginx -t` on the gateway's
   nginx.conf, `amtool check-config`, `promtool check config`) and by the limits Docker and
   SSH enforce: a refusal there is a defect.

Run it by hand to print the table (`python -m tests.config_probe [stack ...]`); the tests use
`mutations()` as the property-test corpus.
"""

from __future__ import annotations

import functools
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import pulumi
from pydantic import BaseModel

from infra.config import PROJECT, ConfigError, StackConfig, load
from tests.mocks import RecordingMonitor, engine_config, gateway_installed_files, install_mocks, secrets_for

PYAPI = Path(__file__).resolve().parent.parent / "apps" / "pyapi" / "app.py"
SUPERUSER_SLOTS = 3  # PostgreSQL's superuser_reserved_connections default

STRINGS = ("", " ", "\t", "é.example", "ünïcödé", "a b", "a;rm -rf /", "$(id)", "`id`", "a\nb", "-oProxyCommand=id",
           "../../etc/passwd", "x" * 300, "a..b", "-a.example", "a.example.", "*", "{}", "0", "unix://", "tcp://",
           "has'quote", 'has"dq', "#comment")
NUMBERS = (0, -1, 1, 2, 5, 22, 80, 443, 0.001, 0.009, 65536, 2**31, 2**63, 10**12, 1e308, "12", "NaN", True)
SERVICES = ("postgres", "redis", "dotnet-api", "python-api", "gateway", "node-exporter", "cadvisor", "postgres-exporter",
            "redis-exporter", "alertmanager", "prometheus", "grafana", "loki", "promtail", "elasticsearch", "logstash",
            "kibana", "filebeat")


@functools.cache
def base_config(stack: str) -> dict[str, Any]:
    """The engine's config of the unchanged stack file (read once: the probe makes thousands)."""
    return engine_config(stack, secrets=secrets_for(stack))[0]


@dataclass(frozen=True)
class Mutation:
    """One value set at one key path of a section (`("target", "host")`) of a stack file."""

    stack: str
    path: tuple[str, ...]
    value: Any

    @property
    def key(self) -> str:
        return f"{PROJECT}:" + ".".join(self.path)

    def raw(self) -> dict[str, Any]:
        raw = dict(base_config(self.stack))
        section, *rest = self.path
        current = raw.get(f"{PROJECT}:{section}")
        if not rest:
            raw[f"{PROJECT}:{section}"] = self.value if isinstance(self.value, str) else json.dumps(self.value)
            return raw
        document = json.loads(current) if isinstance(current, str) and current[:1] == "{" else {}
        node = document
        for part in rest[:-1]:
            node = node.setdefault(part, {}) if isinstance(node.get(part, {}), dict) else node
        if section == "limits" and len(rest) == 2:  # a whole, valid entry around the value under test
            node.setdefault("memoryMb", 1024)
            node.setdefault("cpus", 1)
        node[rest[-1]] = self.value
        raw[f"{PROJECT}:{section}"] = json.dumps(document)
        return raw


def _leaves(model: type[BaseModel], prefix: tuple[str, ...]) -> Iterator[tuple[tuple[str, ...], Any]]:
    for name, field in model.model_fields.items():
        alias = field.alias or name
        annotation = field.annotation
        inner = [a for a in typing.get_args(annotation) if isinstance(a, type) and issubclass(a, BaseModel)]
        target = annotation if isinstance(annotation, type) and issubclass(annotation, BaseModel) else (inner[0] if inner else None)
        if target is not None:
            yield from _leaves(target, (*prefix, alias))
        elif alias != "limits":
            yield (*prefix, alias), annotation


def _values(annotation: Any) -> tuple[Any, ...]:
    text = repr(annotation)
    if "int" in text or "float" in text:
        return NUMBERS + ("", "x")
    if "bool" in text:
        return ("maybe", 2, "")
    if "tuple" in text:
        return ((), ("",), ("a@b",), ("x" * 300 + "@a.b",), "not-a-list")
    return STRINGS + (0, -1, 10**12)


def mutations(stack: str) -> Iterator[Mutation]:
    """Every hostile value for every leaf key of the stack config, and for every service limit."""
    for name, field in StackConfig.model_fields.items():  # whole sections of the wrong shape
        for value in ("", "x", "null", "[]", "{", [], {}, 0, [{}]):
            yield Mutation(stack, (field.alias or name,), value)
    for path, annotation in _leaves(StackConfig, ()):
        for value in _values(annotation):
            yield Mutation(stack, path, value)
    for service in SERVICES:
        for field in ("memoryMb", "cpus"):
            for value in (0, -1, 0.001, 0.009, 1, 6, 16, 32, 10**9, "x"):
                yield Mutation(stack, ("limits", service, field), value)


@dataclass
class Outcome:
    mutation: Mutation
    verdict: str  # refused | crashed-in-load | broke-in-deploy | tool-refused | accepted
    detail: str


def _deploy(stack: str, raw: dict[str, Any]) -> tuple[RecordingMonitor, BaseException | None]:
    from infra.config import load_current
    from infra.platform import build

    secret_keys = [f"{PROJECT}:{k}" for k in secrets_for(stack)]
    monitor = install_mocks(stack, raw, secret_keys)
    failure: list[BaseException] = []

    @pulumi.runtime.test
    def program():
        return pulumi.Output.from_input(build(load_current())).apply(lambda _: None)

    try:
        program()
    except BaseException as exc:  # noqa: BLE001 - any failure is the finding
        failure.append(exc)
    return monitor, failure[0] if failure else None


def _tool(argv: list[str]) -> str | None:
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    if done.returncode == 0:
        return None
    lines = (done.stderr or done.stdout).strip().splitlines() or ["(no output)"]
    return next((line for line in lines if "emerg" in line or "error" in line.lower()), lines[0])[:200]


def tool_findings(stack_name: str, config: StackConfig, folder: Path) -> list[str]:
    """What the real tools and the runtime limits say about the configs of an accepted stack."""
    from components.gateway.component import GatewayArgs, gateway_render
    from components.gateway.render import render_nginx_conf, lua_files
    from components.monitoring import render
    from infra.catalog import declare_services

    findings: list[str] = []
    catalog = declare_services(config)
    nginx = shutil.which("nginx")
    if nginx:
        gateway = gateway_render(GatewayArgs.model_construct(
            catalog=catalog, redis_password="x", domain=config.gateway.domain, tls=None,
            public_https_port=config.ports.https or 443, rate_limit_rps=config.gateway.rate_limit_rps,
            rate_limit_burst=config.gateway.rate_limit_burst, depends_on=()))
        (folder / "lua").mkdir(exist_ok=True)
        for name, text in lua_files().items():
            (folder / "lua" / name).write_text(text)
        modules = tuple(str(p) for p in (Path("/usr/lib/nginx/modules/ndk_http_module.so"),
                                         Path("/usr/lib/nginx/modules/ngx_http_lua_module.so")) if p.exists())
        local = gateway.model_copy(update=dict(
            lua_dir=str(folder / "lua"), access_log=str(folder / "access.log"), error_log=str(folder / "error.log"),
            pid_path=str(folder / "nginx.pid"), temp_dir=str(folder), load_modules=modules, listen_address="127.0.0.1"))
        (folder / "nginx.conf").write_text(render_nginx_conf(local))
        problem = _tool([nginx, "-t", "-q", "-p", str(folder), "-c", str(folder / "nginx.conf")])
        if problem:
            findings.append(f"nginx -t: {problem}")
    amtool = shutil.which("amtool")
    if amtool:
        (folder / "alertmanager.yml").write_text(render.render_alertmanager_config(config.smtp, "pw"))
        problem = _tool([amtool, "check-config", str(folder / "alertmanager.yml")])
        if problem:
            findings.append(f"amtool: {problem}")
    promtool = shutil.which("promtool")
    if promtool and config.monitoring.enabled:
        (folder / "rules.yml").write_text(render.render_alert_rules(config.monitoring.thresholds))
        (folder / "prometheus.yml").write_text(render.render_prometheus_config(
            catalog, scrape_interval_s=config.monitoring.scrape_interval_s, stack=stack_name, config_dir=str(folder)))
        problem = _tool([promtool, "check", "config", "--syntax-only", str(folder / "prometheus.yml")])
        if problem:
            findings.append(f"promtool: {problem}")
    # Docker refuses a CPU limit below 0.01 ("Range of CPUs is from 0.01 to ...").
    for service in catalog.services:
        if service.limits.cpus < 0.01:
            findings.append(f"docker: {service.name} cpus {service.limits.cpus} below 0.01")
    target = config.target
    if target.kind == "ssh" and shutil.which("ssh"):
        problem = _tool(["ssh", "-G", "-p", str(target.port), f"{target.user}@{target.host}"])
        if problem:
            findings.append(f"ssh -G: {problem}")
        if target.port in catalog.public_ports():
            findings.append(f"ssh port {target.port} is also a public gateway port")
    return findings


def deployed_findings(monitor: RecordingMonitor) -> list[str]:
    """What the registered containers say, read the way the running platform would: connection
    pools against PostgreSQL's max_connections, published ports nothing listens on."""
    findings: list[str] = []
    containers = {c.plain["name"].split("-", 2)[-1]: c.plain for c in monitor.of_type("docker:index/container:Container")}
    python_pool = int(re.search(r"^PG_MAX_CONNECTIONS = (\d+)", PYAPI.read_text(), re.M).group(1))
    pools = 0
    for name, spec in containers.items():
        env = "\n".join(spec.get("envs") or [])
        dotnet = re.search(r"Maximum Pool Size=(\d+)", env)
        pools += int(dotnet.group(1)) if dotnet else python_pool if name.startswith("python-api") else 0
        pools += 2 if name == "postgres-exporter" else 0
    if "postgres" in containers:
        max_connections = int(next(a for a in containers["postgres"]["command"] if a.startswith("max_connections=")).split("=")[1])
        if pools > max_connections - SUPERUSER_SLOTS:
            findings.append(f"postgres: pools may open {pools} of {max_connections - SUPERUSER_SLOTS} usable connections")
    gateway = containers.get("gateway")
    if gateway:
        # the running gateway serves what its config command installs, not its bootstrap file
        (command,) = [c for c in monitor.registrations if c.name == "gateway-config"]
        conf = next(text for path, (text, _) in gateway_installed_files(command).items() if path.endswith("nginx.conf"))
        for port in gateway.get("ports") or []:
            internal, external = int(port["internal"]), int(port["external"])
            if f"listen {internal}" not in conf:
                findings.append(f"gateway: host port {external} goes to {internal}, where nginx does not listen")
    return findings


def judge(mutation: Mutation, folder: Path) -> Outcome:
    raw = mutation.raw()
    try:
        stack = load(raw, mutation.stack)
    except ConfigError as exc:
        return Outcome(mutation, "refused", str(exc))
    except Exception as exc:  # noqa: BLE001 - a non-ConfigError escaping load is the finding
        return Outcome(mutation, "crashed-in-load", f"{type(exc).__name__}: {exc}"[:200])
    monitor, failure = _deploy(mutation.stack, raw)
    if failure is not None:
        return Outcome(mutation, "broke-in-deploy", f"after {len(monitor.registrations)} resources: "
                       f"{type(failure).__name__}: " + str(failure).splitlines()[0][:160])
    findings = tool_findings(mutation.stack, stack.config, folder) + deployed_findings(monitor)
    if findings:
        return Outcome(mutation, "tool-refused", "; ".join(findings))
    return Outcome(mutation, "accepted", "")


def main(stacks: list[str]) -> int:
    folder = Path(tempfile.mkdtemp(prefix="config-probe-"))
    defects = 0
    try:
        for stack in stacks:
            for mutation in mutations(stack):
                outcome = judge(mutation, folder)
                if outcome.verdict not in ("refused", "accepted"):
                    defects += 1
                    print(f"{stack}\t{mutation.key}\t{mutation.value!r:.40}\t{outcome.verdict}\t{outcome.detail}", flush=True)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    print(f"{defects} defects", file=sys.stderr)
    return 1 if defects else 0


if __name__ == "__main__":
    os.environ.setdefault("PULUMI_TEST_MODE", "true")
    sys.exit(main(sys.argv[1:] or ["qa", "prod"]))
