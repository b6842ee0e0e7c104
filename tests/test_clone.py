"""`coderz clone` and `coderz destroy`: the clone of every stack file runs under mocks beside
its source and the other stacks on its host; every refusal writes nothing; the engine calls
are proven against a stand-in `pulumi` on PATH."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from infra.cli import EXIT_FAILED, EXIT_OK, EXIT_REFUSED, main
from infra.cloning import CloneRefused, needed_secrets, plan_clone, write_new_file
from infra.config import STACKS, load_current, stack_file_values
from infra.platform import build
from infra.stackset import read_stack
from tests.conftest import run
from tests.mocks import TEST_SECRETS, install_mocks
from tests.standins import calls, copy_project, install_pulumi, path_without, snapshot

RESOURCES_WITH_NAMES = ("docker:index/container:Container", "docker:index/volume:Volume", "docker:index/network:Network")


def deploy_file(name: str, root: Path):
    """The whole program under mocks for `root/Pulumi.<name>.yaml`, with the operator's secrets."""
    raw = stack_file_values(name, root)
    secrets = {key: TEST_SECRETS[key.split(":", 1)[1]] for key in needed_secrets(read_stack(name, root).config)}
    monitor = install_mocks(name, {**raw, **secrets}, list(secrets))
    run(lambda: build(load_current(root)))
    return monitor


def footprint(monitor) -> tuple[set[str], set[int]]:
    """The names a stack takes on its host, and the host ports it binds."""
    names, ports = set(), set()
    for resource in monitor.registrations:
        if resource.type in RESOURCES_WITH_NAMES:
            names.add(resource.plain["name"])
        if resource.type == "docker:index/container:Container":
            ports |= {port["external"] for port in resource.plain.get("ports") or []}
    return names, ports


def project(tmp_path: Path) -> Path:
    """The project's stack files in a folder of their own (the stand-ins' logs stay outside)."""
    (tmp_path / "project").mkdir()
    return copy_project(tmp_path / "project")


@pytest.mark.parametrize("source", STACKS)
def test_every_stack_cloned_twice_runs_beside_its_source_without_a_clash(tmp_path, source):
    root = copy_project(tmp_path)
    clones = [f"{source}-c1", f"{source}-c2"]
    for new in clones:  # the second clone must avoid the first as well as the source
        plan = plan_clone(root, source, new)
        write_new_file(plan.path, plan.text)
        assert plan.config.environment == read_stack(source, root).config.environment
        assert plan.config.keeps_data == read_stack(source, root).config.keeps_data
    on_host = [s for s in ("dev", "qa", "prod", *clones) if read_stack(s, root).host == read_stack(source, root).host]
    assert set(on_host) >= {source, *clones}
    prints = {name: footprint(deploy_file(name, root)) for name in on_host}
    for name, (names, ports) in prints.items():
        assert names and ports, name
        for other, (other_names, other_ports) in prints.items():
            if other != name:
                assert not names & other_names, f"{name} and {other} share {names & other_names}"
                assert not ports & other_ports, f"{name} and {other} share host ports {ports & other_ports}"


def test_a_clone_on_another_host_keeps_the_public_ports_and_takes_the_first_block(tmp_path):
    root = copy_project(tmp_path)
    plan = plan_clone(root, "prod", "prod-eu", host="eu.coderz.example", domain="eu.coderz.example")
    assert (plan.config.ports.base, plan.config.ports.http, plan.config.ports.https) == (5000, 80, 443)
    assert plan.config.target.host == "eu.coderz.example" and plan.config.gateway.domain == "eu.coderz.example"
    same_host = plan_clone(root, "prod", "prod-2", port_base=5700)
    assert (same_host.config.ports.base, same_host.config.ports.http, same_host.config.ports.https) == (5700, 5798, None)
    # ACME's HTTP-01 comes to port 80, which prod holds: the clone beside it serves plain HTTP
    assert same_host.config.gateway.domain is None and same_host.config.gateway.tls_mode is None


def test_a_domain_for_a_clone_beside_its_acme_source_is_refused(tmp_path):
    root = copy_project(tmp_path)
    before = sorted(p.name for p in root.iterdir())
    with pytest.raises(CloneRefused, match="needs ACME on port 80 of the host, which 'prod' holds"):
        plan_clone(root, "prod", "prod-2", domain="two.coderz.example")
    assert sorted(p.name for p in root.iterdir()) == before


