"""`coderz backup/backups/restore`: arguments, refusals, and the docker commands they run on a
deployed stack (a fake runner records them; tests/test_backup_restore.py runs the same code
against a real PostgreSQL and pgBackRest)."""

from __future__ import annotations

import json
from datetime import datetime, timezone

import pytest

from infra.cli import EXIT_REFUSED, CliError, main
from infra.cli import backup as backup_command
from infra.cli.dockerdb import DockerDatabaseHost
from infra.cli.pgbackrest import human_age, human_size, parse_info, parse_time, pgbackrest_time
from infra.cli.restore import restore

NOW = datetime(2026, 11, 30, 12, 0, tzinfo=timezone.utc)
INFO = json.dumps([{
    "name": "main",
    "archive": [{"min": "000000010000000000000002", "max": "00000001000000000000000A"}],
    "backup": [
        {"label": "20261129-020000F", "type": "full", "timestamp": {"start": 1795917600, "stop": 1795917660},
         "info": {"size": 23_000_000, "repository": {"delta": 4_500_000, "size": 4_500_000}}},
        {"label": "20261129-020000F_20261130-020000D", "type": "diff", "error": False,
         "timestamp": {"start": 1796004000, "stop": 1796004030},
         "info": {"size": 23_100_000, "repository": {"delta": 300_000, "size": 300_000}}},
        {"label": "20261128-020000F", "type": "full", "error": True, "timestamp": {"start": 1, "stop": 2},
         "info": {"size": 1, "repository": {"delta": 1, "size": 1}}},
    ],
}])


class Recorder:
    """Stands in for the docker CLI: records each command, answers from a script."""

    def __init__(self, answers: dict[str, str] | None = None):
        self.commands: list[list[str]] = []
        self.options: list[dict] = []
        self.answers = answers or {}

    def __call__(self, argv, what, **options):
        self.commands.append(list(argv))
        self.options.append(options)
        for needle, answer in self.answers.items():
            if needle in " ".join(argv):
                return answer
        return ""


def test_info_is_read_newest_first_and_damaged_backups_are_left_out():
    backups, oldest, newest = parse_info(INFO)
    assert [b.label for b in backups] == ["20261129-020000F_20261130-020000D", "20261129-020000F"]
    assert backups[0].size == 300_000 and (oldest, newest) == ("000000010000000000000002", "00000001000000000000000A")
    assert parse_info("[]") == ([], None, None)
    with pytest.raises(CliError):
        parse_info("not json")
    assert human_size(4_500_000) == "4.3 MiB" and human_size(512) == "512 B"
    assert human_age(3 * 86400 + 7200) == "3d 2h" and human_age(59) == "0m 59s"


@pytest.mark.parametrize("text,message", [
    ("yesterday", "not an ISO 8601 time"),
    ("2026-11-30T10:00:00", "give the offset"),
    ("2026-12-01T10:00:00Z", "is in the future"),
])
def test_bad_times_are_refused(text, message):
    with pytest.raises(CliError) as refused:
        parse_time(text, now=NOW)
    assert refused.value.code == EXIT_REFUSED and message in str(refused.value)


def test_times_are_read_with_their_offset_and_given_to_pgbackrest_in_utc():
    moment = parse_time("2026-11-30T11:05:00.25+01:00", now=NOW)
    assert pgbackrest_time(moment) == "2026-11-30 10:05:00.250000+00"


def test_the_commands_are_registered_with_their_arguments(capsys):
    for argv in (["backup", "--help"], ["backups", "--help"], ["restore", "--help"]):
        with pytest.raises(SystemExit):
            main(argv)
    assert "--into NEW" in capsys.readouterr().out
    assert main(["backup", "nosuchstack"]) == EXIT_REFUSED
    assert "Pulumi.nosuchstack.yaml" in capsys.readouterr().err
    assert main(["backup", "dev"]) == EXIT_REFUSED
    assert "coderz:backup.enabled is off" in capsys.readouterr().err
    assert main(["restore", "prod", "--time", "2026-11-30T10:00"]) == EXIT_REFUSED


