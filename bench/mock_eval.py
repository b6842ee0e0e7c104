"""How long the program takes to evaluate under Pulumi mocks, and how that grows with replicas.

Prints, each figure the median of fresh processes:
- the bare import of pulumi and the providers, and the full prod stack evaluated under mocks
  (import included); their ratio (target <= 1.5);
- the prod stack at 10 and at 100 replicas per API; the added cost per replica should stay
  flat (linear growth): the ratio of the increments (100 vs 10 over 10 vs 1) should be near 10.

Run from the repository root: venv/bin/python bench/mock_eval.py
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RUNS = 5
IMPORT = "import pulumi, pulumi_docker, pulumi_command, pulumi_random, pulumi_kubernetes"
EVALUATE = """
import json, sys
from tests.mocks import deploy_stack
replicas = int(sys.argv[1])
overrides = {} if replicas == 0 else {"coderz:apis": {"dotnet": {"replicas": replicas}, "python": {"replicas": replicas}}}
monitor, _ = deploy_stack("prod", **overrides)
print(len(monitor.registrations))
"""


def timed(code: str, *args: str) -> tuple[float, str]:
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", code, *args], cwd=ROOT, capture_output=True, text=True, check=True)
    return time.perf_counter() - start, done.stdout.strip()


def median(code: str, *args: str) -> tuple[float, str]:
    samples = [timed(code, *args) for _ in range(RUNS)]
    return statistics.median(s for s, _ in samples), samples[-1][1]


def main() -> None:
    bare, _ = median(IMPORT)
    prod, resources = median(EVALUATE, "0")
    print(f"bare import of pulumi + providers : {bare * 1000:8.0f} ms")
    print(f"prod stack under mocks (w/ import): {prod * 1000:8.0f} ms  ({resources} resources)")
    print(f"ratio                             : {prod / bare:8.2f}  (target <= 1.5)")
    one, r1 = median(EVALUATE, "1")
    ten, r10 = median(EVALUATE, "10")
    hundred, r100 = median(EVALUATE, "100")
    print(f"prod at   1 replica per API       : {one * 1000:8.0f} ms  ({r1} resources)")
    print(f"prod at  10 replicas per API      : {ten * 1000:8.0f} ms  ({r10} resources)")
    print(f"prod at 100 replicas per API      : {hundred * 1000:8.0f} ms  ({r100} resources)")
    per_replica_10 = (ten - one) / 18 * 1000
    per_replica_100 = (hundred - ten) / 180 * 1000
    print(f"cost per added replica            : {per_replica_10:6.2f} ms (1->10), {per_replica_100:6.2f} ms (10->100)")
    print(f"growth ratio (100-10)/(10-1)      : {(hundred - ten) / max(ten - one, 1e-9):8.2f}  (linear = 10)")


if __name__ == "__main__":
    main()