def test_a_clone_never_shares_its_sources_path_in_the_backup_bucket(tmp_path):
    """A source that names its path in the S3 bucket: the clone gets its own (/coderz/<NEW>),
    or its archiving and backups would land in the source's repository."""
    from components.backup.render import s3_repo_path

    root = copy_project(tmp_path)
    source = root / "Pulumi.prod.yaml"
    source.write_text(source.read_text().replace(
        "    enabled: true\n    retentionDays: 30\n",
        "    enabled: true\n    retentionDays: 30\n    s3:\n      endpoint: s3.example.com\n      bucket: coderz-backups\n"
        "      region: eu-west-1\n      path: /prod-db\n", 1))
    origin = read_stack("prod", root).config.backup.s3
    assert origin is not None and s3_repo_path(origin, "prod") == "/prod-db"
    plan = plan_clone(root, "prod", "prod-eu", host="eu.coderz.example")
    clone = plan.config.backup.s3
    assert (clone.endpoint, clone.bucket, clone.region) == (origin.endpoint, origin.bucket, origin.region)
    assert s3_repo_path(clone, "prod-eu") == "/coderz/prod-eu" and "/prod-db" not in plan.text


def test_a_clone_is_judged_by_the_policy_pack_with_its_own_port_plan(tmp_path):
    """A clone has no committed policy/config/<NEW>.json: preview and drift render one from its
    file (its prefix and ports, mandatory for a qa clone), and the whole pack passes over the
    clone's resources under mocks; the source's config would not (other names, other ports)."""
    import json
    import shutil

    from infra.cli.engine import policy_pack_args
    from tests.policy_harness import analyze

    root = project(tmp_path)
    shutil.copytree(Path(__file__).resolve().parent.parent / "policy", root / "policy")
    plan = plan_clone(root, "qa", "pr-7")
    write_new_file(plan.path, plan.text)
    assert not (root / "policy" / "config" / "pr-7.json").exists()
    args = policy_pack_args("pr-7", root)
    assert args["policy_packs"] == [str(root / "policy")]
    config = json.loads(Path(args["policy_pack_configs"][0]).read_text())
    ports = config["coderz-published-ports"]
    assert ports["prefix"] == "coderz-pr-7" and {c["enforcementLevel"] for c in config.values()} == {"mandatory"}
    assert set(map(int, ports["loopback"])) <= set(range(plan.config.ports.base, plan.config.ports.base + 100))
    registrations = deploy_file("pr-7", root).registrations
    assert analyze(registrations, config) == []
    qa_config = json.loads((root / "policy" / "config" / "qa.json").read_text())
    assert analyze(registrations, qa_config), "the source's pack config must not fit the clone"
    # a stack with its committed file keeps it
    assert policy_pack_args("qa", root)["policy_pack_configs"] == [str(root / "policy" / "config" / "qa.json")]


def test_secrets_are_never_copied_as_text(tmp_path):
    root = copy_project(tmp_path)
    source = root / "Pulumi.qa.yaml"
    source.write_text(source.read_text() + "  coderz:sshPrivateKey:\n    secure: v1:AAAA-encrypted-for-qa\n"
                      "  other:token:\n    secure: v1:BBBB\nencryptionsalt: v1:qa-salt\n")
    plan = plan_clone(root, "qa", "qa-2")
    assert "secure" not in plan.text and "AAAA" not in plan.text and "salt" not in plan.text
    assert plan.copied_secrets == ("coderz:sshPrivateKey", "other:token")
    assert plan.missing_secrets == ("coderz:smtpPassword",)


# --- refusals: exit 2, one line, nothing written, no engine call -----------------------------------


@pytest.fixture
def engine(tmp_path, monkeypatch) -> Path:
    """A stand-in `pulumi` first on PATH; returns its call log."""
    log = tmp_path / "pulumi-calls.jsonl"
    install_pulumi(tmp_path / "bin", log)
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}:{path_without('pulumi')}")
    return log