@pytest.mark.parametrize("command", ["backup", "backups", "restore"])
@pytest.mark.parametrize("stack, message", [
    ("qa.yaml/../prod", "invalid stack name"), ("../../etc/passwd", "invalid stack name"), ("", "invalid stack name"),
    ("..", "invalid stack name"), ("dev\nprod", "invalid stack name"), ("x" * 101, "invalid stack name"),
    ("staging", "unknown stack 'staging'"),
])
def test_a_stack_that_is_not_one_is_refused_in_one_line(command, stack, message, capsys):
    assert main([command, "--", stack]) == EXIT_REFUSED
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and "Traceback" not in err


@pytest.mark.parametrize("into, message", [
    ("../qa", "invalid stack name"), ("/tmp/x", "invalid stack name"), ("", "invalid stack name"),
    ("qa\nprod", "invalid stack name"), ("never-cloned", "unknown stack 'never-cloned'"),
])
def test_restore_into_a_name_that_is_not_a_stack_is_refused_before_anything(into, message, capsys):
    """NEW is a stack made by `coderz clone` (its file exists), never a path; refused before
    the source is even asked for its backups."""
    assert main(["restore", "qa", "--into", into]) == EXIT_REFUSED
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and "Traceback" not in err


def test_backups_lists_newest_first_with_type_finish_age_and_size(capsys):
    from infra.cli import backups as backups_command

    host = DockerDatabaseHost("prod", run=Recorder({"info": INFO}))
    assert backups_command.handle(type("A", (), {"stack": "prod"})(), host, now=NOW) == 0
    header, newest, older, window = capsys.readouterr().out.splitlines()
    assert header.split() == ["label", "type", "finished", "(UTC)", "age", "size"]
    assert newest.split() == ["20261129-020000F_20261130-020000D", "diff", "2026-11-30", "02:00:30", "9h", "59m", "293.0", "KiB"]
    assert older.split()[:2] == ["20261129-020000F", "full"] and older.endswith("4.3 MiB")
    assert "20261128-020000F" not in window  # the damaged one is never offered
    assert window == "restorable from 2026-11-29 02:01:00 UTC on; WAL archived 000000010000000000000002 .. 00000001000000000000000A"


def test_backup_is_full_by_default_and_a_failed_pgbackrest_exits_3(monkeypatch, capsys):
    from infra.cli import EXIT_FAILED, parser
    from infra.cli.pgbackrest import ToolFailed

    assert parser().parse_args(["backup", "prod"]).type == "full"
    with pytest.raises(SystemExit):
        main(["backup", "prod", "--type", "snapshot"])

    def failing(argv, what):
        raise ToolFailed(what, "ERROR: [082]: unable to find primary cluster\n")

    from infra.cli import backups as backups_command

    for module in (backup_command, backups_command):
        monkeypatch.setattr(module, "connect", lambda stack, root: DockerDatabaseHost(stack, run=failing))
    for command in ("backup", "backups"):
        assert main([command, "prod"]) == EXIT_FAILED
        assert capsys.readouterr().err.strip().endswith("failed: ERROR: [082]: unable to find primary cluster")


def test_prod_is_reached_over_ssh_and_pgbackrest_runs_in_the_sidecar_as_postgres():
    runner = Recorder({"info": INFO})
    host = DockerDatabaseHost("prod", run=runner)
    assert backup_command.handle(type("A", (), {"stack": "prod", "type": "diff"})(), host) == 0
    docker = ["docker", "-H", "ssh://deploy@prod.coderz.example:22"]
    assert runner.commands[0] == [*docker, "exec", "-u", "postgres", "coderz-prod-backup", "pgbackrest", "--stanza=main",
                                  "--type=diff", "backup"]
    assert host.app_services == ["dotnet-api", "python-api"]


