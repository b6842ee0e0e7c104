"""The logging tier's config files, checked with real tools where they exist here.

- Loki and Promtail configs: the `check-jsonschema` CLI against schemas that mirror the Loki
  v3.1.x configuration reference (components/logging/schemas/); misspelled keys must fail.
  No Loki or Promtail binary is available (Debian's `loki` is genetics software).
- es-setup.sh: run by the real `sh` and `curl` against a recording fake Elasticsearch.
- Logstash pipeline: no Logstash here. The rendered text is parsed by a small parser of the
  Logstash config grammar (below) and its filter section is *executed* on sample gateway
  lines by an interpreter of the four plugins it uses (json, mutate, date, conditionals).
  The plugin semantics are mirrored by hand from logstash-filter-mutate 3.5.x (Logstash >=
  8.14: strict `convert`, fixed operation order) -- that mirror is the gap: it is not Logstash.
- Filebeat config, ILM policy, index template: YAML/JSON structure.
"""

from __future__ import annotations

import ipaddress
import json
import re
import subprocess
import sys
import threading
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from pathlib import Path

import pytest
import yaml

from components.logging import render
from tests.servers import require_module, require_tool

SCHEMAS = resources.files("components.logging") / "schemas"
LOKI_SCHEMA = Path(str(SCHEMAS / "loki-3.1.schema.json"))
PROMTAIL_SCHEMA = Path(str(SCHEMAS / "promtail-3.1.schema.json"))
REPO_ROOT = Path(__file__).resolve().parent.parent


# --- real schema checks -------------------------------------------------------------------

def check_jsonschema(schema: Path, document: str, tmp_path: Path, name: str = "config.yaml") -> subprocess.CompletedProcess:
    """The check-jsonschema CLI on one YAML document; returns the finished process."""
    require_module("check_jsonschema")
    target = tmp_path / name
    target.write_text(document)
    return subprocess.run(
        [sys.executable, "-m", "check_jsonschema", "--schemafile", str(schema), str(target)],
        capture_output=True, text=True, timeout=120,
    )


def validator(schema: Path):
    jsonschema = require_module("jsonschema")
    spec = json.loads(schema.read_text())
    jsonschema.Draft202012Validator.check_schema(spec)
    return jsonschema.Draft202012Validator(spec)


@pytest.mark.parametrize("schema", [LOKI_SCHEMA, PROMTAIL_SCHEMA], ids=["loki", "promtail"])
def test_schemas_are_valid_and_name_the_loki_version(schema):
    spec = json.loads(schema.read_text())
    assert "v3.1.x" in spec["$comment"]
    validator(schema)  # Draft 2020-12 meta-schema check
    assert spec["additionalProperties"] is False


