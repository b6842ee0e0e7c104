"""A Markdown report of a preview, read from the engine's documented JSON (`pulumi preview --json`:
`steps` with `op`, `urn`, `oldState`/`newState`, `diffReasons`, `replaceReasons`, `detailedDiff`;
`changeSummary`; `diagnostics`).

Counts by operation first, then per resource the properties that change, old against new.
Drift comes before the change a pull request makes. Secret values never reach the text: the
engine's `[secret]` and secret-signature objects, keys on our secret list, secret-named
`KEY=value` environment entries and passwords inside URLs are all masked. Fields listed in
`components.drift_ignore` are shown apart as "ignored" and never counted.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections import Counter
from dataclasses import dataclass
from typing import Any, Iterable

from components.drift_ignore import IgnoredField, ignored
from infra.config import SECRET_KEYS as CONFIG_SECRETS

MASK = "[secret]"
SECRET_SIG = "4dabf18193072939515e22adb298388d"
# The stack's config secrets, and properties that carry secrets or whole files that may hold them
# (uploaded config contents), wherever they appear.
SECRET_KEYS = frozenset(
    {*CONFIG_SECRETS}
    | {"password", "passphrase", "privateKey", "token", "secret", "result", "bcryptHash", "content", "contentBase64",
       "registryAuth", "authConfig"}
)
SECRET_ENV_NAME = re.compile(r"PASS|SECRET|TOKEN|KEY|CREDENTIAL|AUTH", re.IGNORECASE)
ENV_ENTRY = re.compile(r"^([A-Za-z_][A-Za-z0-9_.-]*)=(.*)$", re.DOTALL)
URL_PASSWORD = re.compile(r"(://[^/\s:@]*:)[^@\s/]+@")
# Steps that are parts of a replacement the engine also reports as one `replace` step.
REPLACEMENT_PARTS = {"create-replacement", "delete-replaced"}
OP_ORDER = ("create", "update", "replace", "delete", "refresh", "import", "read", "same")
OP_SIGN = {"create": "+", "update": "~", "replace": "+-", "delete": "-", "refresh": "~", "import": "=", "read": ">"}
ROOT_TYPE = "pulumi:pulumi:Stack"
MAX_ROWS = 200
VALUE_WIDTH = 80


@dataclass(frozen=True)
class Change:
    path: str
    kind: str
    old: Any
    new: Any


@dataclass(frozen=True)
class Item:
    """One resource the preview would touch, with the properties that change."""

    op: str
    urn: str
    type: str
    name: str
    changes: tuple[Change, ...]
    replace_reasons: tuple[str, ...]


@dataclass(frozen=True)
class Ignored:
    name: str
    change: Change
    entry: IgnoredField


@dataclass(frozen=True)
class Report:
    counts: dict[str, int]
    drift: tuple[Item, ...]
    changes: tuple[Item, ...]
    ignored: tuple[Ignored, ...]
    diagnostics: tuple[str, ...]

    @property
    def found(self) -> bool:
        return bool(self.drift or self.changes)


def analyse(digest: dict[str, Any], *, all_drift: bool) -> Report:
    """Sort a preview's steps into drift, changes and ignored fields. With `all_drift` (a
    refresh-preview of the deployed code) every change is drift; otherwise only what the
    refresh found (`refresh` steps) is."""
    raw_steps = digest.get("steps")
    steps = [s for s in raw_steps if isinstance(s, dict)] if isinstance(raw_steps, list) else []
    replaced = {s.get("urn") for s in steps if s.get("op") == "replace"}
    counts: Counter[str] = Counter()
    drift: list[Item] = []
    changes: list[Item] = []
    ignored_fields: list[Ignored] = []
    same_steps = reclassified = 0
    for step in steps:
        op, urn = str(step.get("op", "")), str(step.get("urn", ""))
        if op in REPLACEMENT_PARTS:
            if urn in replaced:
                continue
            op = "replace"  # a replacement the engine did not also report as one `replace` step
            replaced.add(urn)
        item = _item(step, op)
        if item.type == ROOT_TYPE and op in ("same", "update", "refresh"):
            continue
        kept = []
        for change in item.changes:
            entry = ignored(item.type, change.path)
            if entry is None:
                kept.append(change)
            else:
                ignored_fields.append(Ignored(item.name, change, entry))
        if op == "same":
            same_steps += 1
            continue
        if op in ("update", "refresh") and not kept:
            reclassified += 1  # only ignored fields differ: the resource is unchanged
            continue
        item = dataclasses.replace(item, changes=tuple(kept))
        counts[op] += 1
        (drift if all_drift or op == "refresh" else changes).append(item)
    summary_same = _mapping(digest.get("changeSummary")).get("same")
    counts["same"] = (summary_same if isinstance(summary_same, int) else same_steps) + reclassified
    diagnostics = tuple(
        f"{d['severity']}: {mask_text(_unprefixed(str(d.get('message', '')), d['severity']))[:300]}"
        for d in (digest.get("diagnostics") if isinstance(digest.get("diagnostics"), list) else [])
        if isinstance(d, dict) and d.get("severity") in ("error", "warning")
    )
    return Report(dict(counts), tuple(drift), tuple(changes), tuple(ignored_fields), diagnostics)


def _mapping(value: Any) -> dict[str, Any]:
    """`value` if it is a JSON object, else an empty one: a hand-edited or truncated file must not crash the report."""
    return value if isinstance(value, dict) else {}


def _unprefixed(message: str, severity: str) -> str:
    message = message.strip()
    return message[len(severity) + 1:].strip() if message.lower().startswith(severity + ":") else message


def _item(step: dict[str, Any], op: str) -> Item:
    urn = str(step.get("urn", ""))
    old, new = _mapping(step.get("oldState")), _mapping(step.get("newState"))
    rtype = str(new.get("type") or old.get("type") or _urn_type(urn))
    return Item(
        op=op,
        urn=urn,
        type=rtype,
        name=urn.rsplit("::", 1)[-1],
        changes=tuple(_changes(step, op, old, new)),
        replace_reasons=tuple(str(r) for r in step.get("replaceReasons") or []),
    )


def _urn_type(urn: str) -> str:
    parts = urn.split("::")
    return parts[2].rsplit("$", 1)[-1] if len(parts) >= 4 else ""


def _changes(step: dict[str, Any], op: str, old: dict[str, Any], new: dict[str, Any]) -> Iterable[Change]:
    if op in ("create", "delete", "same", "read", "import"):
        return
    if op == "refresh":
        # old and new are the state before and after reading the live resource
        before, after = _mapping(old.get("outputs")), _mapping(new.get("outputs"))
        detailed = _mapping(step.get("detailedDiff"))
        for path in sorted(detailed) or sorted(k for k in {*before, *after} if before.get(k) != after.get(k)):
            yield Change(path, _kind(detailed.get(path)) or "update", lookup(before, path), lookup(after, path))
        return
    detailed = _mapping(step.get("detailedDiff"))
    if detailed:
        for path, diff in sorted(detailed.items()):
            input_diff = isinstance(diff, dict) and diff.get("inputDiff")
            before = old.get("inputs") if input_diff else (old.get("outputs") or old.get("inputs"))
            yield Change(path, _kind(diff) or "update", lookup(_mapping(before), path), lookup(_mapping(new.get("inputs")), path))
        return
    reasons = step.get("diffReasons")
    for key in reasons if isinstance(reasons, list) else []:
        yield Change(str(key), "update", lookup(_mapping(old.get("inputs")), str(key)), lookup(_mapping(new.get("inputs")), str(key)))


def _kind(diff: Any) -> str | None:
    return str(diff.get("kind")) if isinstance(diff, dict) and diff.get("kind") else None


_ABSENT = object()
PATH_PART = re.compile(r'\["((?:[^"\\]|\\.)*)"\]|\[(\d+)\]|\.?([^.\[\]]+)')


def split_path(path: str) -> list[str | int]:
    """`a.b[0]["c.d"]` -> ["a", "b", 0, "c.d"] (the engine's property path syntax)."""
    parts: list[str | int] = []
    for quoted, index, plain in PATH_PART.findall(path):
        parts.append(int(index) if index else (json.loads(f'"{quoted}"') if quoted else plain))
    return parts


def lookup(value: Any, path: str) -> Any:
    """The value at `path`, with secret masking applied along the way; `_ABSENT` if missing."""
    current = value
    for part in split_path(path):
        if isinstance(current, dict) and SECRET_SIG in current:
            return MASK
        if isinstance(part, int) and isinstance(current, list) and 0 <= part < len(current):
            current = current[part]
        elif isinstance(part, str) and isinstance(current, dict) and part in current:
            if part in SECRET_KEYS:
                return MASK
            current = current[part]
        else:
            return _ABSENT
    return mask(current)


def mask(value: Any, key: str | None = None) -> Any:
    """A copy of `value` in which nothing secret is left."""
    if key in SECRET_KEYS and value is not None:
        return MASK
    if isinstance(value, dict):
        if SECRET_SIG in value:
            return MASK
        return {k: mask(v, k) for k, v in value.items()}
    if isinstance(value, list):
        return [mask(v) for v in value]
    if isinstance(value, str):
        return mask_text(value)
    return value


def mask_text(text: str) -> str:
    entry = ENV_ENTRY.match(text)
    if entry and SECRET_ENV_NAME.search(entry.group(1)):
        return f"{entry.group(1)}={MASK}"
    return URL_PASSWORD.sub(rf"\g<1>{MASK}@", text)


def _cell(value: Any) -> str:
    if value is _ABSENT:
        return "—"
    text = json.dumps(value, ensure_ascii=False, sort_keys=True)
    if len(text) > VALUE_WIDTH:
        text = text[: VALUE_WIDTH - 1] + "…"
    return "`" + text.replace("`", "'").replace("|", "\\|") + "`"


def summary_line(report: Report) -> str:
    ops = [op for op in OP_ORDER if report.counts.get(op)] + sorted(set(report.counts) - set(OP_ORDER))
    parts = [f"{op} {report.counts[op]}" for op in ops if report.counts.get(op)]
    if report.ignored:
        parts.append(f"ignored fields {len(report.ignored)}")
    return " · ".join(parts) or "nothing"


def items_markdown(items: Iterable[Item], budget: list[int]) -> list[str]:
    lines: list[str] = []
    for item in items:
        sign = OP_SIGN.get(item.op, item.op)
        lines.append(f"- `{sign} {item.op}` **{item.name}** `{item.type}`")
        if item.replace_reasons:
            lines[-1] += " — replaced because of " + ", ".join(f"`{r}`" for r in item.replace_reasons)
        if not item.changes:
            continue
        lines += ["", "  | property | change | before | after |", "  |---|---|---|---|"]
        for change in item.changes:
            if budget[0] <= 0:
                lines.append("  | … | more rows in the JSON artifact | | |")
                break
            budget[0] -= 1
            lines.append(f"  | `{change.path}` | {change.kind} | {_cell(change.old)} | {_cell(change.new)} |")
        lines.append("")
    return lines


def ignored_markdown(report: Report) -> list[str]:
    if not report.ignored:
        return []
    lines = ["", "<details><summary>Ignored: fields the Docker daemon fills in (not drift)</summary>", ""]
    for entry in report.ignored:
        lines.append(f"- **{entry.name}** `{entry.change.path}`: {entry.entry.reason} ([why]({entry.entry.link}))")
    return lines + ["", "</details>"]


def section(title: str, report: Report, *, drift: bool) -> str:
    """One titled section: the drift of a stack, or the change a preview would make."""
    budget = [MAX_ROWS]
    if drift:
        verdict = "**drift found**" if report.drift else "no drift"
    else:
        verdict = "**changes**" if report.changes else "no changes"
    lines = [f"### {title}", "", f"{verdict} — {summary_line(report)}", ""]
    if report.drift:
        if not drift:
            lines += ["Drift found by this preview's refresh:", ""]
        lines += items_markdown(report.drift, budget)
    if report.changes:
        if report.drift:
            lines += ["", "Changes:", ""]
        lines += items_markdown(report.changes, budget)
    lines += ignored_markdown(report)
    if report.diagnostics:
        lines += ["", "Engine diagnostics:", ""] + [f"- {d}" for d in report.diagnostics]
    return "\n".join(lines).rstrip() + "\n"