def test_the_applications_are_found_by_their_labels_whatever_their_generation():
    # Rolling replicas are named <prefix>-<service>-<i>-<digest>: only the labels are stable.
    runner = Recorder({"ps --filter": "coderz-prod-python-api-1-0123456789ab\tpython-api\n"
                                      "coderz-prod-dotnet-api-2-ba9876543210\tdotnet-api\n"
                                      "coderz-prod-redis\tredis\ncoderz-prod-backup\tbackup\n"})
    host = DockerDatabaseHost("prod", run=runner)
    assert host.stop_apps() == ["coderz-prod-dotnet-api-2-ba9876543210", "coderz-prod-python-api-1-0123456789ab"]
    ps, stop = runner.commands
    assert ps[3:] == ["ps", "--filter", "label=coderz.stack=coderz-prod", "--format", '{{.Names}}\t{{.Label "coderz.service"}}']
    assert stop[3:] == ["stop", "coderz-prod-dotnet-api-2-ba9876543210", "coderz-prod-python-api-1-0123456789ab"]


def test_restore_into_a_clone_copies_the_source_repository_then_restores_in_the_clones_sidecar(tmp_path):
    from components.yamltext import dump_yaml, load_yaml
    from infra.config import REPO_ROOT

    text = dump_yaml(load_yaml((REPO_ROOT / "Pulumi.prod.yaml").read_text()))
    for name in ("prod", "pr-7"):  # a clone on the same host
        (tmp_path / f"Pulumi.{name}.yaml").write_text(text)
    runner = Recorder({"inspect -f {{.Config.Image}}": "sha256:abc\n",
                       "{{json .State}}": '{"Running": true, "Health": {"Status": "healthy"}}', "pg_is_in_recovery": "f\n",
                       "info": INFO, "ps --filter": "coderz-pr-7-python-api-1-0123456789ab\tpython-api\n"})
    clone = DockerDatabaseHost("pr-7", source="prod", run=runner, root=tmp_path)
    source = DockerDatabaseHost("prod", run=runner, root=tmp_path)
    assert restore("prod", source, clone, parse_time("2026-11-30T10:00:00Z", now=NOW)) == 0
    commands = [" ".join(c) for c in runner.commands]
    (copy,) = [c for c in commands if " run --rm " in c]
    assert ("--volumes-from coderz-pr-7-backup -v coderz-prod-backup-data:/var/lib/pgbackrest-source:ro "
            "--entrypoint sh sha256:abc -c [ -d /var/lib/pgbackrest-source/backup/main ] || { echo \"no backup in "
            "the repository of prod\" >&2; exit 3; }; cd /var/lib/pgbackrest && rm -rf archive backup") in copy
    (restored,) = [c for c in commands if c.endswith(" restore")]
    assert restored.endswith("exec -u postgres coderz-pr-7-backup pgbackrest --stanza=main --delta --type=time "
                             "--target=2026-11-30 10:00:00.000000+00 --target-action=promote restore")
    order = [c.split(" ")[3] for c in commands if c.split(" ")[3] in ("stop", "start", "run")]
    assert order == ["stop", "stop", "run", "start", "start"]  # apps, postgres, copy, postgres, apps
    assert "volume inspect -f {{.Name}} coderz-prod-backup-data" in commands[commands.index(copy) - 2]
    assert commands.index(copy) < commands.index(restored)
    assert not any("coderz-prod-postgres" in c for c in commands if " stop " in c), "the source is never stopped"


def test_a_postgres_that_restarts_after_a_failed_recovery_is_a_failure_and_is_left_stopped():
    runner = Recorder({"{{json .State}}": '{"Running": true, "Restarting": true}',
                       "logs": "LOG:  starting\nFATAL:  recovery ended before configured recovery target was reached\n"})
    host = DockerDatabaseHost("prod", run=runner)
    with pytest.raises(CliError) as failed:
        host.start_database()
    assert "recovery ended before" in failed.value.detail
    assert runner.commands[-2][3:6] == ["logs", "--tail", "200"]
    assert runner.options[-2] == {"merged": True}  # the container's stderr too: PostgreSQL logs there
    assert runner.commands[-1][3:] == ["stop", "-t", "10", "coderz-prod-postgres"]


