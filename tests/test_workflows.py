"""The GitHub workflows: actionlint (with shellcheck on every `run:` block), the security rules
(pinned actions, least privilege, no secrets for forks, concurrency per stack), and their
comment / issue logic run for real against a stand-in `gh` (tests/fake_gh.py)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.mocks import REPO_ROOT
from tests.servers import require_tool

WORKFLOWS = REPO_ROOT / ".github" / "workflows"
PR, DAILY = WORKFLOWS / "pulumi-pr.yml", WORKFLOWS / "pulumi-drift.yml"
FIXTURES = REPO_ROOT / "tests" / "fixtures" / "preview"
CODERZ = Path(sys.executable).parent / "coderz"


def actionlint() -> str:
    """actionlint from PATH or beside this Python (scripts/test builds it into venv/bin)."""
    beside = Path(sys.executable).parent / "actionlint"
    return str(beside) if beside.exists() else require_tool("actionlint")


def lint(folder: Path) -> subprocess.CompletedProcess:
    """actionlint on every workflow of `folder`, with shellcheck given explicitly (and on PATH)."""
    shellcheck = require_tool("shellcheck")
    env = {**os.environ, "PATH": f"{Path(shellcheck).parent}{os.pathsep}{os.environ['PATH']}"}
    files = sorted(str(p) for p in (folder / ".github" / "workflows").glob("*.y*ml"))
    assert files, f"no workflows under {folder}"
    return subprocess.run([actionlint(), "-shellcheck", shellcheck, "-no-color", *files], cwd=folder, env=env,
                          capture_output=True, text=True, timeout=120)


def load(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


def steps(path: Path) -> list[dict]:
    (job,) = load(path)["jobs"].values()
    return job["steps"]


def test_actionlint_and_shellcheck_pass_on_every_workflow():
    result = lint(REPO_ROOT)
    assert result.returncode == 0, result.stdout + result.stderr


def test_actionlint_really_runs_shellcheck_on_run_blocks(tmp_path):
    folder = tmp_path / ".github" / "workflows"
    folder.mkdir(parents=True)
    (folder / "bad.yml").write_text(
        "on: push\npermissions: {}\njobs:\n  x:\n    runs-on: ubuntu-24.04\n    steps:\n      - run: rm -rf $TARGET/*\n"
    )
    result = lint(tmp_path)
    assert result.returncode == 1 and "shellcheck reported issue" in result.stdout and "SC2086" in result.stdout


@pytest.mark.parametrize("path", [PR, DAILY])
def test_actions_are_pinned_by_commit_with_their_version(path):
    uses = re.findall(r"^\s*(?:- )?uses: (\S+)(.*)$", path.read_text(), re.MULTILINE)
    assert uses
    for action, comment in uses:
        assert re.fullmatch(r"[\w.-]+/[\w.-]+@[0-9a-f]{40}", action), action
        assert re.fullmatch(r"\s+# v\d+(\.\d+)*", comment), f"{action}: version comment missing"


@pytest.mark.parametrize("path, permissions", [
    (PR, {"contents": "read", "pull-requests": "write"}),
    (DAILY, {"contents": "read", "issues": "write"}),
])
def test_least_privilege_concurrency_per_stack_and_both_stacks(path, permissions):
    workflow = load(path)
    assert workflow["permissions"] == {}, "nothing granted by default"
    (job,) = workflow["jobs"].values()
    assert job["permissions"] == permissions
    assert "matrix.stack" in job["concurrency"]["group"]
    stacks = [entry["stack"] for entry in job["strategy"]["matrix"]["include"]]
    assert stacks == ["qa", "prod"] and all((REPO_ROOT / f"Pulumi.{s}.yaml").is_file() for s in stacks)
    assert not any("secrets" in value for value in job["env"].values()), "secrets go to steps, not the whole job"
    for step in job["steps"]:
        if "coderz drift" in step.get("run", "") or "coderz preview" in step.get("run", ""):
            assert {"PULUMI_BACKEND_URL", "PULUMI_CONFIG_PASSPHRASE", "CODERZ_SSH_PRIVATE_KEY"} <= set(step["env"])
        if "secrets" in str(step.get("env", {})):
            assert "coderz" in step["run"] or "ci-pulumi-env" in step["run"], f"{step.get('name')} needs no secret"
        if step.get("uses", "").startswith("actions/checkout@"):
            assert step["with"]["persist-credentials"] is False
        run = step.get("run", "")
        assert "${{" not in run, f"{step.get('name')}: expressions reach scripts only through env"


def test_forks_get_no_secrets_and_base_and_head_are_both_checked_out():
    text = PR.read_text()
    workflow = load(PR)
    assert "pull_request_target" not in text
    assert list(workflow[True]) == ["pull_request"]  # YAML reads the key `on` as True
    (job,) = workflow["jobs"].values()
    assert job["if"] == "github.event.pull_request.head.repo.full_name == github.repository"
    refs = {s["with"]["path"]: s["with"]["ref"] for s in job["steps"] if s.get("uses", "").startswith("actions/checkout@")}
    assert refs == {"base": "${{ github.event.pull_request.base.sha }}", "head": "${{ github.event.pull_request.head.sha }}"}
    runs = "\n".join(s.get("run", "") for s in job["steps"])
    assert runs.index("coderz drift \"$STACK\" --work-dir base") < runs.index("coderz preview \"$STACK\" --work-dir head")


def test_the_readme_lists_every_repository_secret_the_workflows_use():
    readme = (REPO_ROOT / "README.md").read_text()
    names = set()
    for path in (PR, DAILY):
        text = path.read_text()
        names |= set(re.findall(r"secrets\.([A-Z_]+)", text))
        names |= {v for k, v in re.findall(r"(ssh_key|smtp_password): ([A-Z_]+)", text)}
    assert names == {"PULUMI_BACKEND_URL", "PULUMI_CONFIG_PASSPHRASE", "SSH_KNOWN_HOSTS", "PROD_TLS_PRIVATE_KEY",
                     "QA_SSH_PRIVATE_KEY", "PROD_SSH_PRIVATE_KEY", "QA_SMTP_PASSWORD", "PROD_SMTP_PASSWORD"}
    missing = [name for name in sorted(names) if f"`{name}`" not in readme]
    assert missing == []


def test_the_ci_setup_script_passes_shellcheck_and_refuses_bad_usage(tmp_path):
    script = REPO_ROOT / "scripts" / "ci-pulumi-env"
    assert subprocess.run([require_tool("shellcheck"), str(script)], capture_output=True, text=True).returncode == 0
    for argv in ([], ["qa"], ["qa/../x", str(REPO_ROOT)], ["qa", str(tmp_path)]):
        result = subprocess.run([str(script), *argv], capture_output=True, text=True, timeout=30)
        assert result.returncode == 2, (argv, result.stderr)
    assert not (tmp_path / "venv").exists(), "a refused run creates nothing"


class Runner:
    """Runs one workflow step's `run:` script with bash, a stand-in `gh` and the real coderz."""

    def __init__(self, root: Path):
        require_tool("jq")
        self.root = root
        self.state = root / "gh-state.json"
        self.state.write_text(json.dumps({"comments": [], "issues": [], "labels": [], "calls": []}))
        bin_dir = root / "bin"
        bin_dir.mkdir()
        (bin_dir / "gh").write_text(f'#!/bin/sh\nexec "{sys.executable}" "{REPO_ROOT / "tests" / "fake_gh.py"}" "$@"\n')
        (bin_dir / "gh").chmod(0o755)
        for checkout in ("head", "."):
            (root / checkout / "venv" / "bin").mkdir(parents=True, exist_ok=True)
            target = root / checkout / "venv" / "bin" / "coderz"
            if not target.exists():
                target.symlink_to(CODERZ)
        self.env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "FAKE_GH_STATE": str(self.state),
                    "GITHUB_REPOSITORY": "coderz/coderz-infra", "STACK": "qa"}

    def run(self, workflow: Path, name: str, **env: str) -> subprocess.CompletedProcess:
        (step,) = [s for s in steps(workflow) if s.get("name") == name]
        return subprocess.run(["bash", "-eo", "pipefail", "-c", step["run"]], cwd=self.root, env={**self.env, **env},
                              capture_output=True, text=True, timeout=120)

    @property
    def gh(self) -> dict:
        return json.loads(self.state.read_text())


