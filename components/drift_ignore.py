"""No false alarms in drift checks: the one place that says how daemon-filled fields are handled.

The Docker daemon fills in some container settings itself, and the provider reads them back
after a refresh; if the program leaves such a field unset, every preview shows a change that
nothing on the host made. First choice: set the field explicitly to what the daemon stores
(`PINNED_CONTAINER_ARGS`), so no diff can appear. What cannot be pinned (the stored value
depends on the host, or the field is a read-only output) is listed in `IGNORED_FIELDS`, each
with its reason and a link: inputs go to `ignore_changes` (`CONTAINER_IGNORE_CHANGES`), and the
drift report (`infra/cli/report.py`) shows every listed field apart as "ignored", never as drift.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

CONTAINER = "docker:index/container:Container"

# Sent explicitly, equal to what the daemon stores for them, so a refresh reads back the same.
#  - network_mode: the provider's own default is "bridge", and the daemon stores an explicit
#    value verbatim; left unset, every preview showed `- networkMode: "bridge"`
#    (https://github.com/pulumi/pulumi-docker/issues/1272). The stack network is joined through
#    `networks_advanced`, which detaches the container from the default bridge.
#  - domainname: the daemon stores "" for a hostname without dots (ours are
#    `coderz-<stack>-<service>`); "" in the program is what it reads back.
# Log driver and options are pinned in components/container.py (`LOG_OPTS`), so a host's
# daemon.json defaults cannot drift them (https://github.com/kreuzwerker/terraform-provider-docker/issues/473).
PINNED_CONTAINER_ARGS: dict[str, str] = {"network_mode": "bridge", "domainname": ""}


@dataclass(frozen=True)
class IgnoredField:
    """A property whose reported change says nothing about the host: why, and where it is reported.

    `kind="input"` fields are also given to `ignore_changes`; `kind="output"` fields are
    read-only outputs that only a refresh re-reads."""

    resource_type: str
    field: str
    kind: Literal["input", "output"]
    reason: str
    link: str


IGNORED_FIELDS: tuple[IgnoredField, ...] = (
    IgnoredField(
        CONTAINER,
        "memorySwap",
        "input",
        "with a memory limit and no swap limit the daemon stores twice the memory limit, or -1 on "
        "a kernel without swap accounting: host-dependent, so it cannot be pinned",
        "https://github.com/kreuzwerker/terraform-provider-docker/blob/master/internal/provider/resource_docker_container.go",
    ),
    IgnoredField(
        CONTAINER,
        "networkDatas",
        "output",
        "addresses the daemon hands out again on every restart of the container or the host, and "
        "the order of the networks flips between reads",
        "https://github.com/pulumi/pulumi-docker/issues/1651",
    ),
)

# What `ContainerService` gives to `ignore_changes`.
CONTAINER_IGNORE_CHANGES: list[str] = [f.field for f in IGNORED_FIELDS if f.resource_type == CONTAINER and f.kind == "input"]


def ignored(resource_type: str, path: str) -> IgnoredField | None:
    """The entry that covers a property path (`memorySwap`, `networkDatas[0].ipAddress`), if any."""
    top = path.split(".", 1)[0].split("[", 1)[0]
    for entry in IGNORED_FIELDS:
        if entry.resource_type == resource_type and entry.field == top:
            return entry
    return None
