"""Drive the policy pack the way the engine does, without the engine.

`analyze` hands recorded registrations (their inputs as the protobuf Struct the engine receives,
secret markers included) to pulumi-policy's own analyzer servicer, configured from a
`policy/config/<stack>.json` the way `--policy-pack-config` would, and returns its diagnostics.
"""

from __future__ import annotations

import copy
import json
import sys
from dataclasses import dataclass
from typing import Any, Callable

from google.protobuf import json_format, struct_pb2
from pulumi.runtime.proto import analyzer_pb2 as proto
from pulumi_policy import EnforcementLevel, PolicyCustomTimeouts, PolicyResourceOptions, ResourceValidationArgs
from pulumi_policy.policy import _PolicyAnalyzerServicer

from tests.mocks import REPO_ROOT, Registration

sys.path.insert(0, str(REPO_ROOT / "policy"))
import guardrails  # noqa: E402  (the pack imports it the same way, from its own folder)

LEVELS = {"advisory": proto.ADVISORY, "mandatory": proto.MANDATORY, "disabled": proto.DISABLED}


@dataclass
class Diagnostic:
    policy: str
    message: str
    level: str


def servicer(config: dict[str, Any] | None) -> _PolicyAnalyzerServicer:
    guardrails.keep_secret_markers()
    analyzer = _PolicyAnalyzerServicer(guardrails.PACK_NAME, "0.1.0", guardrails.POLICIES, EnforcementLevel.MANDATORY,
                                       None, None, None, None, None, None, None)
    if config is not None:
        request = proto.ConfigureAnalyzerRequest()
        for name, settings in config.items():
            entry = request.policyConfig[name]
            entry.enforcementLevel = LEVELS[settings["enforcementLevel"]]
            entry.properties.update({k: v for k, v in settings.items() if k != "enforcementLevel"})
        analyzer.Configure(request, None)
    return analyzer


def stack_config(stack: str) -> dict[str, Any]:
    return json.loads((REPO_ROOT / "policy" / "config" / f"{stack}.json").read_text())


def analyze(registrations: list[Registration], config: dict[str, Any] | None) -> list[Diagnostic]:
    analyzer = servicer(config)
    found = []
    for registration in registrations:
        request = proto.AnalyzeRequest(
            type=registration.type, urn=registration.urn, name=registration.name,
            properties=registration.struct,
            options=proto.AnalyzerResourceOptions(protect=registration.protect, parent=registration.parent),
        )
        response = analyzer.Analyze(request, None)
        found += [
            Diagnostic(d.policyName, d.message, proto.EnforcementLevel.Name(d.enforcementLevel).lower())
            for d in response.diagnostics
        ]
    return found


def planted(registration: Registration, change: Callable[[dict[str, Any]], None], *, protect: bool | None = None) -> Registration:
    """A copy of `registration` with its inputs edited by `change` (a function of the JSON form,
    secret markers included)."""
    inputs = json_format.MessageToDict(registration.struct)
    change(inputs)
    struct = struct_pb2.Struct()
    struct.update(inputs)
    clone = copy.copy(registration)
    clone.struct = struct
    if protect is not None:
        clone.protect = protect
    return clone


def args(resource_type: str, props: dict[str, Any], *, name: str = "r", stack: str = "prod",
         protect: bool = False, config: dict[str, Any] | None = None) -> ResourceValidationArgs:
    """The SDK's own argument object for one resource, as a policy receives it."""
    urn = f"urn:pulumi:{stack}::coderz::{resource_type}::{name}"
    options = PolicyResourceOptions(protect, [], None, [], PolicyCustomTimeouts(0, 0, 0), [], None)
    return ResourceValidationArgs(resource_type, props, urn, name, options, None, config)


def violations(policy_name: str, arguments: ResourceValidationArgs) -> list[str]:
    (policy,) = [p for p in guardrails.POLICIES if p.name == policy_name]
    messages: list[str] = []
    policy.validate(arguments, lambda message, urn=None: messages.append(message))
    return messages
