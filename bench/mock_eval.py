"""How long the program takes to evaluate under Pulumi mocks, and how that grows with replicas.

Each figure is the median over fresh processes (`RUNS`):
- `bare import`: importing pulumi and the providers, timed inside the process;
- `evaluation`: what the program adds on top in the same process: importing our code and
  building the full prod stack under mocks until every resource is registered;
- the ratio evaluation / bare import (target <= 1.5), and the same with interpreter start-up
  and the import counted in the evaluation (whole process / bare-import process);
- the SDK floor: registering as many bare containers as the stack has resources, under the
  same mocks, which no program of that size can beat;
- the prod stack at 1, 10 and 100 replicas per API: the evaluation time added per replica
  should stay flat for linear growth.

Run from the repository root: venv/bin/python bench/mock_eval.py
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RUNS = 7
PROBE = """
import json, sys, time
started = time.perf_counter()
import pulumi, pulumi_docker, pulumi_command, pulumi_random, pulumi_kubernetes
imported = time.perf_counter()
resources = 0
if sys.argv[1].startswith("floor:"):
    # The SDK's own cost: as many bare containers as the stack has resources, same mocks.
    from infra.platform import relax_garbage_collection
    from tests.mocks import install_mocks

    relax_garbage_collection()
    install_mocks("floor")
    count = int(sys.argv[1].split(":")[1])

    @pulumi.runtime.test
    def floor():
        for i in range(count):
            pulumi_docker.Container(f"c{i}", name=f"c{i}", image="sha256:0", envs=["A=b"], memory=64,
                                    healthcheck=pulumi_docker.ContainerHealthcheckArgs(tests=["CMD", "true"]))
        return pulumi.Output.from_input(count)

    floor()
    resources = count
elif sys.argv[1] != "import-only":
    from infra.platform import relax_garbage_collection
    from tests.mocks import deploy_stack

    relax_garbage_collection()  # as infra/__main__.py does
    replicas = int(sys.argv[1])
    overrides = {"coderz:apis": {"dotnet": {"replicas": replicas}, "python": {"replicas": replicas}}}
    monitor, _ = deploy_stack("prod", **overrides)
    resources = len(monitor.registrations)
done = time.perf_counter()
print(json.dumps({"import": imported - started, "evaluate": done - imported, "resources": resources}))
"""


def probe(argument: str) -> dict[str, float]:
    runs = []
    for _ in range(RUNS):
        start = time.perf_counter()
        out = subprocess.run([sys.executable, "-c", PROBE, argument], cwd=ROOT, capture_output=True, text=True, check=True)
        figures = json.loads(out.stdout)
        figures["process"] = time.perf_counter() - start
        runs.append(figures)
    return {key: statistics.median(r[key] for r in runs) for key in runs[0]}


def main() -> None:
    bare = probe("import-only")
    prod = probe("3")  # prod's own replica count
    print(f"bare import of pulumi + providers     : {bare['import'] * 1000:7.0f} ms  (process {bare['process'] * 1000:.0f} ms)")
    print(f"prod under mocks, our import + build  : {prod['evaluate'] * 1000:7.0f} ms  ({prod['resources']:.0f} resources)")
    print(f"ratio evaluation / bare import        : {prod['evaluate'] / bare['import']:7.2f}  (target <= 1.5)")
    print(f"ratio whole process / bare process    : {prod['process'] / bare['process']:7.2f}")
    floor = probe(f"floor:{prod['resources']:.0f}")
    print(f"SDK floor: {floor['resources']:.0f} bare containers       : {floor['evaluate'] * 1000:7.0f} ms  "
          f"(ours is {prod['evaluate'] / floor['evaluate']:.2f}x the registration cost alone)")
    series = {n: probe(str(n)) for n in (1, 10, 100)}
    for n, figures in series.items():
        print(f"prod at {n:3d} replica(s) per API        : {figures['evaluate'] * 1000:7.0f} ms  ({figures['resources']:.0f} resources)")
    low = (series[10]["evaluate"] - series[1]["evaluate"]) / ((10 - 1) * 2) * 1000
    high = (series[100]["evaluate"] - series[10]["evaluate"]) / ((100 - 10) * 2) * 1000
    print(f"added per replica container           : {low:6.2f} ms (1->10), {high:6.2f} ms (10->100)")
    print(f"growth 10->100 vs 1->10 (linear = 10) : {(series[100]['evaluate'] - series[10]['evaluate']) / (series[10]['evaluate'] - series[1]['evaluate']):7.2f}")


if __name__ == "__main__":
    main()
