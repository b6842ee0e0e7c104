"""`coderz drift` / `coderz preview` against a stand-in `pulumi` first on PATH (tests/fake_pulumi.py):
the exact calls the Automation API makes, the stack it selects, and the exit codes."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from infra.cli import EXIT_FAILED, EXIT_FOUND, EXIT_OK, EXIT_REFUSED, main
from tests.mocks import REPO_ROOT

FIXTURES = REPO_ROOT / "tests" / "fixtures" / "preview"


class FakePulumi:
    """The stand-in's settings and what it recorded."""

    def __init__(self, root: Path, monkeypatch: pytest.MonkeyPatch):
        self.root = root
        self.log = root / "calls.jsonl"
        self.monkeypatch = monkeypatch
        bin_dir = root / "bin"
        bin_dir.mkdir()
        wrapper = bin_dir / "pulumi"
        wrapper.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{REPO_ROOT / "tests" / "fake_pulumi.py"}" "$@"\n')
        wrapper.chmod(wrapper.stat().st_mode | stat.S_IXUSR)
        monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
        monkeypatch.setenv("PYTHONPATH", str(REPO_ROOT))
        monkeypatch.setenv("FAKE_PULUMI_LOG", str(self.log))
        monkeypatch.setenv("FAKE_PULUMI_STACKS", "qa,prod")
        monkeypatch.setenv("PULUMI_BACKEND_URL", "file:///tmp/fake-backend")
        monkeypatch.setenv("PULUMI_CONFIG_PASSPHRASE", "fake-passphrase")
        monkeypatch.delenv("FAKE_PULUMI_FAIL", raising=False)
        monkeypatch.delenv("FAKE_PULUMI_NO_CHANGES_MESSAGE", raising=False)
        for name in [n for n in os.environ if n.startswith("CODERZ_")]:
            monkeypatch.delenv(name)
        self.answer("clean")

    def answer(self, fixture: str) -> None:
        self.monkeypatch.setenv("FAKE_PULUMI_PREVIEW", str(FIXTURES / f"{fixture}.json"))

    @property
    def calls(self) -> list[dict]:
        if not self.log.exists():
            return []
        return [json.loads(line) for line in self.log.read_text().splitlines()]

    def preview_argv(self) -> list[str]:
        (call,) = [c for c in self.calls if "preview" in c["argv"]]
        argv = list(call["argv"])
        argv[argv.index("--event-log") + 1] = "<event-log>"
        return argv


@pytest.fixture
def fake(tmp_path, monkeypatch) -> FakePulumi:
    """A stand-in `pulumi` first on PATH that knows the stacks qa and prod."""
    return FakePulumi(tmp_path, monkeypatch)


def coderz(*argv: str) -> int:
    """Run the command line in-process on this repository's project; argparse's exit is a code too."""
    try:
        return main([*argv, "--work-dir", str(REPO_ROOT)])
    except SystemExit as stop:
        return int(stop.code)


@pytest.mark.parametrize("version, event_log", [("3.210.0", "tcp://127.0.0.1:"), ("3.200.0", "/")])
def test_drift_is_a_refresh_preview_expecting_no_changes_of_the_selected_stack(fake, monkeypatch, version, event_log):
    monkeypatch.setenv("FAKE_PULUMI_VERSION", version)
    assert coderz("drift", "qa") == EXIT_OK
    calls = fake.calls
    assert [c["argv"][:3] for c in calls] == [
        ["version"],
        ["--non-interactive", "stack", "select"],
        ["--non-interactive", "preview", "--expect-no-changes"],
    ]
    assert calls[1]["argv"] == ["--non-interactive", "stack", "select", "--stack", "qa"]
    # the guardrails pack with qa's own config: mandatory (policy/, issue 9)
    assert fake.preview_argv() == [
        "--non-interactive", "preview", "--expect-no-changes",
        "--policy-pack", str(REPO_ROOT / "policy"), "--policy-pack-config", str(REPO_ROOT / "policy/config/qa.json"),
        "--refresh", "--exec-kind", "auto.local", "--json", "--event-log", "<event-log>", "--stack", "qa",
    ]
    (preview,) = [c for c in calls if "preview" in c["argv"]]
    assert preview["argv"][preview["argv"].index("--event-log") + 1].startswith(event_log)
    for call in calls:
        assert call["cwd"] == str(REPO_ROOT)
        assert call["env"]["PULUMI_BACKEND_URL"] == "file:///tmp/fake-backend"
        assert call["env"]["PULUMI_CONFIG_PASSPHRASE"] == "fake-passphrase"
        assert call["env"]["PULUMI_SKIP_UPDATE_CHECK"] == "true"
    assert preview["env"]["PULUMI_AUTOMATION_API"] == "true"