@pytest.mark.parametrize("argv,reason", [
    (["clone", "qa", "prod"], "stack 'prod' exists already (Pulumi.prod.yaml)"),
    (["clone", "staging", "pr-1"], "no stack 'staging': there is no Pulumi.staging.yaml"),
    (["clone", "qa", "pr 1"], "NEW 'pr 1' is not a valid stack name"),
    (["clone", "qa", "../evil"], "NEW '../evil' is not a valid stack name"),
    (["clone", "q/a", "pr-1"], "SOURCE 'q/a' is not a valid stack name"),
    (["clone", "qa", "pr-1", "--port-base", "5150"], "the ports would clash: Pulumi.pr-1.yaml: coderz:ports.base: "
     "loopback block 5150-5249 overlaps Pulumi.qa.yaml's block 5100-5199 on host ssh://qa.coderz.example:22"),
    (["clone", "qa", "pr-1", "--port-base", "5030"], "the ports would clash: Pulumi.pr-1.yaml: coderz:ports.base: "
     "loopback block 5030-5129 overlaps Pulumi.qa.yaml's block"),
    (["clone", "qa", "pr-1", "--port-base", "70000"], "--port-base 70000 is outside 1024-65000"),
    (["clone", "dev", "pr-1", "--host", "qa.coderz.example"], "--host needs an ssh source"),
    (["clone", "qa", "pr-1", "--host", "ssh://x"], "--host 'ssh://x' is not a host name"),
    (["clone", "qa", "pr-1", "--domain", "a b"], "--domain 'a b' is not a host name"),
    (["clone", "qa", "pr-1", "--with-data"], "--with-data brings NEW up, but qa's file holds no value for "
     "coderz:sshPrivateKey, coderz:smtpPassword"),
    (["destroy", "prod"], "'prod' is a prod environment (Pulumi.prod.yaml: coderz:environment)"),
    (["destroy", "staging"], "no stack 'staging'"),
    (["destroy", "a b"], "'a b' is not a valid stack name"),
])
def test_a_refused_command_writes_nothing_and_calls_no_engine(tmp_path, engine, capsys, argv, reason):
    root = project(tmp_path)
    before = snapshot(root)
    assert main([*argv, "--dir", str(root)]) == EXIT_REFUSED
    err = capsys.readouterr().err
    assert err.startswith(f"coderz: {reason}") and err.count("\n") == 1, err
    assert snapshot(root) == before
    assert calls(engine) == []


def test_a_clone_named_like_another_kind_is_refused_by_the_loader(tmp_path, capsys):
    root = copy_project(tmp_path)
    (root / "Pulumi.prod.yaml").unlink()
    before = snapshot(root)
    assert main(["clone", "qa", "prod", "--dir", str(root)]) == EXIT_REFUSED
    assert "the clone would not validate: Pulumi.prod.yaml: coderz:environment: says 'qa' in stack 'prod'" in (
        capsys.readouterr().err)
    assert snapshot(root) == before


def test_a_prod_kind_under_another_name_is_not_destroyed(tmp_path, engine, capsys):
    root = copy_project(tmp_path)
    assert main(["clone", "prod", "prod-copy", "--dir", str(root)]) == EXIT_OK
    engine.unlink()
    assert main(["destroy", "prod-copy", "--remove", "--dir", str(root)]) == EXIT_REFUSED
    assert "'prod-copy' is a prod environment" in capsys.readouterr().err
    assert calls(engine) == [] and (root / "Pulumi.prod-copy.yaml").exists()


# --- the engine calls ----------------------------------------------------------------------------