@pytest.mark.parametrize("days", [1, 14, 90])
def test_loki_config_passes_the_schema(days, tmp_path):
    result = check_jsonschema(LOKI_SCHEMA, render.render_loki_config(days), tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr


def test_loki_config_content():
    config = yaml.safe_load(render.render_loki_config(14))
    assert config["limits_config"]["retention_period"] == "336h"
    assert config["limits_config"]["reject_old_samples_max_age"] == "168h"
    assert config["compactor"]["retention_enabled"] is True
    assert config["compactor"]["delete_request_store"] == "filesystem"
    assert config["compactor"]["working_directory"].startswith(render.LOKI_DATA_DIR + "/")
    (period,) = config["schema_config"]["configs"]
    assert (period["store"], period["schema"], period["object_store"]) == ("tsdb", "v13", "filesystem")
    # Compactor retention works on 24h index tables only.
    assert period["index"]["period"] == "24h"
    assert config["server"]["http_listen_port"] == 3100
    assert config["common"]["storage"]["filesystem"]["chunks_directory"].startswith(render.LOKI_DATA_DIR)
    assert yaml.safe_load(render.render_loki_config(2))["limits_config"]["reject_old_samples_max_age"] == "48h"
    with pytest.raises(ValueError):
        render.render_loki_config(0)


@pytest.mark.parametrize(
    ("section", "key", "value"),
    [
        ("compactor", "retention_enable", True),  # typo of retention_enabled
        ("compactor", "shared_store", "filesystem"),  # removed in Loki 3.0
        ("limits_config", "retention_periods", "24h"),
        ("common", "path_prefx", "/loki"),
        (None, "limit_config", {}),  # top-level typo of limits_config
    ],
)
def test_loki_schema_rejects_misspelled_keys(section, key, value):
    config = yaml.safe_load(render.render_loki_config(7))
    (config[section] if section else config)[key] = value
    errors = list(validator(LOKI_SCHEMA).iter_errors(config))
    assert errors and any(key in e.message for e in errors)


def test_loki_schema_rejects_bad_values():
    check = validator(LOKI_SCHEMA)
    config = yaml.safe_load(render.render_loki_config(7))
    config["schema_config"]["configs"][0]["schema"] = "v14"
    config["limits_config"]["retention_period"] = "14 days"
    assert len(list(check.iter_errors(config))) == 2


def test_check_jsonschema_cli_fails_on_a_typo(tmp_path):
    text = render.render_loki_config(7).replace("retention_enabled:", "retention_enable:")
    result = check_jsonschema(LOKI_SCHEMA, text, tmp_path)
    assert result.returncode == 1
    assert "retention_enable" in result.stdout + result.stderr


def test_promtail_config_passes_the_schema(tmp_path):
    text = render.render_promtail_config("coderz-qa", "http://loki:3100/loki/api/v1/push")
    result = check_jsonschema(PROMTAIL_SCHEMA, text, tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    broken = yaml.safe_load(text)
    broken["scrape_configs"][0]["relabel_config"] = broken["scrape_configs"][0].pop("relabel_configs")
    assert list(validator(PROMTAIL_SCHEMA).iter_errors(broken))


def test_promtail_keeps_only_this_stack_and_names_the_labels():
    config = yaml.safe_load(render.render_promtail_config("coderz-qa", "http://loki:3100/loki/api/v1/push"))
    (job,) = config["scrape_configs"]
    (sd,) = job["docker_sd_configs"]
    assert sd["host"] == "unix:///var/run/docker.sock"
    assert sd["filters"] == [{"name": "label", "values": ["coderz.stack=coderz-qa"]}]
    keep = [r for r in job["relabel_configs"] if r.get("action") == "keep"]
    assert len(keep) == 1
    # Prometheus relabel regexes are anchored at both ends.
    pattern = re.compile(keep[0]["regex"])
    assert pattern.fullmatch("coderz-qa")
    assert not pattern.fullmatch("coderz-qa2") and not pattern.fullmatch("coderz-prod")
    targets = {r["target_label"]: r["source_labels"] for r in job["relabel_configs"] if "target_label" in r}
    assert targets["stack"] == ["__meta_docker_container_label_coderz_stack"]
    assert targets["service"] == ["__meta_docker_container_label_coderz_service"]
    assert targets["container"] == ["__meta_docker_container_name"]
    container = next(r for r in job["relabel_configs"] if r.get("target_label") == "container")
    assert re.fullmatch(container["regex"], "/coderz-qa-gateway").group(1) == "coderz-qa-gateway"
    assert config["clients"] == [{"url": "http://loki:3100/loki/api/v1/push"}]


# --- Filebeat -----------------------------------------------------------------------------

def test_filebeat_reads_only_the_gateway_container_and_ships_to_logstash():
    config = yaml.safe_load(render.render_filebeat_config("coderz-qa-gateway"))
    (provider,) = config["filebeat.autodiscover"]["providers"]
    assert provider["type"] == "docker"
    (template,) = provider["templates"]
    assert template["condition"] == {"equals": {"docker.container.name": "coderz-qa-gateway"}}
    (inp,) = template["config"]
    assert inp["type"] == "container"
    assert inp["paths"] == ["/var/lib/docker/containers/${data.docker.container.id}/*.log"]
    assert inp["stream"] == "stdout"
    assert config["output.logstash"] == {"hosts": ["logstash:5044"]}
    assert config["http.host"] == "127.0.0.1" and config["http.enabled"] is True
    assert not any(key.startswith("output.") and key != "output.logstash" for key in config)


# --- ILM policy and index template --------------------------------------------------------

@pytest.mark.parametrize("days", [1, 7, 30])
def test_ilm_policy_deletes_after_the_configured_days(days):
    policy = json.loads(render.render_ilm_policy(days))
    assert policy["policy"]["phases"]["delete"] == {"min_age": f"{days}d", "actions": {"delete": {}}}
    assert set(policy["policy"]["phases"]) <= {"hot", "warm", "cold", "frozen", "delete"}
    with pytest.raises(ValueError):
        render.ilm_policy(0)


def test_index_template_attaches_the_policy_and_maps_the_gateway_fields():
    template = json.loads(render.render_index_template())
    assert template["index_patterns"] == ["gateway-*"]
    settings = template["template"]["settings"]
    assert settings["index.lifecycle.name"] == render.ILM_POLICY_NAME
    assert settings["index.number_of_replicas"] == 0  # one node: replicas would stay unassigned
    assert settings["index.lifecycle.parse_origination_date"] is True
    properties = template["template"]["mappings"]["properties"]
    assert properties["@timestamp"] == {"type": "date"}
    for name, field in render.GATEWAY_FIELDS.items():
        assert properties[name]["type"] == field.es_type
    assert properties["status"]["ignore_malformed"] is True


def test_daily_index_names_parse_as_origination_dates():
    # Elasticsearch's IndexLifecycleOriginationDateParser: ^.*-(\d{4}.\d{2}.\d{2})(-[\d]+)?$,
    # and an index that does not match fails to be created.
    name = sprintf(render.DAILY_INDEX, {"@timestamp": datetime(2024, 5, 1, 23, 59, tzinfo=timezone.utc)})
    assert name == "gateway-2024.05.01"
    assert re.fullmatch(r"^.*-(\d{4}.\d{2}.\d{2})(-[\d]+)?$", name)


# --- es-setup.sh with the real sh and curl -------------------------------------------------

class FakeElasticsearch:
    """Records every request; answers health with `health_status`, PUTs with `put_status`."""

    def __init__(self, health_status: int = 200, put_status: int = 200):
        self.requests: list[tuple[str, str, bytes, str]] = []
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self, status: int) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                fake.requests.append((self.command, self.path, body, self.headers.get("Content-Type", "")))
                payload = b'{"acknowledged":true}'
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def do_GET(self):
                self._answer(health_status)

            def do_PUT(self):
                self._answer(put_status)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self) -> "FakeElasticsearch":
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()