@pytest.fixture
def runner(tmp_path) -> Runner:
    """A scratch workspace with a stand-in `gh` first on PATH."""
    return Runner(tmp_path)


def test_the_pr_comment_is_one_per_stack_and_edited_in_place(runner):
    assert CODERZ.exists()
    shutil.copy(FIXTURES / "drift.json", runner.root / "drift.json")
    shutil.copy(FIXTURES / "changes.json", runner.root / "preview.json")
    state = runner.gh
    state["comments"].append({"id": 1, "issue": 7, "user": {"login": "mallory"}, "body": "<!-- coderz-pr stack=qa -->\nfake"})
    runner.state.write_text(json.dumps(state))
    env = {"PR": "7", "BASE_SHA": "a" * 40, "HEAD_SHA": "b" * 40}
    for push in range(3):
        result = runner.run(PR, "One comment per stack, edited in place", **env)
        assert result.returncode == 0, result.stderr
    ours = [c for c in runner.gh["comments"] if c["user"]["login"] == "github-actions[bot]"]
    assert len(ours) == 1, "one comment, whatever the number of pushes"
    body = ours[0]["body"]
    assert body.startswith("<!-- coderz-pr stack=qa -->") and body.index("Drift") < body.index("Changes this pull request")
    methods = [c[c.index("--method") + 1] for c in runner.gh["calls"] if "--method" in c]
    assert methods == ["POST", "PATCH", "PATCH"]
    assert runner.gh["comments"][0]["body"].endswith("fake"), "someone else's comment is never touched"
    # the prod job keeps its own comment
    assert runner.run(PR, "One comment per stack, edited in place", STACK="prod", **env).returncode == 0
    assert len([c for c in runner.gh["comments"] if c["user"]["login"] == "github-actions[bot]"]) == 2


