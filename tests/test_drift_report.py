"""The report renderer on preview JSON in the engine's documented format (tests/fixtures/preview),
and the one list of ignored daemon-filled fields."""

from __future__ import annotations

import json
import re

import pytest

from components.container import ContainerService
from components.drift_ignore import CONTAINER, CONTAINER_IGNORE_CHANGES, IGNORED_FIELDS, PINNED_CONTAINER_ARGS, ignored
from infra.cli import report as rp
from tests.conftest import run
from tests.mocks import REPO_ROOT
from tests.test_components_core import service_args

FIXTURES = REPO_ROOT / "tests" / "fixtures" / "preview"
# Every secret value planted in the fixtures, in each of the forms a preview can carry one.
PLANTED_SECRETS = ("pg-secret-value", "url-secret", "content-secret", "smtp-secret-value", "sig-secret-plaintext", "diag-secret")


def load(name: str) -> dict:
    return json.loads((FIXTURES / f"{name}.json").read_text())


def rendered(name: str, *, drift: bool) -> str:
    return rp.section(name, rp.analyse(load(name), all_drift=drift), drift=drift)


def test_counts_by_operation_fold_replacement_steps_and_ignored_only_updates():
    report = rp.analyse(load("changes"), all_drift=False)
    # create-replacement/delete-replaced are one `replace`; the memorySwap-only update is unchanged
    assert report.counts == {"create": 1, "update": 1, "replace": 1, "delete": 1, "same": 15}
    assert [(i.op, i.name) for i in report.changes] == [
        ("create", "loki"), ("update", "python-api-1"), ("replace", "gateway"), ("delete", "kibana"),
    ]
    assert report.drift == () and report.found
    assert rp.summary_line(report) == "create 1 · update 1 · replace 1 · delete 1 · same 15 · ignored fields 2"


def test_each_changed_property_is_listed_old_against_new():
    text = rendered("changes", drift=False)
    assert '| `envs[0]` | update | `"LOG_LEVEL=info"` | `"LOG_LEVEL=debug"` |' in text
    assert '| `labels[0].value` | update | `"aaaa"` | `"bbbb"` |' in text
    assert "**gateway** `docker:index/container:Container` — replaced because of `image`" in text
    assert '| `image` | update-replace | `"sha256:1111"` | `"sha256:2222"` |' in text
    assert "`+ create` **loki**" in text and "`- delete` **kibana**" in text
    assert "warning: DATABASE_URL=postgres://app:[secret]@postgres/app was slow" in text
    assert "debug chatter" not in text, "info diagnostics are noise in a PR comment"


def test_the_markdown_of_a_preview_with_secrets_never_contains_a_secret_value():
    raw = (FIXTURES / "changes.json").read_text()
    assert all(secret in raw for secret in PLANTED_SECRETS), "the fixture carries every planted secret"
    for drift in (True, False):
        text = rendered("changes", drift=drift)
        leaked = [secret for secret in PLANTED_SECRETS if secret in text]
        assert leaked == [], leaked
    text = rendered("changes", drift=False)
    assert '`"POSTGRES_PASSWORD=[secret]"`' in text and '| `smtpPassword` | update | `"[secret]"` | `"[secret]"` |' in text
    assert '| `uploads[0].content` | update | `"[secret]"` | `"[secret]"` |' in text


@pytest.mark.parametrize("value, expected", [
    ({rp.SECRET_SIG: "1b47061264138c4ac30d75fd1eb44270", "plaintext": '"x"'}, rp.MASK),
    ({"a": [{"tlsPrivateKey": "k"}, {"sshPrivateKey": {"nested": "k"}}]}, {"a": [{"tlsPrivateKey": rp.MASK}, {"sshPrivateKey": rp.MASK}]}),
    (["GF_SECURITY_ADMIN_PASSWORD=x", "REDIS_URL=redis://:pw@redis:6379", "MODE=fast"],
     ["GF_SECURITY_ADMIN_PASSWORD=[secret]", "REDIS_URL=redis://:[secret]@redis:6379", "MODE=fast"]),
    ("amqp://user:pw@host/vhost", "amqp://user:[secret]@host/vhost"),
    ({"result": "generated", "length": 32}, {"result": rp.MASK, "length": 32}),
])
def test_masking_covers_signatures_secret_keys_env_entries_and_url_passwords(value, expected):
    assert rp.mask(value) == expected


def test_refresh_drift_is_drift_and_daemon_filled_fields_are_shown_apart():
    report = rp.analyse(load("drift"), all_drift=True)
    assert report.counts == {"refresh": 1, "update": 1, "create": 1, "same": 31}  # redis: only networkDatas moved
    assert [(i.op, i.name) for i in report.drift] == [("refresh", "gateway"), ("update", "gateway"), ("create", "postgres")]
    text = rp.section("drift", report, drift=True)
    assert '| `restart` | update | `"unless-stopped"` | `"no"` |' in text  # live host (refresh) against state
    assert "| `memory` | update | `128` | `512` |" in text
    ignored_part = text[text.index("<details>"):]
    assert "networkDatas" in ignored_part and "networkDatas" not in text[: text.index("<details>")]
    assert "https://github.com/pulumi/pulumi-docker/issues/1651" in ignored_part
    assert "172.20.0" not in text, "re-assigned addresses are not shown as changes"


