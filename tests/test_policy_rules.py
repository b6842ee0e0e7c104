"""Each guardrail policy called directly on passing and failing resources (SDK argument objects)."""

from __future__ import annotations

import pytest
from pulumi_policy import Secret

from tests.policy_harness import args, guardrails, violations

CONTAINER, IMAGE, VOLUME = guardrails.CONTAINER, guardrails.REMOTE_IMAGE, guardrails.VOLUME
PLAN = {"prefix": "coderz-prod", "public": {"80": "gateway", "443": "gateway"}, "loopback": {"5032": "postgres"}}
IMAGE_ID = "sha256:" + "ab" * 32


def container(**changes):
    props = dict(
        name="coderz-prod-web", image=IMAGE_ID, restart="unless-stopped", memory=256,
        healthcheck={"tests": ["CMD", "true"]}, envs=["MODE=prod"], ports=[],
    )
    props.update(changes)
    return props


def ports_of(name, ports, config=PLAN):
    return violations("coderz-published-ports", args(CONTAINER, container(name=name, ports=ports), config=config))


def test_published_ports_allow_the_gateway_public_and_declared_loopback_ports_only():
    assert ports_of("coderz-prod-gateway", [{"internal": 8080, "external": 80}, {"internal": 8443, "external": 443}]) == []
    assert ports_of("coderz-prod-postgres", [{"internal": 5432, "external": 5032, "ip": "127.0.0.1"}]) == []
    assert ports_of("coderz-prod-web", []) == []
    (public,) = ports_of("coderz-prod-postgres", [{"internal": 5432, "external": 5032}])
    assert "publishes 0.0.0.0:5032 beyond loopback" in public and "443 (gateway), 80 (gateway)" in public
    (other,) = ports_of("coderz-prod-grafana", [{"internal": 3000, "external": 80}])
    assert "beyond loopback" in other
    (loop,) = ports_of("coderz-prod-redis", [{"internal": 6379, "external": 5079, "ip": "127.0.0.1"}])
    assert "loopback port the stack does not declare for redis" in loop
    (stolen,) = ports_of("coderz-prod-redis", [{"internal": 6379, "external": 5032, "ip": "127.0.0.1"}])
    assert "does not declare for redis" in stolen
    (random,) = ports_of("coderz-prod-redis", [{"internal": 6379}])
    assert "random host port" in random
    (host,) = violations("coderz-published-ports", args(CONTAINER, container(networkMode="host")))
    assert "uses the host network" in host


def test_published_ports_without_a_port_plan_refuse_and_say_which_config_to_pass():
    (message,) = ports_of("coderz-qa-gateway", [{"internal": 8080, "external": 80}], config=None)
    assert "no port plan" in message and "--policy-pack-config policy/config/prod.json" in message


def test_replicas_are_matched_to_their_service():
    plan = {**PLAN, "loopback": {"5099": "dotnet-api"}}
    assert ports_of("coderz-prod-dotnet-api-3", [{"internal": 1, "external": 5099, "ip": "127.0.0.1"}], plan) == []


@pytest.mark.parametrize("policy,changes,expected", [
    ("coderz-health-check", {"healthcheck": None}, "has no health check"),
    ("coderz-health-check", {"healthcheck": {"tests": ["NONE"]}}, "has no health check"),
    ("coderz-health-check", {"healthcheck": {"tests": ["CMD"]}}, "has no health check"),
    # an empty command is always healthy: no check at all
    ("coderz-health-check", {"healthcheck": {"tests": ["CMD-SHELL", " "]}}, "has no health check"),
    ("coderz-health-check", {"healthcheck": {"tests": ["CMD", ""]}}, "has no health check"),
    ("coderz-restart-policy", {"restart": None}, "restart policy 'no'"),
    ("coderz-restart-policy", {"restart": "no"}, "restart policy 'no'"),
    ("coderz-memory-limit", {"memory": None}, "has no memory limit"),
    ("coderz-memory-limit", {"memory": 0}, "has no memory limit"),
    ("coderz-pinned-images", {"image": "redis"}, "has no tag (that means latest)"),
    ("coderz-pinned-images", {"image": "redis:latest"}, "is tagged latest"),
    ("coderz-pinned-images", {"image": "openresty/openresty:alpine"}, "floating tag 'alpine'"),
])
def test_container_hardening_policies_fail_with_their_message(policy, changes, expected):
    assert violations(policy, args(CONTAINER, container())) == []
    (message,) = violations(policy, args(CONTAINER, container(**changes)))
    assert expected in message and "coderz-prod-web" in message


