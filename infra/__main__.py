"""coderz: the whole platform on one Docker host.

Deploys, per stack: the Docker host bootstrap and a private network; PostgreSQL and Redis; the
.NET and Python APIs; the nginx (OpenResty) gateway with its Redis response cache, the only
public entry; monitoring and logging where the stack turns them on.
"""

import pulumi

from infra.config import load_current
from infra.platform import build, relax_garbage_collection

relax_garbage_collection()
for name, value in build(load_current()).items():
    pulumi.export(name, value)
