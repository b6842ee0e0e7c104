"""Passwords the platform owns: generated once, kept in state, only ever handled as secrets."""

from __future__ import annotations

import pulumi
import pulumi_random as random


def generated_password(name: str, *, parent: pulumi.Resource, length: int = 32) -> pulumi.Output[str]:
    """A random alphanumeric password (safe in URLs and shell words), marked secret."""
    password = random.RandomPassword(name, length=length, special=False, opts=pulumi.ResourceOptions(parent=parent))
    return pulumi.Output.secret(password.result)
