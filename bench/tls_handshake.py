"""Full TLS handshakes per second: the ACME certificate read by Lua against fixed files.

The gateway's rendered config on Debian's nginx + Lua, one worker, on 127.0.0.1, is run twice
with the same ECDSA P-256 certificate:

    files   `ssl_certificate` / `ssl_certificate_key` (a certificate set by hand)
    acme    `ssl_certificate_by_lua` from the shared volume's PEM (gateway_tls.lua)

`openssl s_time -new` makes a new, full handshake per connection for ROUND_S seconds, ROUNDS
times per mode, alternating. Target: acme at least 0.8x files (the Lua handler sets parsed,
cached objects; it reads the file at most once a minute).

Run from the repository root:  venv/bin/python bench/tls_handshake.py
"""

from __future__ import annotations

import re
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.servers import free_port, scratch_dir, wait_for_port  # noqa: E402
from tests.test_gateway_nginx import gateway, self_signed  # noqa: E402

ROUNDS = 5
ROUND_S = 3
TARGET_RATIO = 0.8


def handshakes_per_s(port: int) -> float:
    out = subprocess.run(["openssl", "s_time", "-connect", f"127.0.0.1:{port}", "-new", "-time", str(ROUND_S)],
                         capture_output=True, text=True, check=True).stdout
    connections, seconds = re.search(r"(\d+) connections in (\d+) real seconds", out).groups()
    return int(connections) / int(seconds)


def main() -> None:
    folder = scratch_dir("bench-tls-")
    try:
        cert, key = self_signed(folder)
        pem = folder / "live.pem"
        pem.write_text(cert.read_text() + key.read_text())
        pem.chmod(0o644)
        common = dict(redis_port=free_port(), resolver="127.0.0.1", worker_processes=1, error_log_level="warn")
        modes = {
            "files": dict(tls_cert_path=str(cert), tls_key_path=str(key)),
            "acme": dict(tls_pem_path=str(pem), acme_webroot=str(folder)),
        }
        figures: dict[str, list[float]] = {mode: [] for mode in modes}
        with gateway((), **common, **modes["files"]) as files, gateway((), **common, **modes["acme"]) as acme:
            ports = {"files": files.args.https_port, "acme": acme.args.https_port}
            for port in ports.values():
                wait_for_port(port)
                handshakes_per_s(port)  # warm up: the Lua handler loads the file on its first handshake
            for _ in range(ROUNDS):
                for mode, port in ports.items():
                    figures[mode].append(handshakes_per_s(port))
        for mode, values in figures.items():
            print(f"{mode:6} handshakes/s  min {min(values):7.0f}  median {statistics.median(values):7.0f}"
                  f"  max {max(values):7.0f}")
        ratio = statistics.median(figures["acme"]) / statistics.median(figures["files"])
        print(f"acme / files (medians): {ratio:.2f}  (target >= {TARGET_RATIO})")
    finally:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
