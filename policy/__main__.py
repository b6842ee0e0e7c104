"""The coderz guardrails policy pack; the policies live in guardrails.py beside this file."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from pulumi_policy import EnforcementLevel, PolicyPack  # noqa: E402

from guardrails import PACK_NAME, POLICIES, keep_secret_markers  # noqa: E402

keep_secret_markers()
# Mandatory unless the stack's config file (policy/config/<stack>.json) says otherwise: a
# forgotten --policy-pack-config can only make the pack stricter, never weaker.
PolicyPack(name=PACK_NAME, policies=POLICIES, enforcement_level=EnforcementLevel.MANDATORY)
