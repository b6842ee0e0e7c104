"""Hostile and careless stack files, each refused before any resource exists, with one message
naming the file and the key.

The value rows are of the kinds tests/config_probe.py found passing the old checks and breaking
later (after N registered resources, or in nginx -t, amtool, ssh, Docker's limits or
PostgreSQL's connection slots), plus values no tool here can judge but that are plainly wrong
(a domain with an empty label, an image name Docker would not parse)."""

from __future__ import annotations

import random
import re
from pathlib import Path

import pytest

from components.api import DB_POOL_PER_REPLICA
from infra.config import PROJECT, STACKS, ConfigError, load, load_current
from tests.config_probe import Mutation, judge, mutations
from tests.mocks import (
    REPO_ROOT,
    RecordingMonitor,
    deploy_stack,
    engine_config,
    install_mocks,
    openssh_key_text,
    secrets_for,
)
from tests.servers import require_tool

# (stack, key path, value, the key the error must name)
VALUE_CASES = [
    ("qa", "gateway.domain", "", "gateway.domain"),
    ("qa", "gateway.domain", "qa.coderz.example;", "gateway.domain"),
    ("qa", "gateway.domain", "qa.coderz.example\nserver_name evil", "gateway.domain"),
    ("qa", "gateway.domain", "ünïcode.example", "gateway.domain"),
    ("qa", "gateway.domain", "qa..coderz.example", "gateway.domain"),
    ("prod", "gateway.domain", "localhost", "gateway.domain"),
    ("prod", "gateway.domain", "10.0.0.1", "gateway.domain"),
    ("qa", "limits.postgres.memoryMb", 32, "limits.postgres.memoryMb"),
    ("qa", "limits.gateway.memoryMb", 16, "limits.gateway.memoryMb"),
    ("prod", "limits.kibana.memoryMb", 128, "limits.kibana.memoryMb"),
    ("qa", "limits.redis.cpus", 0.001, "limits.redis.cpus"),
    ("qa", "limits.grafana.cpus", "NaN", "limits.grafana.cpus"),
    ("qa", "target.host", "qa.coderz.example; rm -rf /", "target.host"),
    ("qa", "target.host", "-oProxyCommand=id", "target.host"),
    ("qa", "target.host", "300.1.1.1", "target.host"),
    ("qa", "target.host", " ", "target.host"),
    ("qa", "target.user", "deploy\n", "target.user"),
    ("qa", "target.user", "-l", "target.user"),
    ("qa", "target.user", "", "target.user"),
    ("dev", "target.socket", "unix://", "target.socket"),
    ("dev", "target.socket", "unix:///var/run/docker.sock; id", "target.socket"),
    ("dev", "target.socket", "tcp://engine.example", "target.socket"),
    ("dev", "target.host", "dev.example", "target.host"),
    ("qa", "gateway.rateLimitBurst", 0, "gateway.rateLimitBurst"),
    ("qa", "gateway.rateLimitRps", 2**63, "gateway.rateLimitRps"),
    ("qa", "smtp.host", "", "smtp.host"),
    ("qa", "smtp.host", "smtp example", "smtp.host"),
    ("qa", "smtp.to", ["ops@coderz.example", "dev,ops@coderz.example"], "smtp.to[1]"),
    ("qa", "smtp.fromAddress", "Alerts <alerts@coderz.example>", "smtp.fromAddress"),
    ("qa", "ports.http", 22, "ports.http"),
    ("qa", "target.port", 80, "ports.http"),
    ("dev", "ports.https", 8443, "ports.https"),
    ("qa", "apis.dotnet.replicas", 3, "postgres.maxConnections"),
    ("prod", "postgres.maxConnections", 100, "postgres.maxConnections"),
    ("qa", "apis.python.image", "python:3.12;rm", "apis.python.image"),
    ("qa", "postgres.image", "Postgres:16.4", "postgres.image"),
]


def mutated(stack: str, path: str, value) -> dict:
    """The engine's config for `stack` with `value` at `path` (a section's dotted key)."""
    return Mutation(stack, tuple(path.split(".")), value).raw()


