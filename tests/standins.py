"""Stand-in `pulumi` and `docker` executables that record how they were called, and a scratch
copy of the project's stack files for commands that write them.

The stand-in `pulumi` answers what the Automation API reads back (`version`, `stack ls`,
`stack history`, `stack output`) and fails, like the real CLI, on the calls named by `fail` (prefixes of their
arguments, separated by `|`). The stand-in `gh` records its calls and
answers a comment listing with a given id. The stand-in `docker` runs `docker exec [-i] [-e K=V].. CONTAINER TOOL ARGS..` as
`TOOL ARGS..` on this machine against the PostgreSQL server mapped to CONTAINER.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

from infra.config import REPO_ROOT

PULUMI = r'''#!{python}
import json, os, sys
args = sys.argv[1:]
with open({log!r}, "a") as log:
    log.write(json.dumps(["pulumi", *args]) + "\n")
plain = [a for a in args if a != "--non-interactive"]
if any(" ".join(plain).startswith(prefix) for prefix in {fail!r}.split("|") if prefix):
    print("error: the stand-in fails " + " ".join(plain), file=sys.stderr)
    sys.exit(255)
if plain == ["version"]:
    print("v3.272.0")
elif plain[:2] == ["stack", "history"]:
    print(json.dumps([{{"kind": "update", "startTime": "2026-01-01T00:00:00.000Z", "message": "",
                        "environment": {{}}, "config": {{}}, "result": "succeeded",
                        "endTime": "2026-01-01T00:00:01.000Z"}}]))
elif plain[:2] == ["stack", "ls"]:
    print(json.dumps([{{"name": name, "current": False}} for name in {stacks!r}]))
elif plain[:2] == ["stack", "output"]:
    # `stack output NAME` is one value; the Automation API asks for all of them as JSON
    print({url!r} if len(plain) > 2 and not plain[2].startswith("-") else "{{}}")
elif plain[:3] == ["config", "set", "--secret"]:
    with open({log!r}, "a") as log:
        log.write(json.dumps(["pulumi-stdin", sys.stdin.read()]) + "\n")
'''

DOCKER = r'''#!{python}
import json, os, sys
args = sys.argv[1:]
with open({log!r}, "a") as log:
    log.write(json.dumps(["docker", *args, "DOCKER_HOST=" + os.environ.get("DOCKER_HOST", "")]) + "\n")
assert args[0] == "exec", args
args, env = args[1:], dict(os.environ)
while args[0].startswith("-"):
    if args[0] == "-e":
        key, _, value = args[1].partition("=")
        env[key] = value
        args = args[2:]
    else:
        args = args[1:]
server = {servers!r}[args[0]]
env.update(PGHOST="127.0.0.1", PGPORT=str(server["port"]), PGPASSWORD=server["password"])
os.execvpe(args[1], args[1:], env)
'''


def copy_project(dest: Path) -> Path:
    """Pulumi.yaml and every stack file of the repo, in `dest`."""
    for path in REPO_ROOT.glob("Pulumi*.yaml"):
        shutil.copy(path, dest / path.name)
    return dest


def snapshot(root: Path) -> dict[str, bytes]:
    """Every file in a folder with its content: compared before and after a refused command."""
    return {p.name: p.read_bytes() for p in sorted(root.iterdir()) if p.is_file()}


def path_without(tool: str) -> str:
    """$PATH without the folders that hold `tool`."""
    return os.pathsep.join(
        d for d in os.environ["PATH"].split(os.pathsep) if d and not (Path(d) / tool).exists()
    )


def _install(bin_dir: Path, name: str, text: str) -> None:
    bin_dir.mkdir(exist_ok=True)
    script = bin_dir / name
    script.write_text(text)
    script.chmod(0o755)


def install_pulumi(bin_dir: Path, log: Path, *, fail: str = "", url: str = "http://stand-in.example:1",
                   stacks: tuple[str, ...] = ()) -> None:
    """`stack output NAME` answers `url`; `stack ls` lists `stacks`."""
    _install(bin_dir, "pulumi", PULUMI.format(python=sys.executable, log=str(log), fail=fail, url=url,
                                              stacks=list(stacks)))


GH = r'''#!{python}
import json, os, sys
with open({log!r}, "a") as log:
    log.write(json.dumps(["gh", *sys.argv[1:], "MARKER=" + os.environ.get("MARKER", "")]) + "\n")
if "--paginate" in sys.argv:
    print({existing!r})
'''


def install_gh(bin_dir: Path, log: Path, *, existing: str = "") -> None:
    """A stand-in `gh` whose comment listing answers the id `existing` (none when empty)."""
    _install(bin_dir, "gh", GH.format(python=sys.executable, log=str(log), existing=existing))


def install_docker(bin_dir: Path, log: Path, servers: dict[str, dict]) -> None:
    mapping = {name: {"port": s["port"], "password": s["password"]} for name, s in servers.items()}
    _install(bin_dir, "docker", DOCKER.format(python=sys.executable, log=str(log), servers=mapping))


def calls(log: Path, tool: str = "pulumi") -> list[list[str]]:
    """Each recorded call's arguments, without the tool name and `--non-interactive`."""
    if not log.exists():
        return []
    rows = [json.loads(line) for line in log.read_text().splitlines()]
    return [[a for a in row[1:] if a != "--non-interactive"] for row in rows if row[0] == tool]