def setup_dir(tmp_path: Path, days: int = 9) -> Path:
    """The files Logstash's container gets in /usr/share/logstash/setup."""
    (tmp_path / "es-setup.sh").write_text(render.render_es_setup_script())
    (tmp_path / "ilm-policy.json").write_text(render.render_ilm_policy(days))
    (tmp_path / "index-template.json").write_text(render.render_index_template())
    return tmp_path


def run_setup(folder: Path, es_url: str, wait_s: int = 0) -> subprocess.CompletedProcess:
    sh, _ = require_tool("sh"), require_tool("curl")
    return subprocess.run([sh, str(folder / "es-setup.sh")], env={"PATH": "/usr/bin:/bin", "ES_URL": es_url,
                          "ES_WAIT_S": str(wait_s)}, capture_output=True, text=True, timeout=60)


def test_es_setup_script_is_valid_sh(tmp_path):
    sh = require_tool("sh")
    folder = setup_dir(tmp_path)
    assert subprocess.run([sh, "-n", str(folder / "es-setup.sh")]).returncode == 0


def test_es_setup_puts_the_policy_then_the_template(tmp_path):
    folder = setup_dir(tmp_path, days=9)
    with FakeElasticsearch() as es:
        result = run_setup(folder, es.url)
        second = run_setup(folder, es.url)
    assert result.returncode == 0, result.stderr
    assert second.returncode == 0, second.stderr
    puts = [(path, json.loads(body), kind) for method, path, body, kind in es.requests if method == "PUT"]
    # Idempotent: the same two PUTs each run, the policy before the template that names it.
    assert [p for p, _, _ in puts] == ["/_ilm/policy/gateway-retention", "/_index_template/gateway"] * 2
    assert puts[0][1] == render.ilm_policy(9) and puts[1][1] == render.index_template()
    assert all(kind == "application/json" for _, _, kind in puts)
    assert es.requests[0][:2] == ("GET", "/_cluster/health?wait_for_status=yellow&timeout=5s")


def test_es_setup_fails_when_elasticsearch_is_not_ready(tmp_path):
    with FakeElasticsearch(health_status=503) as es:
        result = run_setup(setup_dir(tmp_path), es.url, wait_s=0)
    assert result.returncode == 1
    assert "not ready" in result.stderr
    assert not [r for r in es.requests if r[0] == "PUT"]


def test_es_setup_fails_when_a_put_is_refused(tmp_path):
    # Logstash must not start (`setup && exec logstash`) on a refused template.
    with FakeElasticsearch(put_status=400) as es:
        result = run_setup(setup_dir(tmp_path), es.url)
    assert result.returncode != 0
    assert [r[1] for r in es.requests if r[0] == "PUT"] == ["/_ilm/policy/gateway-retention"]