def deploy_refused(stack: str, raw: dict, root: Path | None = None) -> tuple[str, RecordingMonitor]:
    """Run the whole program under mocks; returns the ConfigError's message and the monitor."""
    from infra.platform import build

    monitor = install_mocks(stack, raw, [f"{PROJECT}:{k}" for k in secrets_for(stack)])
    with pytest.raises(ConfigError) as caught:
        build(load_current(root))
    return str(caught.value), monitor


@pytest.mark.parametrize("stack,path,value,key", VALUE_CASES, ids=[f"{c[0]}:{c[1]}={c[2]!r:.24}" for c in VALUE_CASES])
def test_a_value_that_breaks_later_is_refused_with_its_key_and_nothing_registered(stack, path, value, key):
    message, monitor = deploy_refused(stack, mutated(stack, path, value))
    assert message.startswith(f"Pulumi.{stack}.yaml: {PROJECT}:{key}: "), message
    assert monitor.registrations == []


# (what is done to Pulumi.qa.yaml's text, the start of the error, a phrase in it)
FILE_CASES = [
    ("syntax", lambda t: t + "  coderz:oops: [unclosed\n", r"Pulumi\.qa\.yaml:\d+:\d+: not valid YAML", "not valid YAML"),
    ("tab", lambda t: t.replace("    user: deploy", "\tuser: deploy"), r"Pulumi\.qa\.yaml:\d+:\d+: ", "not valid YAML"),
    ("unknown-tag", lambda t: t.replace("    user: deploy", "    user: !shell deploy"), r"Pulumi\.qa\.yaml:\d+:\d+: ",
     "could not determine a constructor for the tag '!shell'"),
    ("duplicate-nested", lambda t: t.replace("    user: deploy\n", "    user: deploy\n    host: evil.example\n"),
     r"Pulumi\.qa\.yaml:\d+: coderz:target\.host: ", "duplicate key (first at line 7"),
    ("duplicate-section", lambda t: t + "  coderz:environment: prod\n", r"Pulumi\.qa\.yaml:\d+: coderz:environment: ",
     "duplicate key (first at line 4"),
    ("outside-config", lambda t: t + "gateway:\n  domain: qa.coderz.example\n", r"Pulumi\.qa\.yaml:\d+: gateway: ",
     "not a stack file key"),
    ("config-not-mapping", lambda t: t.split("config:")[0] + "config: [1, 2]\n", r"Pulumi\.qa\.yaml:\d+: config: ",
     "must be a mapping"),
    ("plaintext-ssh-key", lambda t: t + "  coderz:sshPrivateKey: |\n    -----BEGIN OPENSSH PRIVATE KEY-----\n    b3Blbn\n"
     "    -----END OPENSSH PRIVATE KEY-----\n", r"Pulumi\.qa\.yaml:\d+: coderz:sshPrivateKey: ", "a secret in plain text"),
    ("plaintext-password", lambda t: t + "  coderz:smtpPassword: hunter2\n", r"Pulumi\.qa\.yaml:\d+: coderz:smtpPassword: ",
     "a secret in plain text"),
    ("secure-but-plain", lambda t: t + "  coderz:smtpPassword:\n    secure: hunter2\n",
     r"Pulumi\.qa\.yaml:\d+: coderz:smtpPassword: ", "a secret in plain text"),
    ("key-in-another-value", lambda t: t + "  coderz:notes: |\n    -----BEGIN RSA PRIVATE KEY-----\n",
     r"Pulumi\.qa\.yaml:\d+: coderz:notes: ", "a private key in plain text"),
]


SSH_KEY_CASES = [
    ("hunter2", "is not a private key"),
    ("-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----", "is not a private key"),
    (openssh_key_text(b"aes256-ctr"), "protected by a passphrase"),
    ("-----BEGIN RSA PRIVATE KEY-----\nProc-Type: 4,ENCRYPTED\nDEK-Info: AES-128-CBC,00\n\nAAAA\n-----END RSA PRIVATE KEY-----",
     "protected by a passphrase"),
    ("-----BEGIN OPENSSH PRIVATE KEY-----\nnot base64 at all!\n-----END OPENSSH PRIVATE KEY-----", "not valid base64"),
    ("-----BEGIN OPENSSH PRIVATE KEY-----\nAAAA\n-----END OPENSSH PRIVATE KEY-----", "not an OpenSSH private key"),
]