def test_without_an_engine_the_file_is_written_and_the_secret_lines_printed(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PATH", path_without("pulumi"))
    root = copy_project(tmp_path)
    assert main(["clone", "qa", "pr-42", "--dir", str(root)]) == EXIT_OK
    out = capsys.readouterr().out.splitlines()
    assert out[-3:] == ["pulumi stack init pr-42",
                        "pulumi config set --secret coderz:sshPrivateKey --stack pr-42",
                        "pulumi config set --secret coderz:smtpPassword --stack pr-42"]
    written = yaml.safe_load((root / "Pulumi.pr-42.yaml").read_text())["config"]
    assert written["coderz:environment"] == "qa" and written["coderz:ports"] == {"base": 5000, "http": 5098}
    assert read_stack("pr-42", root).host == "ssh://qa.coderz.example:22"


def test_dry_run_prints_the_file_and_changes_nothing(tmp_path, engine, capsys):
    root = copy_project(tmp_path)
    before = snapshot(root)
    assert main(["clone", "dev", "dev-2", "--dry-run", "--dir", str(root)]) == EXIT_OK
    out = capsys.readouterr().out
    assert out == plan_clone(root, "dev", "dev-2").text + "# would copy secrets from dev: none\n"
    assert snapshot(root) == before and calls(engine) == []


def test_clone_creates_the_stack_and_copies_each_secret_through_the_engine(tmp_path, engine, capsys):
    root = copy_project(tmp_path)
    source = root / "Pulumi.qa.yaml"
    source.write_text(source.read_text() + "  coderz:sshPrivateKey:\n    secure: v1:AAAA\n")
    assert main(["clone", "qa", "pr-7", "--dir", str(root)]) == EXIT_OK
    assert calls(engine) == [
        ["version"],
        ["stack", "ls", "--json"],
        ["stack", "init", "pr-7"],
        ["config", "copy", "--stack", "qa", "--dest", "pr-7", "--", "coderz:sshPrivateKey"],
    ]
    out = capsys.readouterr().out
    assert "secrets re-encrypted from qa: coderz:sshPrivateKey" in out
    assert out.rstrip().endswith("pulumi config set --secret coderz:smtpPassword --stack pr-7")
    assert (root / "Pulumi.pr-7.yaml").exists()


@pytest.mark.parametrize("fail,last_call,said", [
    ("config copy", ["stack", "rm", "--yes", "pr-8"], "removed again: error: the stand-in fails config copy"),
    ("stack init", ["stack", "init", "pr-8"], "removed again: error: the stand-in fails stack init"),  # nothing made
    ("config copy|stack rm", ["stack", "rm", "--yes", "pr-8"],
     "removed again (but the stack is left in the backend: pulumi stack rm pr-8): error: the stand-in fails config"),
])
def test_an_engine_failure_removes_the_half_made_clone(tmp_path, monkeypatch, capsys, fail, last_call, said):
    log = tmp_path / "calls.jsonl"
    install_pulumi(tmp_path / "bin", log, fail=fail)
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}:{path_without('pulumi')}")
    root = project(tmp_path)
    source = root / "Pulumi.qa.yaml"
    source.write_text(source.read_text() + "  coderz:sshPrivateKey:\n    secure: v1:AAAA\n")
    before = snapshot(root)
    assert main(["clone", "qa", "pr-8", "--dir", str(root)]) == EXIT_FAILED
    assert f"coderz: the engine failed, pr-8 {said}" in capsys.readouterr().err
    assert calls(log)[-1] == last_call
    assert snapshot(root) == before


def test_destroy_tears_down_and_removes_a_clone(tmp_path, engine, capsys):
    root = copy_project(tmp_path)
    assert main(["clone", "qa", "pr-9", "--dir", str(root)]) == EXIT_OK
    engine.unlink()
    assert main(["destroy", "pr-9", "--remove", "--dir", str(root)]) == EXIT_OK
    made = calls(engine)
    assert made[0] == ["version"] and made[1] == ["stack", "select", "--stack", "pr-9"]
    assert made[2][:3] == ["destroy", "--skip-preview", "--yes"] and made[2][-2:] == ["--stack", "pr-9"]
    assert made[-1] == ["stack", "rm", "--yes", "pr-9"]
    assert not (root / "Pulumi.pr-9.yaml").exists()
    assert "destroyed and removed stack pr-9" in capsys.readouterr().out


def test_destroy_keeps_the_stack_without_remove_and_reports_engine_failures(tmp_path, monkeypatch, capsys):
    root = project(tmp_path)
    (root / "Pulumi.pr-10.yaml").write_text((root / "Pulumi.dev.yaml").read_text().replace("5200", "5400"))
    for fail, code in (("", EXIT_OK), ("destroy", EXIT_FAILED)):
        log = tmp_path / f"calls{fail}.jsonl"
        install_pulumi(tmp_path / "bin", log, fail=fail)
        monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}:{path_without('pulumi')}")
        assert main(["destroy", "pr-10", "--dir", str(root)]) == code
        assert ["stack", "rm", "--yes", "pr-10"] not in calls(log)
        assert (root / "Pulumi.pr-10.yaml").exists()
    assert "pulumi destroy of pr-10 failed" in capsys.readouterr().err