# --- a parser and interpreter for the Logstash config subset we write ----------------------

class LogstashSyntaxError(Exception):
    pass


class LogstashConfig:
    """Recursive descent over Logstash's config grammar (logstash-core grammar.treetop):
    sections of plugins and if/else if/else branches; values are strings, numbers, barewords,
    arrays and hashes; conditions compare selectors, strings, numbers and regexps."""

    WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*")
    NUMBER = re.compile(r"-?\d+(\.\d+)?")
    SELECTOR = re.compile(r"(\[[^\[\],]+\])+")
    OPS = ("==", "!=", "<=", ">=", "=~", "!~", "<", ">")

    def __init__(self, text: str):
        self.text, self.pos = text, 0
        self.sections: dict[str, list] = {}
        while self._skip() < len(text):
            kind = self._word()
            if kind not in ("input", "filter", "output"):
                self._fail(f"unknown section {kind!r}")
            self._expect("{")
            self.sections.setdefault(kind, []).extend(self._items())

    # lexing
    def _skip(self) -> int:
        while True:
            while self.pos < len(self.text) and self.text[self.pos].isspace():
                self.pos += 1
            if self.text.startswith("#", self.pos):
                end = self.text.find("\n", self.pos)
                self.pos = len(self.text) if end < 0 else end
            else:
                return self.pos

    def _fail(self, message: str):
        line = self.text.count("\n", 0, self.pos) + 1
        raise LogstashSyntaxError(f"line {line}: {message}")

    def _peek(self, literal: str) -> bool:
        self._skip()
        return self.text.startswith(literal, self.pos)

    def _peek_word(self, word: str) -> bool:
        self._skip()
        match = self.WORD.match(self.text, self.pos)
        return bool(match) and match.group() == word

    def _expect(self, literal: str) -> None:
        if not self._peek(literal):
            self._fail(f"expected {literal!r}, found {self.text[self.pos:self.pos + 20]!r}")
        self.pos += len(literal)

    def _word(self) -> str:
        self._skip()
        match = self.WORD.match(self.text, self.pos)
        if not match:
            self._fail(f"expected a name, found {self.text[self.pos:self.pos + 20]!r}")
        self.pos = match.end()
        return match.group()

    def _quoted(self, quote: str) -> str:
        self._expect(quote)
        out = []
        while not self.text.startswith(quote, self.pos):
            if self.pos >= len(self.text):
                self._fail("unterminated string")
            if self.text.startswith("\\" + quote, self.pos):
                out.append(quote)
                self.pos += 2
            else:
                out.append(self.text[self.pos])
                self.pos += 1
        self.pos += 1
        return "".join(out)  # config.support_escapes is off: other backslashes stay

    # grammar
    def _items(self) -> list:
        items = []
        while not self._peek("}"):
            if self.pos >= len(self.text):
                self._fail("unclosed block")
            items.append(self._branch() if self._peek_word("if") else self._plugin())
        self._expect("}")
        return items

    def _plugin(self) -> tuple:
        name = self._word()
        self._expect("{")
        attributes = []
        while not self._peek("}"):
            key = self._quoted(self.text[self.pos]) if self._peek('"') or self._peek("'") else self._word()
            self._expect("=>")
            attributes.append((key, self._value()))
        self._expect("}")
        return ("plugin", name, attributes)

    def _value(self):
        self._skip()
        char = self.text[self.pos:self.pos + 1]
        if char in ('"', "'"):
            return self._quoted(char)
        if char == "[":
            self.pos += 1
            values = []
            while not self._peek("]"):
                values.append(self._value())
                if not self._peek("]"):
                    self._expect(",")
            self._expect("]")
            return values
        if char == "{":
            self.pos += 1
            entries = {}
            while not self._peek("}"):
                key = self._value()
                self._expect("=>")
                entries[key] = self._value()
            self._expect("}")
            return entries
        number = self.NUMBER.match(self.text, self.pos)
        if number:
            self.pos = number.end()
            return float(number.group()) if "." in number.group() else int(number.group())
        word = self._word()
        return {"true": True, "false": False}.get(word, word)

    def _branch(self) -> tuple:
        arms = []
        self._word()  # if
        arms.append((self._condition(), self._block()))
        otherwise = []
        while self._peek_word("else"):
            self._word()
            if self._peek_word("if"):
                self._word()
                arms.append((self._condition(), self._block()))
            else:
                otherwise = self._block()
                break
        return ("if", arms, otherwise)

    def _block(self) -> list:
        self._expect("{")
        return self._items()

    def _condition(self) -> tuple:
        terms, joins = [self._expression()], []
        while any(self._peek_word(op) for op in ("and", "or", "xor", "nand")):
            joins.append(self._word())
            terms.append(self._expression())
        if len(set(joins)) > 1:
            self._fail("mixed boolean operators: precedence not modelled here")
        return ("cond", joins[0] if joins else None, terms)

    def _expression(self) -> tuple:
        if self._peek("("):
            self.pos += 1
            inner = self._condition()
            self._expect(")")
            return inner
        if self._peek("!") and not self._peek("!="):
            self.pos += 1
            return ("not", self._expression())
        left = self._rvalue()
        if self._peek_word("not"):
            self._word()
            if not self._peek_word("in"):
                self._fail("expected 'in' after 'not'")
            self._word()
            return ("not in", left, self._rvalue())
        if self._peek_word("in"):
            self._word()
            return ("in", left, self._rvalue())
        for op in self.OPS:
            if self._peek(op):
                self.pos += len(op)
                return (op, left, self._rvalue())
        return ("truthy", left)

    def _rvalue(self) -> tuple:
        self._skip()
        char = self.text[self.pos:self.pos + 1]
        if char in ('"', "'"):
            return ("str", self._quoted(char))
        if char == "/":
            self.pos += 1
            end = self.pos
            while self.text[end] != "/" or self.text[end - 1] == "\\":
                end += 1
            pattern, self.pos = self.text[self.pos:end], end + 1
            return ("regex", pattern)
        selector = self.SELECTOR.match(self.text, self.pos)
        if selector:
            self.pos = selector.end()
            return ("field", tuple(re.findall(r"\[([^\]]+)\]", selector.group())))
        number = self.NUMBER.match(self.text, self.pos)
        if number:
            self.pos = number.end()
            return ("num", float(number.group()))
        self._fail(f"expected a value, found {self.text[self.pos:self.pos + 20]!r}")

    def plugins(self, section: str) -> list[tuple[str, dict]]:
        """Every plugin of a section, branches flattened, as (name, attributes)."""
        found = []

        def walk(items):
            for item in items:
                if item[0] == "plugin":
                    found.append((item[1], dict(item[2])))
                else:
                    for _, block in item[1]:
                        walk(block)
                    walk(item[2])

        walk(self.sections.get(section, []))
        return found