@pytest.mark.parametrize("key,phrase", SSH_KEY_CASES, ids=[c[1] for c in SSH_KEY_CASES])
def test_an_ssh_key_ssh_cannot_use_unattended_is_refused_without_quoting_it(key, phrase):
    raw = engine_config("qa", secrets={**secrets_for("qa"), "sshPrivateKey": key})[0]
    message, monitor = deploy_refused("qa", raw)
    assert message.startswith("Pulumi.qa.yaml: coderz:sshPrivateKey: ") and phrase in message, message
    assert key not in message
    assert monitor.registrations == []


def qa_file(tmp_path: Path, change) -> Path:
    text = (REPO_ROOT / "Pulumi.qa.yaml").read_text()
    (tmp_path / "Pulumi.qa.yaml").write_text(change(text))
    return tmp_path


@pytest.mark.parametrize("name,change,start,phrase", FILE_CASES, ids=[c[0] for c in FILE_CASES])
def test_a_broken_stack_file_is_refused_with_file_line_and_key_and_nothing_registered(tmp_path, name, change, start, phrase):
    message, monitor = deploy_refused("qa", engine_config("qa", secrets=secrets_for("qa"))[0], qa_file(tmp_path, change))
    assert re.match(start, message), message
    assert phrase in message, message
    assert monitor.registrations == []


def test_a_duplicate_key_names_both_lines(tmp_path):
    root = qa_file(tmp_path, lambda t: t.replace("    user: deploy\n", "    user: deploy\n    host: evil.example\n"))
    message, _ = deploy_refused("qa", engine_config("qa", secrets=secrets_for("qa"))[0], root)
    lines = (root / "Pulumi.qa.yaml").read_text().splitlines()
    second = int(message.split(":")[1])
    first = int(re.search(r"first at line (\d+)", message).group(1))
    assert lines[first - 1].strip() == "host: qa.coderz.example" and lines[second - 1].strip() == "host: evil.example"


def test_encrypted_secrets_and_the_stack_file_keys_of_pulumi_are_accepted(tmp_path):
    def change(text: str) -> str:
        return ("secretsprovider: passphrase\nencryptionsalt: v1:abc=\n" + text
                + "  coderz:sshPrivateKey:\n    secure: v1:bm9uY2U=:Y2lwaGVydGV4dA==\n")
    from infra.platform import build
    from tests.conftest import run

    install_mocks("qa", engine_config("qa", secrets=secrets_for("qa"))[0], ["coderz:sshPrivateKey"])
    assert run(lambda: build(load_current(qa_file(tmp_path, change))))["gateway_url"]


@pytest.mark.parametrize("stack", STACKS)
def test_nothing_but_config_error_escapes_load_for_any_hostile_value(stack):
    """The property: for every key of the model and every hostile value the probe tries (and
    every row of the tables above), `load` returns a stack or raises ConfigError."""
    cases = [m.raw() for m in mutations(stack)]
    cases += [mutated(s, p, v) for s, p, v, _ in VALUE_CASES if s == stack]
    assert len(cases) > 500
    for raw in cases:
        try:
            load(raw, stack)
        except ConfigError as exc:
            assert str(exc).startswith(f"Pulumi.{stack}.yaml: "), str(exc)


def test_the_connection_budget_counts_the_pools_the_apps_really_open():
    app = (REPO_ROOT / "apps" / "pyapi" / "app.py").read_text()
    assert int(re.search(r"^PG_MAX_CONNECTIONS = (\d+)", app, re.M).group(1)) == DB_POOL_PER_REPLICA["python"]
    monitor, _ = deploy_stack("qa")
    (dotnet, *_) = [c.plain for c in monitor.of_type("docker:index/container:Container")
                    if c.plain["name"].startswith("coderz-qa-dotnet-api")]
    (connection,) = [e for e in dotnet["envs"] if e.startswith("ConnectionStrings__Default=")]
    assert connection.endswith(f";Maximum Pool Size={DB_POOL_PER_REPLICA['dotnet']}")