@pytest.mark.parametrize("reference,problem", [
    ("postgres:16.4-alpine", None),
    ("mcr.microsoft.com/dotnet/samples:aspnetapp-9.0", None),
    ("coderz/pyapi:abcdefabcdef", None),
    ("localhost:5000/app@sha256:" + "0" * 64, None),
    ("localhost:5000/app", "has no tag"),
    ("redis:latest", "is tagged latest"),
    ("redis:stable", "floating tag"),
    ("redis:7 ", "malformed tag"),
    ("redis@sha256:abc", "floating tag"),
])
def test_pinned_image_rule(reference, problem):
    found = guardrails.pinned_problem(reference)
    assert (found is None) if problem is None else (problem in found)
    messages = violations("coderz-pinned-images", args(IMAGE, {"name": reference}))
    assert (messages == []) if problem is None else (problem in messages[0] and reference in messages[0])


SECRET_SAMPLES = [
    ("envs", ["DB_PASSWORD=hunter2"], "DB_PASSWORD=... (a secret-named variable)"),
    ("envs", ["GITHUB_TOKEN=abc"], "GITHUB_TOKEN=..."),
    ("command", ["sh", "-c", "curl -u x --password=hunter22 http://a"], "a password assignment"),
    ("command", ["psql", "postgresql://app:hunter2@db/app"], "a password in a URL"),
    ("uploads", [{"file": "/k.pem", "content": "-----BEGIN RSA PRIVATE KEY-----\nMII..."}], "a PEM private key"),
    ("uploads", [{"file": "/c.yml", "content": "smtp:\n  password: hunter2\n"}], "a password assignment"),
    ("envs", ["AWS_ID=AKIAABCDEFGHIJKLMNOP"], "an AWS access key"),
    ("envs", ["X=ghp_" + "a" * 36], "a GitHub token"),
    # the README's `*SECRET*=`: the word anywhere in the name, not only at its end
    ("envs", ["AWS_SECRET_ACCESS_KEY=hunter2/AbCdEfGhIjKlMnOpQrStUvWxYz0123456"], "AWS_SECRET_ACCESS_KEY=..."),
    ("envs", ["DB_PASSWORD_PLAIN=hunter2"], "DB_PASSWORD_PLAIN=..."),
    ("envs", ["SECRET_KEY_BASE=hunter2"], "SECRET_KEY_BASE=..."),
    ("envs", ["API_TOKEN_VALUE=hunter2"], "API_TOKEN_VALUE=..."),
]


@pytest.mark.parametrize("field,value,what", SECRET_SAMPLES)
def test_plain_text_secrets_fail_and_the_message_never_repeats_the_value(field, value, what):
    (message,) = violations("coderz-no-plaintext-secrets", args(CONTAINER, container(**{field: value})))
    assert what in message and f"{field}[" in message
    assert "hunter2" not in message and "AKIAABCD" not in message


@pytest.mark.parametrize("field,value,what", SECRET_SAMPLES)
def test_the_same_values_marked_secret_pass(field, value, what):
    assert violations("coderz-no-plaintext-secrets", args(CONTAINER, container(**{field: Secret(value)}))) == []
    assert violations("coderz-no-plaintext-secrets", args(CONTAINER, container(**{field: [Secret(v) for v in value]}))) == []


@pytest.mark.parametrize("text", [
    "POSTGRES_PASSWORD_FILE=/run/secrets/pg", "redis-server --requirepass \"$REDIS_PASSWORD\"", "MODE=prod",
    "password: ${SMTP_PASSWORD}", "TOKEN=", "postgresql://app@db/app",
    # names that only point at a secret, or merely contain the letters
    "POSTFIX_smtp_sasl_password_maps=texthash:/etc/postfix/coderz/sasl_passwd", "GITHUB_TOKEN_FILE=/run/secrets/t",
    "TOKEN_URL=https://auth.example/token", "TOKENIZER=bert", "SECRETARY=alice", "PASSENGERS=4",
    "SECRETS=0",  # docker-socket-proxy's section switch
])
def test_references_to_secrets_are_not_secrets(text):
    assert violations("coderz-no-plaintext-secrets", args(CONTAINER, container(envs=[text]))) == []