def _path(ref: str) -> tuple[str, ...]:
    return tuple(re.findall(r"\[([^\]]+)\]", ref)) or (ref,)


def get(event: dict, path: tuple[str, ...]):
    for key in path:
        if not isinstance(event, dict) or key not in event:
            return None
        event = event[key]
    return event


def put(event: dict, path: tuple[str, ...], value) -> None:
    for key in path[:-1]:
        event = event.setdefault(key, {})
    event[path[-1]] = value


def remove(event: dict, path: tuple[str, ...]) -> None:
    parent = get(event, path[:-1]) if len(path) > 1 else event
    if isinstance(parent, dict):
        parent.pop(path[-1], None)


def sprintf(template: str, event: dict) -> str:
    """Logstash's %{field} and %{+joda date of @timestamp} (the patterns we use)."""
    def one(match):
        ref = match.group(1)
        if ref.startswith("+"):
            joda = ref[1:].replace("YYYY", "%Y").replace("MM", "%m").replace("dd", "%d")
            return event["@timestamp"].astimezone(timezone.utc).strftime(joda)
        value = get(event, _path(ref))
        return match.group(0) if value is None else str(value)
    return re.sub(r"%\{([^}]+)\}", one, template)


def ruby_float(value):
    """Float() of Ruby on mutate's input (logstash-filter-mutate 3.5.x, Logstash >= 8.14):
    strip, delete commas, then strict parsing -- '-' or '0.010 0.020' raise."""
    if isinstance(value, bool):
        return 1.0 if value else 0.0
    if isinstance(value, float):
        return value
    if isinstance(value, int):
        return float(value)
    text = str(value).strip().replace(",", "")
    if not re.fullmatch(r"[+-]?\d[\d_]*(\.\d[\d_]*)?([eE][+-]?\d+)?", text):
        raise ValueError(f"invalid value for Float(): {value!r}")
    return float(text.replace("_", ""))


def ruby_integer(value):
    """mutate's convert_integer: strings go through Ruby's lenient to_i ('12.5' -> 12)."""
    if isinstance(value, bool):
        return 1 if value else 0
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return int(value)
    match = re.match(r"\s*([+-]?\d[\d_]*)", str(value).strip().replace(",", ""))
    return int(match.group(1).replace("_", "")) if match else 0