def test_every_stack_file_fits_its_connection_budget_with_room():
    from infra.catalog import declare_services
    from infra.platform import SUPERUSER_RESERVED_CONNECTIONS, postgres_connections

    for stack in STACKS:
        config = load(engine_config(stack, secrets=secrets_for(stack))[0], stack).config
        used = sum(postgres_connections(declare_services(config)).values())
        assert used <= config.postgres.max_connections - SUPERUSER_RESERVED_CONNECTIONS


def test_probe_mutations_cover_every_leaf_key_of_the_model():
    keys = {m.key for m in mutations("qa")}
    for expected in ("coderz:gateway.domain", "coderz:target.socket", "coderz:smtp.host", "coderz:ports.https",
                     "coderz:limits.postgres.memoryMb", "coderz:monitoring.thresholds.cpuPercent"):
        assert expected in keys
    assert Mutation("qa", ("target", "host"), "x").key == "coderz:target.host"


# Values at the edges of each rule: accepted, and the configs they render pass the real tools.
EDGE_CASES = [
    ("qa", ("gateway", "domain"), ".".join(["a" * 63, "b" * 63, "c" * 63, "d" * 61])),
    ("qa", ("gateway", "domain"), "xn--bcher-kva.example"),
    ("qa", ("gateway", "rateLimitRps"), 100_000),
    ("qa", ("gateway", "rateLimitBurst"), 1),
    ("qa", ("gateway", "rateLimitBurst"), 1_000_000),
    ("qa", ("target", "host"), "192.0.2.10"),
    ("qa", ("target", "user"), "deploy_2-x"),
    ("qa", ("target", "port"), 2222),
    ("qa", ("smtp", "host"), "10.0.0.25"),
    ("qa", ("smtp", "to"), ["a.b+c@mail.example.com", "ops@coderz.example"]),
    ("qa", ("limits", "postgres", "memoryMb"), 64),
    ("qa", ("limits", "gateway", "cpus"), 0.01),
    ("dev", ("target", "socket"), "tcp://127.0.0.1:2375"),
    ("qa", ("apis", "python", "image"), "registry.example.com:5000/team/py-api@sha256:" + "0" * 64),
]


@pytest.mark.parametrize("stack,path,value", EDGE_CASES, ids=[f"{c[0]}:{'.'.join(c[1])}={c[2]!r:.20}" for c in EDGE_CASES])
def test_values_at_the_edge_of_each_rule_deploy_and_pass_nginx_amtool_promtool_and_ssh(tmp_path, stack, path, value):
    for tool in ("nginx", "amtool", "promtool", "ssh"):
        require_tool(tool)
    outcome = judge(Mutation(stack, path, value), tmp_path)
    assert (outcome.verdict, outcome.detail) == ("accepted", "")


def test_nothing_but_config_error_escapes_the_stack_file_check_for_any_damaged_file(tmp_path):
    """The same property for the file: a seeded run of random damage (a character deleted, or
    one of YAML's special characters inserted) to every stack file."""
    from infra.stackfile import check_stack_file

    rng = random.Random(11)
    path = tmp_path / "Pulumi.qa.yaml"
    refused = 0
    for stack in STACKS:
        text = (REPO_ROOT / f"Pulumi.{stack}.yaml").read_text()
        for _ in range(150):
            at = rng.randrange(len(text))
            damage = "" if rng.random() < 0.3 else rng.choice(":-[]{}\t\n#&*!|>'\"%@`,? \x00\ufeff")
            path.write_text(text[:at] + damage + text[at + (damage == ""):], encoding="utf-8")
            try:
                check_stack_file(path)
            except ConfigError as exc:
                refused += 1
                assert str(exc).startswith("Pulumi.qa.yaml"), str(exc)
    assert refused > 50
    path.write_bytes((REPO_ROOT / "Pulumi.qa.yaml").read_bytes() + b"  coderz:x: \xff\xfe\n")
    with pytest.raises(ConfigError, match=r"^Pulumi\.qa\.yaml: not UTF-8 text"):
        check_stack_file(path)