def test_a_restore_is_refused_before_the_first_backup_without_touching_anything():
    runner = Recorder({"info": INFO})
    host = DockerDatabaseHost("prod", run=runner)
    with pytest.raises(CliError) as refused:
        restore("prod", host, host, parse_time("2026-11-01T00:00:00Z", now=NOW))
    assert refused.value.code == EXIT_REFUSED and "outside the window" in str(refused.value)
    assert len(runner.commands) == 1


def test_a_clone_whose_repository_is_kept_elsewhere_than_its_sources_is_refused(tmp_path):
    from components.yamltext import dump_yaml, load_yaml
    from infra.config import REPO_ROOT

    document = load_yaml((REPO_ROOT / "Pulumi.qa.yaml").read_text())
    (tmp_path / "Pulumi.qa.yaml").write_text(dump_yaml(document))
    document["config"]["coderz:backup"]["s3"] = {"endpoint": "s3.example", "bucket": "coderz-b", "region": "x1"}
    (tmp_path / "Pulumi.qa-s3.yaml").write_text(dump_yaml(document))
    with pytest.raises(CliError) as refused:
        DockerDatabaseHost("qa-s3", source="qa", root=tmp_path, run=Recorder())
    assert refused.value.code == EXIT_REFUSED and "different kinds of storage" in str(refused.value)


def test_into_itself_or_from_a_volume_on_another_host_is_refused(tmp_path):
    from components.yamltext import dump_yaml, load_yaml
    from infra.config import REPO_ROOT

    with pytest.raises(CliError) as itself:
        DockerDatabaseHost("qa", source="qa", run=Recorder())
    assert itself.value.code == EXIT_REFUSED and "restored in place without --into" in str(itself.value)
    document = load_yaml((REPO_ROOT / "Pulumi.qa.yaml").read_text())
    (tmp_path / "Pulumi.qa.yaml").write_text(dump_yaml(document))
    document["config"]["coderz:target"]["host"] = "elsewhere.coderz.example"
    (tmp_path / "Pulumi.qa-far.yaml").write_text(dump_yaml(document))
    runner = Recorder()
    with pytest.raises(CliError) as far:
        DockerDatabaseHost("qa-far", source="qa", root=tmp_path, run=runner)
    assert far.value.code == EXIT_REFUSED and "a clone on another host restores from an S3 repository" in str(far.value)
    assert runner.commands == []



def s3_stacks(tmp_path, **clone_s3) -> None:
    """qa and its clone pr-7, both with repositories in one bucket (pr-7's overridden by clone_s3)."""
    from components.yamltext import dump_yaml, load_yaml
    from infra.config import REPO_ROOT

    document = load_yaml((REPO_ROOT / "Pulumi.qa.yaml").read_text())
    document["config"]["coderz:backup"]["s3"] = {"endpoint": "s3.example", "bucket": "coderz-b", "region": "x1"}
    (tmp_path / "Pulumi.qa.yaml").write_text(dump_yaml(document))
    document["config"]["coderz:backup"]["s3"].update(clone_s3)
    (tmp_path / "Pulumi.pr-7.yaml").write_text(dump_yaml(document))