def add_tags(event: dict, tags) -> None:
    event.setdefault("tags", [])
    for tag in [tags] if isinstance(tags, str) else tags:
        if tag not in event["tags"]:
            event["tags"].append(tag)


def common_options(event: dict, attrs: dict) -> None:
    """Applied only when a filter succeeded (filter_matched)."""
    for ref in attrs.get("remove_field", []):
        remove(event, _path(sprintf(ref, event)))
    if "add_tag" in attrs:
        add_tags(event, attrs["add_tag"])


def run_json(event: dict, attrs: dict) -> None:
    assert set(attrs) <= {"source", "target", "tag_on_failure", "skip_on_invalid_json", "remove_field", "add_tag"}
    try:
        parsed = json.loads(get(event, _path(attrs["source"])) or "")
        if not isinstance(parsed, dict) and "target" not in attrs:
            raise ValueError("a JSON object is required without a target")
    except ValueError:
        if not attrs.get("skip_on_invalid_json"):
            add_tags(event, attrs.get("tag_on_failure", ["_jsonparsefailure"]))
        return
    if "target" in attrs:
        put(event, _path(attrs["target"]), parsed)
    else:
        event.update(parsed)
    common_options(event, attrs)


def run_mutate(event: dict, attrs: dict) -> None:
    known = {"convert", "gsub", "strip", "split", "remove_field", "add_tag", "tag_on_failure"}
    assert set(attrs) <= known, f"mutate options not modelled: {set(attrs) - known}"
    converters = {"integer": ruby_integer, "float": ruby_float}
    try:
        # The plugin's fixed order: ... convert, gsub, ..., strip, split, ...
        for field, kind in attrs.get("convert", {}).items():
            value = get(event, _path(field))
            if isinstance(value, list):
                put(event, _path(field), [v if v is None else converters[kind](v) for v in value])
            elif value is not None and not isinstance(value, dict):
                put(event, _path(field), converters[kind](value))
        gsub = attrs.get("gsub", [])
        for field, needle, replacement in zip(gsub[0::3], gsub[1::3], gsub[2::3]):
            value = get(event, _path(field))
            if isinstance(value, str):
                put(event, _path(field), re.sub(needle, replacement, value))
            elif isinstance(value, list):
                put(event, _path(field), [re.sub(needle, replacement, v) if isinstance(v, str) else v for v in value])
        for field in attrs.get("strip", []):
            value = get(event, _path(field))
            if isinstance(value, list):
                put(event, _path(field), [v.strip() for v in value])
            elif isinstance(value, str):
                put(event, _path(field), value.strip())
        for field, separator in attrs.get("split", {}).items():
            value = get(event, _path(field))
            if isinstance(value, str):
                parts = value.split(separator)
                while parts and parts[-1] == "":  # Ruby's String#split drops trailing empties
                    parts.pop()
                put(event, _path(field), parts)
    except ValueError:
        add_tags(event, attrs.get("tag_on_failure", "_mutate_error"))
        return
    common_options(event, attrs)


def run_date(event: dict, attrs: dict) -> None:
    assert set(attrs) <= {"match", "target", "tag_on_failure"}
    field, *formats = attrs["match"]
    assert formats == ["ISO8601"], "only ISO8601 is modelled"
    try:
        stamp = datetime.fromisoformat(str(get(event, _path(field))))
        if stamp.tzinfo is None:
            raise ValueError("no offset")
    except ValueError:
        add_tags(event, attrs.get("tag_on_failure", ["_dateparsefailure"]))
        return
    put(event, _path(attrs.get("target", "@timestamp")), stamp.astimezone(timezone.utc))


FILTERS = {"json": run_json, "mutate": run_mutate, "date": run_date}


def evaluate(condition, event: dict) -> bool:
    kind = condition[0]
    if kind == "cond":
        _, join, terms = condition
        results = [evaluate(t, event) for t in terms]
        return {None: all, "and": all, "or": any}[join](results)
    if kind == "not":
        return not evaluate(condition[1], event)
    if kind == "truthy":
        return bool(value_of(condition[1], event))
    op, left, right = condition
    a, b = value_of(left, event), value_of(right, event)
    if op in ("in", "not in"):
        inside = a in b if isinstance(b, (list, str)) else False
        return inside if op == "in" else not inside
    if op in ("=~", "!~"):
        matched = isinstance(a, str) and re.search(b, a) is not None
        return matched if op == "=~" else not matched
    return {"==": a == b, "!=": a != b}[op]


