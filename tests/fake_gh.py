"""A stand-in for the `gh` CLI, for the calls the Pulumi workflows make (tests put it first on PATH).

State (comments, issues, labels) lives in the JSON file $FAKE_GH_STATE; every call is appended
to its "calls". `--jq` filters run through the real `jq` with the caller's environment, as
gh's own jq does (`env.MARKER`).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

BOT = "github-actions[bot]"


def option(argv: list[str], name: str) -> str | None:
    return argv[argv.index(name) + 1] if name in argv else None


def body_of(argv: list[str]) -> str:
    field = option(argv, "-F") or ""
    if field.startswith("body=@"):
        return Path(field[len("body=@"):]).read_text()
    return Path(option(argv, "--body-file") or "").read_text()


def api(state: dict, argv: list[str]) -> int:
    method = option(argv, "--method") or "GET"
    path = next(a for a in argv[1:] if a.startswith("repos/"))
    if method == "GET":
        if path.endswith("/comments"):
            number = int(path.split("/")[-2])
            items = [c for c in state["comments"] if c["issue"] == number]
        else:
            labels = re.search(r"labels=([^&]+)", path)
            items = [i for i in state["issues"] if i["state"] == "open" and (not labels or labels.group(1) in i["labels"])]
        out = subprocess.run(["jq", "-r", option(argv, "--jq") or "."], input=json.dumps(items), capture_output=True,
                             text=True, check=True)
        sys.stdout.write(out.stdout)
        return 0
    if method == "PATCH":
        comment_id = int(path.rsplit("/", 1)[-1])
        (comment,) = [c for c in state["comments"] if c["id"] == comment_id]
        comment["body"] = body_of(argv)
        return 0
    number = int(path.split("/")[-2])
    state["comments"].append({"id": 1000 + len(state["comments"]), "issue": number, "user": {"login": BOT}, "body": body_of(argv)})
    return 0


def issue(state: dict, argv: list[str]) -> int:
    verb = argv[1]
    if verb == "create":
        state["issues"].append({"number": 500 + len(state["issues"]), "title": option(argv, "--title"), "state": "open",
                                "labels": [option(argv, "--label")], "user": {"login": BOT}, "body": body_of(argv)})
        return 0
    (found,) = [i for i in state["issues"] if i["number"] == int(argv[2])]
    if verb == "edit":
        found["body"] = body_of(argv)
    elif verb == "close":
        found["state"] = "closed"
        found.setdefault("comments", []).append(option(argv, "--comment"))
    return 0


def main(argv: list[str]) -> int:
    path = Path(os.environ["FAKE_GH_STATE"])
    state = json.loads(path.read_text())
    state["calls"].append(argv)
    if argv[0] == "api":
        code = api(state, argv)
    elif argv[0] == "issue":
        code = issue(state, argv)
    elif argv[:2] == ["label", "create"]:
        code = 1 if argv[2] in state["labels"] else 0
        state["labels"] = sorted({*state["labels"], argv[2]})
    else:
        code = 2
    path.write_text(json.dumps(state))
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