def test_in_a_refreshed_preview_drift_comes_before_the_changes():
    report = rp.analyse(load("drift"), all_drift=False)
    assert [i.op for i in report.drift] == ["refresh"] and [i.op for i in report.changes] == ["update", "create"]
    text = rp.section("preview", report, drift=False)
    assert text.index("Drift found by this preview's refresh") < text.index("`~ refresh` **gateway**") < text.index("Changes:")
    assert text.index("Changes:") < text.index("`~ update` **gateway**")


def test_only_ignored_differences_are_no_drift_and_a_clean_preview_says_so():
    report = rp.analyse(load("ignored_only"), all_drift=True)
    assert not report.found and report.counts == {"same": 33}
    assert sorted({i.change.path for i in report.ignored}) == ["memorySwap", "networkDatas[0].ipAddress", "networkDatas[0].macAddress"]
    clean = rendered("clean", drift=True)
    assert clean.startswith("### clean\n\nno drift — same 33") and "<details>" not in clean


def test_diff_reasons_are_used_when_the_engine_sends_no_detailed_diff():
    urn = "urn:pulumi:qa::coderz::docker:index/network:Network::net"
    digest = {"steps": [{"op": "update", "urn": urn, "diffReasons": ["labels"],
                         "oldState": {"type": "docker:index/network:Network", "inputs": {"labels": [{"label": "a", "value": "1"}]}},
                         "newState": {"type": "docker:index/network:Network", "inputs": {"labels": []}}}],
              "changeSummary": {"update": 1}}
    (item,) = rp.analyse(digest, all_drift=True).drift
    assert item.changes == (rp.Change("labels", "update", [{"label": "a", "value": "1"}], []),)


def test_hostile_values_cannot_break_the_table_and_rows_are_capped():
    urn = "urn:pulumi:qa::coderz::docker:index/container:Container::web"
    evil = "a|b`c\n| injected | row |"
    detailed = {f"labels[{n}].value": {"kind": "update"} for n in range(rp.MAX_ROWS + 50)}
    labels = [{"label": str(n), "value": evil} for n in range(rp.MAX_ROWS + 50)]
    digest = {"steps": [{"op": "update", "urn": urn, "detailedDiff": detailed,
                         "oldState": {"type": CONTAINER, "outputs": {"labels": labels}, "inputs": {}},
                         "newState": {"type": CONTAINER, "inputs": {"labels": []}}}], "changeSummary": {"update": 1}}
    text = rp.section("evil", rp.analyse(digest, all_drift=True), drift=True)
    rows = [line for line in text.splitlines() if line.startswith("  | `labels[")]
    assert len(rows) == rp.MAX_ROWS and "more rows in the JSON artifact" in text
    assert all(line.count(" | ") == 4 for line in rows), "four cells, whatever the values hold"
    assert "\n| injected" not in text


def test_property_paths_follow_the_engines_syntax():
    assert rp.split_path('uploads[0].content') == ["uploads", 0, "content"]
    assert rp.split_path('labels["coderz.stack"].value') == ["labels", "coderz.stack", "value"]
    assert rp.lookup({"a": [{"b": 1}]}, "a[0].b") == 1
    assert rp.lookup({"a": []}, "a[3]") is rp._ABSENT


def test_every_ignored_field_has_its_reason_and_link_and_inputs_go_to_ignore_changes():
    assert IGNORED_FIELDS, "the list exists in one place"
    for entry in IGNORED_FIELDS:
        assert len(entry.reason) > 30 and re.fullmatch(r"https://github\.com/\S+", entry.link)
        assert ignored(entry.resource_type, f"{entry.field}[0].x") is entry
    assert CONTAINER_IGNORE_CHANGES == [f.field for f in IGNORED_FIELDS if f.kind == "input"]
    assert ignored(CONTAINER, "networkMode") is None, "pinned fields are avoided, not ignored"
    assert ignored("docker:index/network:Network", "memorySwap") is None


def test_containers_pin_what_the_daemon_stores_and_ignore_only_the_listed_inputs(monitor, provider):
    run(lambda: ContainerService("web", service_args(provider)))
    (container,) = monitor.of_type(CONTAINER)
    assert PINNED_CONTAINER_ARGS == {"network_mode": "bridge", "domainname": ""}
    assert container.plain["networkMode"] == "bridge" and container.plain["domainname"] == ""
    assert container.plain["logDriver"] == "json-file" and container.plain["logOpts"]
    assert container.ignore_changes == CONTAINER_IGNORE_CHANGES


@pytest.mark.parametrize("digest", [
    {},
    {"steps": "nope", "changeSummary": [], "diagnostics": {"x": 1}},
    {"steps": [None, 3, {"op": "update", "urn": 7, "oldState": "x", "newState": [], "detailedDiff": "y", "diffReasons": 5}]},
    {"steps": [{"op": "refresh", "urn": "u::v", "oldState": {"outputs": "a"}, "newState": {"outputs": None}}],
     "changeSummary": {"same": "many"}},
])
def test_malformed_json_gives_a_report_not_a_crash(digest):
    report = rp.analyse(digest, all_drift=True)
    assert isinstance(rp.section("odd", report, drift=True), str)