def value_of(rvalue, event: dict):
    kind, value = rvalue
    return get(event, value) if kind == "field" else value


def run_filters(items: list, event: dict) -> dict:
    for item in items:
        if item[0] == "plugin":
            _, name, attributes = item
            assert name in FILTERS, f"filter {name} is not modelled"
            FILTERS[name](event, dict(attributes))
        else:
            _, arms, otherwise = item
            for condition, block in arms:
                if evaluate(condition, event):
                    run_filters(block, event)
                    break
            else:
                run_filters(otherwise, event)
    return event


# --- the pipeline -------------------------------------------------------------------------

PIPELINE = render.render_logstash_pipeline("http://elasticsearch:9200")


def beats_event(line: str) -> dict:
    """What Filebeat's container input sends for one json-file line of the gateway."""
    return {"message": line, "stream": "stdout", "input": {"type": "container"},
            "container": {"id": "4f1c", "name": "coderz-qa-gateway", "image": {"name": "openresty/openresty"}},
            "host": {"name": "coderz-qa-filebeat"}, "agent": {"type": "filebeat", "version": "8.15.3"},
            "log": {"offset": 0, "file": {"path": "/var/lib/docker/containers/4f1c/4f1c-json.log"}},
            "ecs": {"version": "8.0.0"}, "@timestamp": datetime(2024, 5, 1, 12, 0, 1, tzinfo=timezone.utc)}


def gateway_line(**changes) -> str:
    """One access-log line as the gateway writes it (log_format gateway_json, escape=json)."""
    fields = {
        "time": "2024-05-01T12:00:00+00:00", "remote_addr": "203.0.113.7", "request_id": "3f2a9c",
        "method": "GET", "uri": "/api/python/items", "args": "page=2", "host": "example.org",
        "status": 200, "bytes_sent": 512, "request_time": 0.012, "upstream_response_time": "0.010",
        "upstream_addr": "172.18.0.5:8000", "upstream_status": "200", "cache_status": "MISS",
        "route": "python-api", "user_agent": "curl/8.5.0",
    }
    fields.update(changes)
    return json.dumps({k: v for k, v in fields.items() if v is not None})


def process(line: str) -> dict:
    return run_filters(LogstashConfig(PIPELINE).sections["filter"], beats_event(line))


def assert_matches_mapping(event: dict) -> None:
    """Each gateway field holds what its Elasticsearch mapping accepts without ignore_malformed."""
    for name, field in render.GATEWAY_FIELDS.items():
        if name not in event:
            continue
        values = event[name] if isinstance(event[name], list) else [event[name]]
        if isinstance(event[name], list):
            assert field.multi, f"{name} became a list"
        for value in values:
            if field.es_type in ("integer", "long"):
                assert isinstance(value, int) and not isinstance(value, bool), (name, value)
            elif field.es_type == "float":
                assert isinstance(value, float), (name, value)
            elif field.es_type == "ip":
                ipaddress.ip_address(value)
            else:
                assert isinstance(value, str), (name, value)


def test_pipeline_parses_and_has_the_expected_shape():
    config = LogstashConfig(PIPELINE)
    assert set(config.sections) == {"input", "filter", "output"}
    assert config.plugins("input") == [("beats", {"port": 5044})]
    json_filters = [attrs for name, attrs in config.plugins("filter") if name == "json"]
    assert len(json_filters) == 1 and json_filters[0]["source"] == "message"
    assert {name for name, _ in config.plugins("filter")} == {"json", "mutate", "date"}  # no ruby
    ((name, out),) = config.plugins("output")
    assert name == "elasticsearch"
    assert out["index"] == "gateway-%{+YYYY.MM.dd}"
    assert out["hosts"] == ["http://elasticsearch:9200"]
    assert (out["manage_template"], out["ilm_enabled"], out["data_stream"]) == (False, False, False)


def test_parser_rejects_broken_configs():
    for broken in ("filter { mutate { convert => { \"a\" => \"float\" } }",  # unclosed
                   "filter { mutate { convert = { } } }",  # = instead of =>
                   "filters { }"):
        with pytest.raises(LogstashSyntaxError):
            LogstashConfig(broken)