def test_config_secrets_from_the_environment_are_set_through_pulumi_before_the_preview(fake, monkeypatch):
    monkeypatch.setenv("CODERZ_SMTP_PASSWORD", "smtp-from-ci")
    monkeypatch.setenv("CODERZ_SSH_PRIVATE_KEY", "-----BEGIN KEY-----\nline\n-----END KEY-----")
    monkeypatch.delenv("CODERZ_TLS_PRIVATE_KEY", raising=False)
    assert coderz("drift", "qa") == EXIT_OK
    verbs = [c["argv"][1:3] for c in fake.calls[1:]]
    assert verbs == [["stack", "select"], ["config", "set-all"], ["preview", "--expect-no-changes"]]
    set_all = fake.calls[2]["argv"]
    assert set_all[:5] == ["--non-interactive", "config", "set-all", "--stack", "qa"]
    assert sorted(set_all[5:]) == sorted([
        "--secret", "coderz:smtpPassword=smtp-from-ci",
        "--secret", "coderz:sshPrivateKey=-----BEGIN KEY-----\nline\n-----END KEY-----",
    ])


@pytest.mark.parametrize("message", ["no changes were expected but changes were proposed",
                                     "no changes were expected for preview but changes were proposed"])
def test_drift_found_exits_1_and_writes_the_engines_json_and_the_report(fake, monkeypatch, tmp_path, capsys, message):
    monkeypatch.setenv("FAKE_PULUMI_NO_CHANGES_MESSAGE", message)
    fake.answer("drift")
    out_json, out_md = tmp_path / "drift.json", tmp_path / "drift.md"
    assert coderz("drift", "prod", "--json", str(out_json), "--markdown", str(out_md)) == EXIT_FOUND
    assert "--stack" in fake.preview_argv() and fake.preview_argv()[-1] == "prod"
    assert json.loads(out_json.read_text()) == json.loads((FIXTURES / "drift.json").read_text())
    report = out_md.read_text()
    assert "### Drift on `prod`" in report and "**drift found**" in report
    assert "| `restart` | update | `\"unless-stopped\"` | `\"no\"` |" in report
    assert "prod: drift found" in capsys.readouterr().out


def test_differences_only_in_ignored_fields_are_no_drift(fake, tmp_path, capsys):
    fake.answer("ignored_only")  # the engine itself fails --expect-no-changes on these
    out_md = tmp_path / "report.md"
    assert coderz("drift", "qa", "--markdown", str(out_md)) == EXIT_OK
    assert "qa: no drift (the engine's differences are all in ignored daemon-filled fields)" in capsys.readouterr().out
    report = out_md.read_text()
    assert "no drift" in report and "Ignored" in report and "networkDatas[0].ipAddress" in report and "memorySwap" in report


def test_preview_shows_the_changes_without_refresh_and_fails_only_when_asked(fake, tmp_path):
    fake.answer("changes")
    out_md = tmp_path / "preview.md"
    assert coderz("preview", "qa", "--markdown", str(out_md)) == EXIT_OK
    assert fake.preview_argv() == [
        "--non-interactive", "preview",
        "--policy-pack", str(REPO_ROOT / "policy"), "--policy-pack-config", str(REPO_ROOT / "policy/config/qa.json"),
        "--exec-kind", "auto.local", "--json", "--event-log", "<event-log>", "--stack", "qa",
    ]
    assert "**changes**" in out_md.read_text()
    fake.log.unlink()
    assert coderz("preview", "qa", "--expect-no-changes", "--refresh") == EXIT_FOUND
    assert fake.preview_argv()[2] == "--expect-no-changes" and "--refresh" in fake.preview_argv()
    fake.answer("clean")
    assert coderz("preview", "qa", "--expect-no-changes") == EXIT_OK


def test_the_markdown_written_by_the_command_never_holds_a_secret_value(fake, tmp_path):
    from tests.test_drift_report import PLANTED_SECRETS

    fake.answer("changes")
    out_md = tmp_path / "preview.md"
    assert coderz("preview", "qa", "--markdown", str(out_md)) == EXIT_OK
    text = out_md.read_text()
    assert "[secret]" in text and [s for s in PLANTED_SECRETS if s in text] == []


