"""Stack names are free and `coderz:environment` is the kind; stacks on one host share no
port (infra/stackset.py), checked over the repo's stack files and enforced by the loader."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from infra.config import STACKS, ConfigError, load, load_current
from infra.stackset import StackFile, first_clash, next_free_block, read_stack, read_stacks, stack_names
from tests.mocks import engine_config, install_mocks, secrets_for
from tests.standins import copy_project


def raw_config(stack: str = "qa", **overrides) -> dict:
    raw, _ = engine_config(stack, secrets=secrets_for(stack), overrides=overrides)
    return raw


def stack_text(environment: str, host: str | None, base: int, http: int, https: int | None = None) -> str:
    target = {"kind": "ssh", "host": host} if host else {"kind": "local"}
    ports = {"base": base, "http": http, **({"https": https} if https else {})}
    config = {"coderz:environment": environment, "coderz:target": target, "coderz:ports": ports}
    if https:  # something must serve it: a certificate by ACME
        config["coderz:gateway"] = {"domain": "a.coderz.example", "acme": {"email": "ops@coderz.example"}}
    return json.dumps({"config": config})


# --- names and kinds ---------------------------------------------------------------------------


@pytest.mark.parametrize("name,kind", [("qa-2", "qa"), ("pr-123", "qa"), ("prod.eu_1", "prod"), ("Dev-A", "dev")])
def test_any_valid_stack_name_may_be_of_any_kind(name, kind):
    source = {"dev": "dev", "qa": "qa", "prod": "prod"}[kind]
    assert load(raw_config(source), name).config.environment == kind


@pytest.mark.parametrize("name", ["", "a b", "a/b", "x" * 101, "naïve", "semi;colon", "new\nline"])
def test_a_name_outside_pulumis_rule_is_refused(name):
    with pytest.raises(ConfigError, match="stack name .*: a stack name is 1-100 letters"):
        load(raw_config(), name)


@pytest.mark.parametrize("stack", STACKS)
def test_a_stack_named_like_a_kind_must_be_that_kind(stack):
    other = "qa" if stack != "qa" else "dev"
    raw = raw_config(stack, **{"coderz:environment": other})
    with pytest.raises(ConfigError, match=f"coderz:environment: says '{other}' in stack '{stack}'"):
        load(raw, stack)


# --- the repo's stack files --------------------------------------------------------------------


def test_the_repos_stack_files_are_read_and_none_clashes():
    stacks = read_stacks()
    assert set(STACKS) <= set(stacks) and set(stacks) == set(stack_names())
    assert stacks["qa"].host == "ssh://qa.coderz.example:22" and stacks["dev"].host == "unix:///var/run/docker.sock"
    assert stacks["prod"].block == range(5000, 5100) and stacks["prod"].public_ports == {
        80: "coderz:ports.http", 443: "coderz:ports.https"}
    for stack in stacks.values():
        assert first_clash(stack, stacks.values()) is None, stack.name


# --- clashes -------------------------------------------------------------------------------------


def sf(name: str, text: str, tmp_path: Path) -> StackFile:
    (tmp_path / f"Pulumi.{name}.yaml").write_text(text)
    return read_stack(name, tmp_path)


@pytest.mark.parametrize("mine,expected", [
    (stack_text("qa", "qa.coderz.example", 5150, 8080),
     "Pulumi.b.yaml: coderz:ports.base: loopback block 5150-5249 overlaps Pulumi.a.yaml's block 5100-5199 "
     "on host ssh://qa.coderz.example:22"),
    (stack_text("qa", "QA.coderz.example", 5300, 80),
     "Pulumi.b.yaml: coderz:ports.http: public port 80 is also Pulumi.a.yaml's coderz:ports.http "
     "on host ssh://qa.coderz.example:22"),
    (stack_text("qa", "qa.coderz.example", 5300, 5132),
     "Pulumi.b.yaml: coderz:ports.http: public port 5132 lies in Pulumi.a.yaml's loopback block 5100-5199 "
     "on host ssh://qa.coderz.example:22"),
    (stack_text("qa", "qa.coderz.example", 8000, 8080, 8443),
     "Pulumi.b.yaml: coderz:ports.base: loopback block 8000-8099 holds Pulumi.a.yaml's public port 8088 "
     "(coderz:ports.https) on host ssh://qa.coderz.example:22"),
])
def test_stacks_on_one_host_clash_on_any_shared_port(tmp_path, mine, expected):
    a = sf("a", stack_text("qa", "qa.coderz.example", 5100, 80, 8088), tmp_path)
    assert first_clash(sf("b", mine, tmp_path), [a]) == expected


def test_stacks_on_different_hosts_never_clash(tmp_path):
    a = sf("a", stack_text("qa", "qa.coderz.example", 5100, 80), tmp_path)
    assert first_clash(sf("b", stack_text("qa", "other.example", 5100, 80), tmp_path), [a]) is None
    assert first_clash(sf("c", stack_text("dev", None, 5100, 80), tmp_path), [a]) is None


def test_next_free_block_skips_blocks_and_public_ports_on_the_host(tmp_path):
    stacks = read_stacks()
    assert next_free_block(stacks["qa"].host, stacks.values()) == 5000  # prod's 5000 is on another host
    host = "ssh://h.example:22"
    a = sf("a", stack_text("qa", "h.example", 5000, 80), tmp_path)
    b = sf("b", stack_text("qa", "h.example", 5150, 5280), tmp_path)  # unaligned, public port in 5200s
    assert next_free_block(host, [a, b]) == 5300
    assert next_free_block(host, [a, b], public_ports=[5333]) == 5400
    crowded = [StackFile(f"s{i}", a.config.model_copy(update={"ports": a.config.ports.model_copy(
        update={"base": base})})) for i, base in enumerate(range(1024, 65_100, 100))]
    with pytest.raises(ValueError, match="no free port block left on host ssh://h.example:22"):
        next_free_block(host, crowded)


# --- enforced by the loader for the running stack --------------------------------------------------


def test_the_running_stack_is_checked_against_its_siblings():
    """A stack `qa-2` with qa's file would take qa's ports on qa's host: refused, naming both."""
    install_mocks("qa-2", raw_config("qa"), ["coderz:sshPrivateKey", "coderz:smtpPassword"])
    with pytest.raises(ConfigError) as caught:
        load_current()
    assert str(caught.value) == ("Pulumi.qa-2.yaml: coderz:ports.base: loopback block 5100-5199 overlaps "
                                 "Pulumi.qa.yaml's block 5100-5199 on host ssh://qa.coderz.example:22")


def test_the_running_stack_on_its_own_block_and_port_passes():
    install_mocks("qa-2", raw_config("qa", **{"coderz:ports": {"base": 5300, "http": 5398, "https": 5399}}),
                  ["coderz:sshPrivateKey", "coderz:smtpPassword"])
    assert load_current().config.ports.base == 5300


def test_an_invalid_sibling_file_is_named(tmp_path):
    root = copy_project(tmp_path)
    (root / "Pulumi.broken.yaml").write_text(json.dumps({"config": {"coderz:ports": {"base": 10}}}))
    install_mocks("qa", raw_config("qa"), ["coderz:sshPrivateKey", "coderz:smtpPassword"])
    with pytest.raises(ConfigError, match=r"^Pulumi.broken.yaml: coderz:ports.base: Input should be greater"):
        load_current(root)


def test_a_stack_that_clashes_with_a_sibling_registers_nothing():
    from infra.platform import build

    monitor = install_mocks("qa-2", raw_config("qa"), ["coderz:sshPrivateKey", "coderz:smtpPassword"])
    with pytest.raises(ConfigError, match="overlaps Pulumi.qa.yaml's block"):
        build(load_current())
    assert monitor.registrations == []