def test_the_daily_issue_is_opened_updated_and_closed_once_drift_is_gone(runner):
    shutil.copy(FIXTURES / "drift.json", runner.root / "drift.json")
    step = "Open, update or close the stack's drift issue"
    env = {"RUN_URL": "https://example.invalid/run/1", "GITHUB_SHA": "c" * 40}
    assert runner.run(DAILY, step, STATUS="1", **env).returncode == 0
    assert runner.run(DAILY, step, STATUS="1", **env).returncode == 0
    (issue,) = runner.gh["issues"]
    assert issue["title"] == "Drift on stack qa" and issue["state"] == "open" and issue["labels"] == ["drift"]
    assert issue["body"].startswith("<!-- coderz-drift stack=qa -->") and "**drift found**" in issue["body"]
    assert [c[:2] for c in runner.gh["calls"] if c[0] == "issue"] == [["issue", "create"], ["issue", "edit"]]
    failed = runner.run(DAILY, step, STATUS="3", **env)
    assert failed.returncode == 1 and runner.gh["issues"][0]["state"] == "open", "a failed check closes nothing"
    assert runner.run(DAILY, step, STATUS="0", **env).returncode == 0
    (issue,) = runner.gh["issues"]
    assert issue["state"] == "closed" and "No drift on `qa` any more" in issue["comments"][0]
    assert runner.run(DAILY, step, STATUS="0", **env).returncode == 0
    assert len(runner.gh["issues"]) == 1
