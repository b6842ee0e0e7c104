"""The whole policy pack over the recorded resources of each stack, through pulumi-policy's own
analyzer (as `pulumi preview --policy-pack policy/ --policy-pack-config policy/config/<stack>.json`
runs it): every stack passes; each planted violation fails with its policy's message, mandatory
in qa and prod, advisory in dev."""

from __future__ import annotations

import ast
import functools

import pytest
from pulumi_policy import policy as sdk_policy

from infra.config import STACKS
from infra.policy_config import main as policy_config_main
from infra.policy_config import policy_names
from tests.mocks import REPO_ROOT, deploy_stack
from tests.policy_harness import analyze, guardrails, planted, stack_config

@functools.cache
def recorded(stack: str):
    monitor, _ = deploy_stack(stack)
    return monitor.registrations


def one(stack: str, type_suffix: str, name: str):
    (match,) = [r for r in recorded(stack) if r.type.endswith(type_suffix) and r.name == name]
    return match


def others(stack: str, *replaced):
    urns = {r.urn for r in replaced}
    return [r for r in recorded(stack) if r.urn not in urns]


@pytest.mark.parametrize("stack", STACKS)
def test_every_stack_passes_the_whole_pack(stack):
    assert analyze(recorded(stack), stack_config(stack)) == []


def test_the_pack_lists_every_policy_and_the_config_files_are_current():
    assert [p.name for p in guardrails.POLICIES] == policy_names()
    assert len(set(policy_names())) == 8
    assert policy_config_main([]) == 0, "run python -m infra.policy_config --write"
    for stack in STACKS:
        config = stack_config(stack)
        assert set(config) == set(policy_names())
        expected = "advisory" if stack == "dev" else "mandatory"
        assert {c["enforcementLevel"] for c in config.values()} == {expected}


def test_the_pack_entry_point_is_mandatory_by_default_and_keeps_secret_markers():
    tree = ast.parse((REPO_ROOT / "policy" / "__main__.py").read_text())
    calls = {n.func.id: n for n in ast.walk(tree) if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)}
    assert "keep_secret_markers" in calls
    (level,) = [k.value for k in calls["PolicyPack"].keywords if k.arg == "enforcement_level"]
    assert ast.unparse(level) == "EnforcementLevel.MANDATORY"
    requirement = (REPO_ROOT / "policy" / "requirements.txt").read_text()
    assert "pulumi-policy==1.21.0" in requirement


def add_env(entry):
    def change(inputs):
        inputs["envs"] = list(inputs.get("envs") or []) + [entry]
    return change


PLANTS = {
    "coderz-published-ports": (
        "Container", "postgres", lambda i: i["ports"][0].pop("ip"), "publishes 0.0.0.0:5032 beyond loopback"),
    "coderz-health-check": ("Container", "redis", lambda i: i.pop("healthcheck"), "coderz-prod-redis has no health check"),
    "coderz-restart-policy": ("Container", "redis", lambda i: i.update(restart="no"), "has restart policy 'no'"),
    "coderz-memory-limit": ("Container", "redis", lambda i: i.pop("memory"), "coderz-prod-redis has no memory limit"),
    "coderz-pinned-images": ("RemoteImage", "redis-image", lambda i: i.update(name="redis:latest"), "'redis:latest' is tagged latest"),
    "coderz-no-plaintext-secrets": (
        "Container", "logging-loki", add_env("ES_PASSWORD=hunter2"), "envs[0] carries ES_PASSWORD=... (a secret-named variable)"),
    "coderz-ssh-key-auth": (
        "providers:docker", "host-docker", lambda i: i.update(sshOpts='["-o", "ControlMaster=auto"]'), "has no key (-i <file>)"),
}


# dev runs on the local engine: it has no SSH target to plant into.
@pytest.mark.parametrize("policy,stack,level", [
    *[(policy, "prod", "mandatory") for policy in sorted(PLANTS)],
    *[(policy, "qa", "mandatory") for policy in ("coderz-pinned-images", "coderz-ssh-key-auth")],
    *[(policy, "dev", "advisory") for policy in sorted(PLANTS) if policy != "coderz-ssh-key-auth"],
])
def test_each_planted_violation_fails_with_its_policys_message(policy, stack, level):
    suffix, name, change, message = PLANTS[policy]
    if policy == "coderz-published-ports" and stack == "dev":
        message = "publishes 0.0.0.0:5232 beyond loopback"
    message = message.replace("coderz-prod-", f"coderz-{stack}-")
    original = one(stack, suffix, name)
    found = analyze([planted(original, change), *others(stack, original)], stack_config(stack))
    assert [(d.policy, d.level) for d in found] == [(policy, level)], found
    assert message in found[0].message


def test_an_unprotected_prod_data_volume_fails_and_dev_does_not_care():
    prod = one("prod", "Volume", "postgres-data")
    (found,) = analyze([planted(prod, lambda i: None, protect=False)], stack_config("prod"))
    assert found.policy == "coderz-data-volumes-protected" and found.level == "mandatory"
    assert "coderz-prod-postgres-data is not protected" in found.message
    dev = one("dev", "Volume", "postgres-data")
    assert dev.protect is False and analyze([dev], stack_config("dev")) == []


def test_a_remote_command_with_a_password_fails():
    command = one("prod", "command:remote:Command", "host-firewall")

    def add_password(inputs):
        inputs["connection"]["value"]["password"] = "pw"

    (found,) = analyze([planted(command, add_password)], stack_config("prod"))
    assert found.policy == "coderz-ssh-key-auth" and "connects with a password" in found.message


def test_without_a_config_file_the_pack_is_mandatory_asks_for_the_port_plan_and_wants_data_protected():
    found = analyze(recorded("dev"), None)
    assert {(d.policy, d.level) for d in found} == {("coderz-published-ports", "mandatory"),
                                                    ("coderz-data-volumes-protected", "mandatory")}
    ports = [d.message for d in found if d.policy == "coderz-published-ports"]
    assert ports and all("--policy-pack-config policy/config/dev.json" in m for m in ports)
    assert any("coderz-dev-postgres-data is not protected" in d.message for d in found)


def test_the_sdk_alone_would_unwrap_secrets_which_is_why_the_pack_keeps_the_markers(monkeypatch):
    postgres = one("prod", "Container", "postgres")
    assert analyze([postgres], stack_config("prod")) == []
    # What pulumi-policy 1.21 does by itself: every secret reaches the policy as plain text.
    monkeypatch.setattr(guardrails, "keep_secret_markers", lambda: None)
    monkeypatch.setattr(sdk_policy, "deserialize_properties", guardrails._original_deserialize)
    found = analyze([postgres], stack_config("prod"))
    assert [d.policy for d in found] == ["coderz-no-plaintext-secrets"]
    assert "POSTGRES_PASSWORD=..." in found[0].message
