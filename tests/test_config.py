"""A wrong stack file stops the program with one message naming the file and the exact key,
before any resource is registered."""

from __future__ import annotations

import json

import pulumi
import pytest

from infra.catalog import declare_services
from infra.config import STACKS, ConfigError, load, load_current, parse
from tests.mocks import TEST_SECRETS, engine_config, install_mocks, secrets_for


def raw_config(stack: str = "qa", **overrides) -> dict:
    raw, _ = engine_config(stack, secrets=secrets_for(stack), overrides=overrides)
    return raw


def error_of(raw: dict, stack: str = "qa") -> str:
    with pytest.raises(ConfigError) as caught:
        load(raw, stack)
    return str(caught.value)


@pytest.mark.parametrize("stack", STACKS)
def test_every_stack_file_is_valid(stack):
    config = load(raw_config(stack), stack).config
    assert config.environment == stack


def test_typo_in_a_section_key_is_named():
    raw = raw_config()
    gateway = json.loads(raw["coderz:gateway"])
    gateway["rateLimitRsp"] = 5
    raw["coderz:gateway"] = json.dumps(gateway)
    assert error_of(raw) == "Pulumi.qa.yaml: coderz:gateway.rateLimitRsp: unknown key (typo?)"


def test_unknown_top_level_key_in_our_namespace_is_an_error():
    raw = raw_config()
    raw["coderz:gatewy"] = json.dumps({"domain": "x"})
    assert error_of(raw) == "Pulumi.qa.yaml: coderz:gatewy: unknown key (typo?)"


def test_keys_of_other_namespaces_are_left_alone():
    raw = raw_config()
    raw["docker:host"] = "unix:///var/run/docker.sock"
    assert load(raw, "qa").config.environment == "qa"


def test_wrong_type_is_named_with_its_path():
    raw = raw_config(**{"coderz:apis": {"python": {"replicas": "many"}}})
    message = error_of(raw)
    assert message.startswith("Pulumi.qa.yaml: coderz:apis.python.replicas: ")
    assert "integer" in message


def test_port_out_of_range_is_named():
    raw = raw_config(**{"coderz:ports": {"base": 5100, "http": 70000}})
    assert error_of(raw).startswith("Pulumi.qa.yaml: coderz:ports.http: Input should be less than or equal to 65535")


def test_two_services_on_one_host_port_is_named():
    # postgres is published on base + 32; an http port there collides with it.
    raw = raw_config(**{"coderz:ports": {"base": 5100, "http": 5132, "https": 443}})
    message = error_of(raw)
    assert message.startswith("Pulumi.qa.yaml: coderz:ports.base: host port 5132 is taken twice")
    assert "gateway" in message and "postgres" in message


def test_ssh_target_without_key_is_named():
    raw = raw_config()
    del raw["coderz:sshPrivateKey"]
    assert error_of(raw).startswith("Pulumi.qa.yaml: coderz:sshPrivateKey: an ssh target needs a key")


def test_ssh_target_without_host_is_named():
    raw = raw_config(**{"coderz:target": {"kind": "ssh", "user": "deploy"}})
    assert error_of(raw).startswith("Pulumi.qa.yaml: coderz:target: ")
    assert "host" in error_of(raw)


def test_unknown_environment_name_is_named():
    raw = raw_config(**{"coderz:environment": "staging"})
    message = error_of(raw)
    assert message.startswith("Pulumi.qa.yaml: coderz:environment: Input should be 'dev', 'qa' or 'prod'")


def test_environment_must_match_the_stack_it_is_in():
    raw = raw_config(**{"coderz:environment": "prod"})
    assert error_of(raw) == "Pulumi.qa.yaml: coderz:environment: says 'prod' in stack 'qa'"


def test_missing_required_key_is_named():
    raw = raw_config(**{"coderz:target": {"host": "qa.coderz.example"}})
    assert error_of(raw) == "Pulumi.qa.yaml: coderz:target.kind: required key is missing"