def test_a_plain_line_maps_to_the_declared_types():
    event = process(gateway_line())
    assert "tags" not in event and "message" not in event
    assert event["status"] == 200 and event["bytes_sent"] == 512
    assert event["request_time"] == 0.012
    assert event["upstream_response_time"] == 0.010
    assert event["upstream_addr"] == "172.18.0.5:8000"  # the port's colon is not a separator
    assert event["host"] == "example.org"  # the request's Host, not Beats' host object
    assert event["container"]["name"] == "coderz-qa-gateway"
    assert event["@timestamp"] == datetime(2024, 5, 1, 12, 0, tzinfo=timezone.utc)
    assert sprintf(render.DAILY_INDEX, event) == "gateway-2024.05.01"
    assert_matches_mapping(event)


@pytest.mark.parametrize("no_upstream", ["-", ""])
def test_no_upstream_drops_the_upstream_fields(no_upstream):
    event = process(gateway_line(upstream_response_time=no_upstream, upstream_addr=no_upstream,
                                 upstream_status=no_upstream, cache_status="HIT"))
    assert "tags" not in event
    assert not {"upstream_response_time", "upstream_addr", "upstream_status"} & set(event)
    assert_matches_mapping(event)


def test_several_upstreams_become_lists():
    event = process(gateway_line(upstream_response_time="0.010, 0.020",
                                 upstream_addr="172.18.0.5:8000, 172.18.0.6:8000", upstream_status="502, 200"))
    assert "tags" not in event
    assert event["upstream_response_time"] == [0.010, 0.020]
    assert event["upstream_addr"] == ["172.18.0.5:8000", "172.18.0.6:8000"]
    assert event["upstream_status"] == ["502", "200"]
    assert_matches_mapping(event)


def test_an_internal_redirect_joins_the_groups():
    event = process(gateway_line(upstream_response_time="0.010, 0.020 : 0.005",
                                 upstream_addr="172.18.0.5:8000, 172.18.0.6:8000 : 172.18.0.9:8080"))
    assert event["upstream_response_time"] == [0.010, 0.020, 0.005]
    assert event["upstream_addr"] == ["172.18.0.5:8000", "172.18.0.6:8000", "172.18.0.9:8080"]
    assert_matches_mapping(event)


def test_numbers_written_as_strings_are_converted():
    event = process(gateway_line(status="404", request_time="0.250", bytes_sent="0"))
    assert (event["status"], event["request_time"], event["bytes_sent"]) == (404, 0.25, 0)
    assert_matches_mapping(event)


def test_an_unparsable_upstream_time_is_tagged_and_leaves_the_rest_typed():
    event = process(gateway_line(upstream_response_time="0.010, -"))
    assert event["tags"] == [render.UPSTREAM_TIME_TAG]
    assert event["status"] == 200 and event["request_time"] == 0.012  # converted in their own block
    # The field stays a list of strings; the mapping's ignore_malformed drops it, not the line.


def test_a_line_that_is_not_json_is_kept_and_tagged():
    event = process("2024/05/01 12:00:00 [warn] 1#1: an error-log line")
    assert event["tags"] == [render.NOT_JSON_TAG]
    assert event["message"].startswith("2024/05/01")
    assert event["@timestamp"] == datetime(2024, 5, 1, 12, 0, 1, tzinfo=timezone.utc)  # Filebeat's
    assert "host" not in event  # Beats' host object would clash with the keyword mapping
    assert_matches_mapping(event)


def test_the_mirror_models_the_strict_convert():
    # Guard on the interpreter itself: a naive pipeline that converts the raw nginx value
    # fails the way logstash-filter-mutate >= 3.5.8 fails (tag, rest of the block skipped).
    naive = 'filter { json { source => "message" } mutate { convert => { "upstream_response_time" => "float" } } }'
    event = run_filters(LogstashConfig(naive).sections["filter"], beats_event(gateway_line(upstream_response_time="-")))
    assert event["tags"] == ["_mutate_error"] and event["upstream_response_time"] == "-"


def test_every_key_the_gateway_logs_is_declared():
    template = REPO_ROOT / "components" / "gateway" / "templates" / "nginx.conf.j2"
    if not template.exists():
        pytest.skip("the gateway's nginx.conf.j2 is not in this tree")
    text = template.read_text()
    block = re.search(r"log_format\s+gateway_json[^;]*;", text, re.S)
    if block is None:
        pytest.skip("the gateway declares no gateway_json log_format")
    keys = re.findall(r'"([a-z_]+)":', block.group())
    assert keys, "no keys found in log_format gateway_json"
    assert set(keys) <= set(render.GATEWAY_FIELDS), set(keys) - set(render.GATEWAY_FIELDS)
