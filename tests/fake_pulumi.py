"""A stand-in for the `pulumi` CLI, for the calls the Automation API makes (tests put it first on PATH).

Each call appends one JSON line to $FAKE_PULUMI_LOG: argv, cwd and the PULUMI_* environment.
It answers as the real CLI does:
- `version`: $FAKE_PULUMI_VERSION (from 3.206 on the SDK listens for engine events over gRPC,
  before that it tails a file: both are served, as `--event-log` says);
- `stack select --stack S`: exit 0 when S is in $FAKE_PULUMI_STACKS, else the CLI's
  "no stack named 'S' found" on stderr, exit 255;
- `config set-all --stack S --secret K=V...`: exit 0 (the values are only recorded);
- `preview ... --json --event-log L --stack S`: prints the preview document in
  $FAKE_PULUMI_PREVIEW on stdout, streams prelude, summary and cancel events to L; with
  `--expect-no-changes` and changes it fails as the CLI does (JSON printed, message on stderr,
  exit 255). $FAKE_PULUMI_FAIL makes the engine fail with that message instead.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path


def record(argv: list[str]) -> None:
    entry = {"argv": argv, "cwd": os.getcwd(), "env": {k: v for k, v in os.environ.items() if k.startswith("PULUMI_")}}
    with open(os.environ["FAKE_PULUMI_LOG"], "a", encoding="utf-8") as log:
        log.write(json.dumps(entry) + "\n")


def option(argv: list[str], name: str) -> str | None:
    return argv[argv.index(name) + 1] if name in argv and argv.index(name) + 1 < len(argv) else None


def send_events(target: str, events: list[dict]) -> None:
    lines = [json.dumps({"sequence": i, "timestamp": int(time.time()), **e}) for i, e in enumerate(events)]
    if target.startswith("tcp://"):
        import grpc
        from pulumi.runtime.proto import events_pb2, events_pb2_grpc

        with grpc.insecure_channel(target[len("tcp://"):]) as channel:
            events_pb2_grpc.EventsStub(channel).StreamEvents(iter([events_pb2.EventRequest(event=line) for line in lines]))
    else:
        with open(target, "a", encoding="utf-8") as log:
            log.write("".join(line + "\n" for line in lines))


def preview(argv: list[str]) -> int:
    failure = os.environ.get("FAKE_PULUMI_FAIL")
    if failure:
        digest = {"diagnostics": [{"message": f"error: {failure}\n", "severity": "error"}], "duration": 0, "changeSummary": {}}
    else:
        digest = json.loads(Path(os.environ["FAKE_PULUMI_PREVIEW"]).read_text(encoding="utf-8"))
    summary = digest.get("changeSummary") or {}
    events = [{"preludeEvent": {"config": {}}}]
    if not failure:
        events.append({"summaryEvent": {"maybeCorrupt": False, "durationSeconds": 1, "resourceChanges": summary, "PolicyPacks": {}}})
    events.append({"cancelEvent": {}})
    send_events(option(argv, "--event-log") or "", events)
    print(json.dumps(digest, indent=4))
    if failure:
        print(f"error: {failure}", file=sys.stderr)
        return 255
    if "--expect-no-changes" in argv and any(n for op, n in summary.items() if op != "same"):
        message = os.environ.get("FAKE_PULUMI_NO_CHANGES_MESSAGE", "no changes were expected but changes were proposed")
        print(f"error: {message}", file=sys.stderr)
        return 255
    return 0


def main(argv: list[str]) -> int:
    record(argv)
    words = [a for a in argv if a != "--non-interactive"]
    if words[:1] == ["version"]:
        print("v" + os.environ.get("FAKE_PULUMI_VERSION", "3.210.0"))
        return 0
    if words[:2] == ["stack", "select"]:
        stack = option(words, "--stack")
        if stack in os.environ.get("FAKE_PULUMI_STACKS", "").split(","):
            return 0
        print(f"error: no stack named '{stack}' found", file=sys.stderr)
        return 255
    if words[:2] == ["config", "set-all"]:
        return 0
    if words[:1] == ["preview"]:
        return preview(words)
    print(f"error: the stand-in does not know `{' '.join(words)}`", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