def test_engine_failure_exits_3_with_one_line_and_writes_nothing(fake, monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("FAKE_PULUMI_FAIL", "could not connect to ssh://deploy@qa.coderz.example:22")
    out_json = tmp_path / "drift.json"
    assert coderz("drift", "qa", "--json", str(out_json)) == EXIT_FAILED
    error = capsys.readouterr().err.strip()
    assert error == "coderz: pulumi preview failed: could not connect to ssh://deploy@qa.coderz.example:22"
    assert not out_json.exists()


@pytest.mark.parametrize("stack", ["staging", "qa/../prod", "org/coderz/qa", "", "-x", "a" * 101])
def test_unknown_or_invalid_stack_exits_2_without_calling_the_engine(fake, stack, capsys):
    assert coderz("drift", stack) == EXIT_REFUSED
    assert fake.calls == []
    assert capsys.readouterr().err.count("\n") <= 3


def test_a_stack_the_backend_lacks_exits_2_before_any_preview(fake, monkeypatch, capsys):
    monkeypatch.setenv("FAKE_PULUMI_STACKS", "prod")
    assert coderz("drift", "qa") == EXIT_REFUSED
    assert [c["argv"][1:3] for c in fake.calls[1:]] == [["stack", "select"]]
    assert "unknown stack 'qa': the backend has none" in capsys.readouterr().err


def test_a_missing_output_folder_is_refused_before_the_engine(fake, tmp_path):
    assert coderz("drift", "qa", "--markdown", str(tmp_path / "missing" / "r.md")) == EXIT_REFUSED
    assert fake.calls == []


def test_without_a_pulumi_cli_the_exit_is_3(monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("PATH", str(tmp_path))
    assert coderz("drift", "qa") == EXIT_FAILED
    assert "pulumi CLI is not on PATH" in capsys.readouterr().err


def test_the_project_is_found_from_a_subfolder(fake, monkeypatch):
    monkeypatch.chdir(REPO_ROOT / "infra")
    assert main(["drift", "dev"]) == EXIT_REFUSED  # dev is not in the fake backend
    assert fake.calls[-1]["cwd"] == str(REPO_ROOT)


def test_the_console_script_has_help_on_every_command():
    script = Path(sys.executable).parent / "coderz"
    assert script.exists(), "pip install -e . installs the coderz console script"
    from infra.cli import COMMAND_MODULES

    for command in ((), *((m,) for m in COMMAND_MODULES)):
        result = subprocess.run([str(script), *command, "--help"], capture_output=True, text=True, timeout=60)
        assert result.returncode == 0 and result.stdout.startswith("usage: coderz"), (command, result.stderr)
    bad = subprocess.run([str(script), "drift"], capture_output=True, text=True, timeout=60)
    assert bad.returncode == EXIT_REFUSED and "STACK" in bad.stderr


def test_render_puts_drift_first_then_the_pull_requests_changes(tmp_path):
    shutil.copy(FIXTURES / "drift.json", tmp_path / "drift.json")
    out = tmp_path / "comment.md"
    assert main(["render", "--stack", "qa", "--drift", str(tmp_path / "drift.json"),
                 "--preview", str(FIXTURES / "changes.json"), "--base", "a" * 40, "--output", str(out)]) == EXIT_OK
    text = out.read_text()
    assert text.splitlines()[0] == "<!-- coderz-pr stack=qa -->"
    assert text.index("Drift: deployed code at `aaaaaaaaaaaa`") < text.index("Changes this pull request makes")
    assert text.index("**drift found**") < text.index("**changes**")
    assert main(["render", "--stack", "qa", "--drift", str(tmp_path / "none.json"), "--marker", "coderz-drift",
                 "--output", str(out)]) == EXIT_OK
    text = out.read_text()
    assert text.startswith("<!-- coderz-drift stack=qa -->") and "not available: the check failed" in text
    assert "Changes this pull request makes" not in text
    assert main(["render", "--stack", "qa", "--marker=--><script>", "--output", str(out)]) == EXIT_REFUSED


def test_a_huge_report_is_cut_to_fit_a_github_comment():
    from infra.cli.render import BODY_LIMIT, render

    urn = "urn:pulumi:qa::coderz::docker:index/container:Container::web-{}"
    steps = [{"op": "update", "urn": urn.format(n), "detailedDiff": {"labels[0].value": {"kind": "update"}},
              "oldState": {"inputs": {"labels": [{"value": "x" * 70}]}}, "newState": {"inputs": {"labels": [{"value": "y" * 70}]}}}
             for n in range(2000)]
    digest = {"steps": steps, "changeSummary": {"update": 2000}}
    text = render("qa", "coderz-pr", digest, digest)
    assert len(text) <= BODY_LIMIT + 200 and text.startswith("<!-- coderz-pr stack=qa -->")
    assert text.rstrip().endswith("the full report is in the JSON files.")