def test_commands_are_checked_for_secrets_too():
    (message,) = violations("coderz-no-plaintext-secrets", args("command:remote:Command", {"create": "echo 'token: s3cr3tvalue'"}))
    assert "create carries a password assignment" in message
    assert violations("coderz-no-plaintext-secrets", args("command:local:Command", {"create": "cat", "stdin": Secret("-----BEGIN OPENSSH PRIVATE KEY-----")})) == []


def test_a_command_environment_with_a_secret_named_variable_fails():
    kind = "command:remote:Command"
    (message,) = violations("coderz-no-plaintext-secrets", args(kind, {"create": "run", "environment": {"DB_PASSWORD": "hunter2"}}))
    assert "environment.DB_PASSWORD carries DB_PASSWORD=..." in message and "hunter2" not in message
    assert violations("coderz-no-plaintext-secrets", args(kind, {"environment": {"DB_PASSWORD": Secret("hunter2")}})) == []
    assert violations("coderz-no-plaintext-secrets", args(kind, {"environment": {"MODE": "prod", "PASSWORD_FILE": "/x"}})) == []


def test_data_volumes_are_protected_where_the_stack_keeps_data():
    policy = "coderz-data-volumes-protected"
    data = {"name": "coderz-prod-postgres-data"}
    assert violations(policy, args(VOLUME, data, protect=True, config={"keepData": True})) == []
    (message,) = violations(policy, args(VOLUME, data, protect=False, config={"keepData": True}))
    assert "coderz-prod-postgres-data is not protected" in message
    assert violations(policy, args(VOLUME, {"name": "coderz-prod-promtail-state"}, config={"keepData": True})) == []
    assert violations(policy, args(VOLUME, {"name": "coderz-dev-postgres-data"}, stack="dev", config={"keepData": False})) == []
    # Without a config file nothing says the stack may lose its data (a clone of prod named
    # prod-eu keeps it too): every data volume must be protected, never fewer.
    for stack in ("prod", "prod-eu", "dev"):
        assert violations(policy, args(VOLUME, {"name": f"coderz-{stack}-postgres-data"}, stack=stack)), stack
    assert violations(policy, args(VOLUME, {"name": "coderz-prod-eu-postgres-data"}, stack="prod-eu", protect=True)) == []


KEYED = '["-o", "ControlMaster=auto", "-i", "~/.ssh/coderz-prod.key"]'


@pytest.mark.parametrize("props,expected", [
    ({"host": "ssh://deploy@h:22", "sshOpts": KEYED}, None),
    ({"host": "ssh://deploy@h:22", "sshOpts": ["-i", "/k"]}, None),
    ({"host": "unix:///var/run/docker.sock"}, None),
    ({"host": "ssh://deploy@h:22"}, "has no key (-i <file>)"),
    ({"host": "ssh://deploy@h:22", "sshOpts": '["-i"]'}, "has no key (-i <file>)"),
    ({"host": "ssh://deploy:pw@h:22", "sshOpts": KEYED}, "the ssh host URL carries a password"),
    ({"host": "ssh://deploy@h:22", "sshOpts": '["-i", "/k", "-o", "PasswordAuthentication=yes"]'}, "allow password authentication"),
    ({"host": "ssh://deploy@h:22", "sshOpts": '["-i", "/k", "-oKbdInteractiveAuthentication=yes"]'}, "allow password authentication"),
    ({"host": "ssh://deploy@h:22", "sshOpts": ["-i", "/k", "-o", "ChallengeResponseAuthentication yes"]}, "allow password authentication"),
    ({"host": "ssh://deploy@h:22", "sshOpts": ["-i", "/k", "-o", "KbdInteractiveAuthentication=no"]}, None),
])
def test_docker_ssh_targets_use_a_key(props, expected):
    messages = violations("coderz-ssh-key-auth", args(guardrails.DOCKER_PROVIDER, props))
    assert (messages == []) if expected is None else (len(messages) == 1 and expected in messages[0])


def test_remote_commands_connect_with_a_key():
    policy, kind = "coderz-ssh-key-auth", "command:remote:Command"
    assert violations(policy, args(kind, {"connection": Secret({"host": "h", "privateKey": "k"})})) == []
    (password,) = violations(policy, args(kind, {"connection": {"host": "h", "privateKey": "k", "password": "pw"}}))
    assert "connects with a password" in password
    (keyless,) = violations(policy, args(kind, {"connection": {"host": "h"}}))
    assert "has no private key" in keyless