def test_an_empty_stack_file_is_the_dev_stack():
    config = load({}, "dev").config
    assert (config.environment, config.target.kind, config.ports.base, config.ports.http) == ("dev", "local", 5200, 8088)


def test_a_qa_stack_file_without_environment_is_refused():
    raw = raw_config()
    del raw["coderz:environment"]
    assert error_of(raw) == "Pulumi.qa.yaml: coderz:environment: says 'dev' in stack 'qa'"


def test_unpinned_image_is_refused():
    raw = raw_config(**{"coderz:postgres": {"image": "postgres:latest"}})
    message = error_of(raw)
    assert message.startswith("Pulumi.qa.yaml: coderz:postgres.image: ")
    assert "pinned" in message


def test_a_bad_stack_registers_nothing():
    raw = raw_config()
    raw["coderz:gatewy"] = "{}"
    monitor = install_mocks("qa", raw, ["coderz:sshPrivateKey"])
    from infra.platform import build

    with pytest.raises(ConfigError):
        build(load_current())
    assert monitor.registrations == []


def test_secrets_leave_the_loader_only_as_secret_outputs():
    raw, _ = engine_config("prod", secrets=TEST_SECRETS)
    stack = load(raw, "prod")
    for value, plain in (
        (stack.secrets.ssh_private_key, TEST_SECRETS["sshPrivateKey"]),
        (stack.secrets.tls_private_key, TEST_SECRETS["tlsPrivateKey"]),
        (stack.secrets.smtp_password, TEST_SECRETS["smtpPassword"]),
    ):
        assert isinstance(value, pulumi.Output)
        assert plain not in repr(stack.config.model_dump())


def test_prod_keeps_data_and_qa_does_not_unless_asked():
    assert load(raw_config("prod"), "prod").config.keeps_data
    assert not load(raw_config("qa"), "qa").config.keeps_data
    assert load(raw_config("qa", **{"coderz:protectData": "true"}), "qa").config.keeps_data


def test_scalar_config_strings_are_typed_like_the_engine_hands_them():
    config, _ = parse(
        {"coderz:environment": "dev", "coderz:target": '{"kind": "local"}', "coderz:ports": '{"base": 5200, "http": 8088}',
         "coderz:protectData": "false"},
        "dev",
    )
    assert config.protect_data is False
    assert declare_services(config).get("postgres").host_port == 5232


def test_limits_override_the_declared_defaults_by_service_name():
    stack = load(raw_config("prod"), "prod")
    catalog = declare_services(stack.config)
    assert catalog.get("postgres").limits.memory_mb == 4096
    assert catalog.get("grafana").limits.memory_mb == 256  # declared default, not overridden


def test_limits_for_an_unknown_service_are_named():
    raw = raw_config(**{"coderz:limits": {"postgress": {"memoryMb": 512, "cpus": 1}}})
    message = error_of(raw)
    assert message.startswith("Pulumi.qa.yaml: coderz:limits.postgress: no such service in this stack")


def test_limits_for_a_service_of_a_pipeline_that_is_off_are_named():
    raw = raw_config(**{"coderz:limits": {"kibana": {"memoryMb": 512, "cpus": 1}}})  # qa runs no ELK
    assert error_of(raw).startswith("Pulumi.qa.yaml: coderz:limits.kibana: no such service")


def test_a_limit_out_of_range_is_named_with_the_service():
    raw = raw_config(**{"coderz:limits": {"redis": {"memoryMb": 4, "cpus": 1}}})
    assert error_of(raw).startswith("Pulumi.qa.yaml: coderz:limits.redis.memoryMb: Input should be greater than or equal to 16")


def test_elasticsearch_memory_must_leave_room_above_its_heap():
    raw = raw_config("prod", **{"coderz:limits": {"elasticsearch": {"memoryMb": 600, "cpus": 1}}})
    assert error_of(raw, "prod").startswith("Pulumi.prod.yaml: coderz:limits.elasticsearch.memoryMb: must leave room")