def test_an_s3_clone_drops_its_own_stanza_restores_from_the_sources_path_then_starts_a_new_one(tmp_path):
    """The docker commands of infra/cli/s3clone.py's steps (tests/test_backup_s3.py runs the same
    steps against a real bucket)."""
    s3_stacks(tmp_path)
    runner = Recorder({"{{json .State}}": '{"Running": true, "Health": {"Status": "healthy"}}', "pg_is_in_recovery": "f\n",
                       "info": INFO, "ps --filter": "coderz-pr-7-python-api-1-0123456789ab\tpython-api\n"})
    clone = DockerDatabaseHost("pr-7", source="qa", run=runner, root=tmp_path)
    source = DockerDatabaseHost("qa", run=runner, root=tmp_path)
    assert restore("qa", source, clone, parse_time("2026-11-30T10:00:00Z", now=NOW)) == 0
    steps = [" ".join(c[3:]) for c in runner.commands if c[3] in ("stop", "start", "run")
             or "pgbackrest" in c and "coderz-pr-7-backup" in c]
    sidecar = "exec -u postgres coderz-pr-7-backup pgbackrest --stanza=main"
    assert steps == [
        "stop coderz-pr-7-python-api-1-0123456789ab", "stop -t 120 coderz-pr-7-postgres",
        f"{sidecar} stop", f"{sidecar} --force stanza-delete", f"{sidecar} start",
        f"{sidecar} --repo1-path=/coderz/qa --delta --type=time --target=2026-11-30 10:00:00.000000+00 "
        "--target-action=promote restore",
        "start coderz-pr-7-postgres", "start coderz-pr-7-python-api-1-0123456789ab",
        f"{sidecar} stanza-create", f"{sidecar} --type=full backup",
    ]
    assert not any(" run " in " ".join(c) for c in runner.commands), "no volume copy for S3"


def test_an_s3_clone_whose_new_stanza_fails_is_reported_restored_and_running_with_what_to_do(tmp_path, capsys):
    from infra.cli import EXIT_FAILED
    from infra.cli.pgbackrest import ToolFailed

    s3_stacks(tmp_path)
    answers = Recorder({"{{json .State}}": '{"Running": true, "Health": {"Status": "healthy"}}',
                        "pg_is_in_recovery": "f\n", "info": INFO})

    def runner(argv, what, **options):
        if argv[-1] == "stanza-create":
            raise ToolFailed(what, "ERROR: [055]: unable to load info file\n")
        return answers(argv, what, **options)

    clone = DockerDatabaseHost("pr-7", source="qa", run=runner, root=tmp_path)
    with pytest.raises(CliError) as failed:
        restore("qa", DockerDatabaseHost("qa", run=answers, root=tmp_path), clone, None)
    assert failed.value.code == EXIT_FAILED
    assert "restored and running, but its own repository did not take over" in str(failed.value)
    assert "unable to load info file" in str(failed.value) and "stanza-create" in str(failed.value)
    assert capsys.readouterr().out.startswith("qa: restored to the end of the archive")
    assert not any(c[-1] == "backup" for c in answers.commands), "no backup without its stanza"


@pytest.mark.parametrize("clone_s3, message", [
    ({"path": "/coderz/qa"}, "Pulumi.pr-7.yaml: coderz:backup.s3.path: pr-7 would share qa's path /coderz/qa"),
    ({"bucket": "other-b"}, "a clone restores from its source's bucket"),
    ({"endpoint": "s3.elsewhere"}, "a clone restores from its source's bucket"),
])
def test_an_s3_clone_sharing_its_sources_path_or_in_another_bucket_is_refused_before_anything(tmp_path, clone_s3,
                                                                                              message, capsys):
    """Its own path is where its stanza is deleted: the source's path would lose the source's
    backups. Refused before anything is stopped or asked."""
    from infra.config import REPO_ROOT

    s3_stacks(tmp_path, **clone_s3)
    runner = Recorder({"info": INFO})
    with pytest.raises(CliError) as refused:
        DockerDatabaseHost("pr-7", source="qa", root=tmp_path, run=runner)
    assert refused.value.code == EXIT_REFUSED and message in str(refused.value)
    assert runner.commands == []
    (tmp_path / "Pulumi.yaml").write_text((REPO_ROOT / "Pulumi.yaml").read_text())
    assert main(["restore", "qa", "--into", "pr-7", "--dir", str(tmp_path)]) == EXIT_REFUSED
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and "Traceback" not in err