def test_the_file_is_created_only_if_absent_and_no_temporary_file_is_left(tmp_path):
    from infra.cloning import CloneRefused

    target = tmp_path / "Pulumi.x.yaml"
    write_new_file(target, "config: {}\n")
    with pytest.raises(CloneRefused, match="appeared while cloning"):
        write_new_file(target, "config: {other: 1}\n")
    assert target.read_text() == "config: {}\n" and [p.name for p in tmp_path.iterdir()] == ["Pulumi.x.yaml"]


def test_with_data_needs_an_engine_and_stops_when_up_fails(tmp_path, monkeypatch, capsys):
    root = project(tmp_path)
    qa = root / "Pulumi.qa.yaml"
    qa.write_text(qa.read_text() + "  coderz:sshPrivateKey:\n    secure: v1:A\n  coderz:smtpPassword:\n    secure: v1:B\n")
    before = snapshot(root)
    monkeypatch.setenv("PATH", path_without("pulumi"))
    assert main(["clone", "qa", "pr-3", "--with-data", "--dir", str(root)]) == EXIT_REFUSED
    assert "--with-data brings NEW up and needs the pulumi CLI on PATH" in capsys.readouterr().err
    assert snapshot(root) == before
    log = tmp_path / "calls.jsonl"
    install_pulumi(tmp_path / "bin", log, fail="up")
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}:{path_without('pulumi')}")
    assert main(["clone", "qa", "pr-3", "--with-data", "--dir", str(root)]) == EXIT_FAILED
    assert "pulumi up of pr-3 failed; no data copied" in capsys.readouterr().err
    assert calls(log)[-1][:3] == ["up", "--yes", "--skip-preview"]


@pytest.mark.parametrize("stack", STACKS)
def test_needed_secrets_are_exactly_what_the_loader_requires(stack):
    from infra.config import ConfigError, load

    raw = stack_file_values(stack)
    needed = needed_secrets(read_stack(stack).config)
    assert load({**raw, **{key: "x" for key in needed}}, stack, check_secrets=False)
    for key in needed:
        with pytest.raises(ConfigError, match=key):
            load({**raw, **{other: "x" for other in needed if other != key}}, stack, check_secrets=False)


def test_needed_secrets_include_the_s3_keys_of_a_stack_that_backs_up_to_s3():
    """The loader's one rule (`required_secrets`) is what a clone lists: a prod copy whose
    backups go to S3 needs both keys, and loads only with them."""
    import json

    from infra.config import ConfigError, load

    raw = dict(stack_file_values("prod"))
    backup = json.loads(raw["coderz:backup"]) if isinstance(raw["coderz:backup"], str) else dict(raw["coderz:backup"])
    backup["s3"] = {"endpoint": "s3.example.com", "bucket": "coderz-backups", "region": "eu-west-1"}
    raw["coderz:backup"] = json.dumps(backup)
    needed = needed_secrets(load({**raw, **{k: "x" for k in ("coderz:backupS3AccessKey", "coderz:backupS3SecretKey",
                                                          *needed_secrets(read_stack("prod").config))}},
                                 "prod", check_secrets=False).config)
    assert {"coderz:backupS3AccessKey", "coderz:backupS3SecretKey"} <= set(needed)
    assert load({**raw, **{key: "x" for key in needed}}, "prod", check_secrets=False)
    for key in needed:
        with pytest.raises(ConfigError, match=key):
            load({**raw, **{other: "x" for other in needed if other != key}}, "prod", check_secrets=False)


def test_a_stack_that_exists_only_in_the_backend_is_refused(tmp_path, monkeypatch, capsys):
    root = project(tmp_path)
    log = tmp_path / "calls.jsonl"
    install_pulumi(tmp_path / "bin", log, stacks=("qa", "pr-4"))
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}:{path_without('pulumi')}")
    before = snapshot(root)
    assert main(["clone", "qa", "pr-4", "--dir", str(root)]) == EXIT_REFUSED
    assert "stack 'pr-4' exists already in the backend (without a Pulumi.pr-4.yaml here)" in capsys.readouterr().err
    assert snapshot(root) == before and calls(log) == [["version"], ["stack", "ls", "--json"]]
