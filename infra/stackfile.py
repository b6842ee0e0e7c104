"""`Pulumi.<stack>.yaml` checked as a file, for what the engine never tells the program: a
syntax error, a key written twice (YAML keeps the last one silently), a key outside `config:`
(Pulumi ignores it), a secret pasted in plain text instead of `pulumi config set --secret`.

Errors name the file and the line: `Pulumi.qa.yaml:12: coderz:target.host: duplicate key ...`.
The top-level keys a stack file may have are those of Pulumi's own `ProjectStack`
(pulumi/pulumi sdk/go/common/workspace/project.go).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from components.yamltext import load_yaml
from infra.config import PROJECT, SECRET_KEYS, ConfigError

STACK_FILE_KEYS = ("config", "secretsprovider", "encryptedkey", "encryptionsalt", "environment")
PRIVATE_KEY = re.compile(r"-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----")
_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def _line(node: yaml.Node) -> int:
    return node.start_mark.line + 1


def _key_name(path: tuple[str, ...]) -> str:
    """`coderz:target.host` under `config:`, the bare key above it."""
    if path[:1] == ("config",) and len(path) > 1:
        return ".".join(path[1:]).replace(".[", "[")
    return ".".join(path)


def _walk(name: str, node: yaml.Node, path: tuple[str, ...]) -> None:
    """Duplicate keys, at any depth, and private keys or operator secrets in plain text."""
    if isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            _walk(name, item, (*path, f"[{index}]"))
        return
    if isinstance(node, yaml.ScalarNode):
        if PRIVATE_KEY.search(str(node.value)) and path[-1:] != ("secure",):
            raise ConfigError(f"{name}:{_line(node)}: {_key_name(path)}: a private key in plain text: delete it and "
                              "set it with `pulumi config set --secret`")
        return
    if not isinstance(node, yaml.MappingNode):
        return
    seen: dict[str, int] = {}
    for key_node, value_node in node.value:
        key = str(key_node.value)
        here = (*path, key)
        if key in seen:
            raise ConfigError(f"{name}:{_line(key_node)}: {_key_name(here)}: duplicate key (first at line {seen[key]}; "
                              "YAML would keep this one silently)")
        seen[key] = _line(key_node)
        if path == ("config",):
            _check_secret(name, key, key_node, value_node)
        _walk(name, value_node, here)


def _check_secret(name: str, key: str, key_node: yaml.Node, value: yaml.Node) -> None:
    namespace, _, short = key.partition(":")
    if namespace != PROJECT or short not in SECRET_KEYS:
        return
    secure = value.value if isinstance(value, yaml.MappingNode) and len(value.value) == 1 else []
    ciphertext = secure[0][1].value if secure and secure[0][0].value == "secure" else None
    if not isinstance(ciphertext, str) or not ciphertext.startswith("v1:") or any(c.isspace() for c in ciphertext):
        raise ConfigError(f"{name}:{_line(key_node)}: {key}: a secret in plain text: delete the line and run "
                          f"`pulumi config set --secret {short}`, which writes it encrypted (secure: v1:...)")


def check_stack_file(path: Path) -> dict[str, Any]:
    """Check a stack file; returns its document. Raises ConfigError naming file, line and key."""
    name = path.name
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{name}: not UTF-8 text (byte {exc.start})") from None
    try:
        root = yaml.compose(text, Loader=_Loader)
    except yaml.YAMLError as exc:
        raise _invalid(name, exc) from None
    if root is None:
        return {}
    if not isinstance(root, yaml.MappingNode):
        raise ConfigError(f"{name}:{_line(root)}: a stack file is a mapping of {', '.join(STACK_FILE_KEYS)}")
    for key_node, value_node in root.value:
        if key_node.value not in STACK_FILE_KEYS:
            raise ConfigError(f"{name}:{_line(key_node)}: {key_node.value}: not a stack file key (one of "
                              f"{', '.join(STACK_FILE_KEYS)}); settings go under config: as {PROJECT}:<key>")
        if key_node.value == "config" and not isinstance(value_node, yaml.MappingNode) and value_node.tag != "tag:yaml.org,2002:null":
            raise ConfigError(f"{name}:{_line(value_node)}: config: must be a mapping of {PROJECT}:<key>: value")
    _walk(name, root, ())
    try:  # composing does not construct: an unknown tag (`!x`) fails only here
        return load_yaml(text) or {}
    except yaml.YAMLError as exc:
        raise _invalid(name, exc) from None


def _invalid(name: str, exc: yaml.YAMLError) -> ConfigError:
    """A YAML error as one line naming the file, and the line and column where YAML says."""
    if not isinstance(exc, yaml.MarkedYAMLError):
        return ConfigError(f"{name}: not valid YAML: {exc}")
    mark, context = exc.problem_mark or exc.context_mark, exc.context_mark
    where = f"{name}:{mark.line + 1}:{mark.column + 1}" if mark else name
    opened = f" ({exc.context} at line {context.line + 1})" if context and mark and context.line != mark.line else ""
    return ConfigError(f"{where}: not valid YAML: {exc.problem or exc.context}{opened}")
