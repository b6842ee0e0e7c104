"""`Acme`: the gateway's certificate from an ACME CA (Let's Encrypt by default).

A sidecar container runs lego (the same release as Debian's `lego` package, which the tests
drive against Pebble) in a loop: it proves the domain by HTTP-01, writing tokens into a webroot
volume that the gateway serves at `/.well-known/acme-challenge/` on its HTTP port, keeps the
account key and certificates on a store volume (retained where the stack keeps data), renews
30 days before expiry, and publishes chain + key as ONE file replaced by a rename. The gateway
mounts both volumes read-only and reads that file at handshake time (gateway_tls.lua), so
neither a first issuance nor a renewal needs a reload, a signal or a shared PID namespace.
"""

from __future__ import annotations

import shlex

import pulumi
import pulumi_docker as docker
from pydantic import BaseModel, ConfigDict, Field

from components.container import ConfigFile, ContainerService, ContainerServiceArgs, Placement, VolumeMount, retained
from components.spec import Frozen, HealthCheck, Limits, ServiceSpec

CHECK_INTERVAL_S = 43_200  # twice a day, as Let's Encrypt asks of its clients
# Pinned to Debian bookworm's lego (4.9.1): the release the Pebble test runs with the same script.
LEGO_IMAGE = "goacme/lego:v4.9.1"
LETS_ENCRYPT = "https://acme-v02.api.letsencrypt.org/directory"
LETS_ENCRYPT_STAGING = "https://acme-staging-v02.api.letsencrypt.org/directory"

# Inside the sidecar.
SIDECAR_STORE = "/acme"
SIDECAR_WEBROOT = "/acme-webroot"
SCRIPT_PATH = "/usr/local/bin/acme-loop.sh"
# Inside the gateway (both read-only).
GATEWAY_STORE = "/etc/gateway/acme"
GATEWAY_WEBROOT = "/var/lib/gateway/acme-webroot"
LIVE_PEM = "live/gateway.pem"
# The user nginx's workers run as in the openresty image (nobody); the published file is
# readable by this group only, the account key stays root's.
WORKER_GID = 65534

_EMAIL = r"^[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)+$"
# A lowercase DNS name of two labels or more, the last one alphabetic (no IP, no wildcard).
DNS_NAME = r"^([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]([a-z0-9-]{0,61}[a-z0-9])?$"


class AcmeConfig(Frozen):
    """`gateway.acme`: the account's contact and the CA's directory (Let's Encrypt production;
    staging is `https://acme-staging-v02.api.letsencrypt.org/directory`)."""

    email: str = Field(pattern=_EMAIL, max_length=254)
    directory_url: str = Field(default=LETS_ENCRYPT, pattern=r"^https://[A-Za-z0-9.-]+(:\d{1,5})?(/[A-Za-z0-9._~/-]*)?$")


class AcmeRender(Frozen):
    """Everything the sidecar's loop depends on. Defaults are the container's; the Pebble test
    overrides the paths, the lego binary and the schedule, never the lego arguments."""

    domain: str = Field(pattern=DNS_NAME, max_length=253)
    email: str = Field(pattern=_EMAIL)
    directory_url: str = Field(pattern=r"^https://\S+$")
    # Where the gateway serves the webroot: the loop checks it before asking the CA.
    probe_url: str = Field(pattern=r"^http://\S+$")
    store: str = SIDECAR_STORE
    webroot: str = SIDECAR_WEBROOT
    lego: str = "/lego"
    key_type: str = "ec256"
    renew_days: int = Field(default=30, ge=1, le=36_500)
    check_interval_s: int = Field(default=CHECK_INTERVAL_S, ge=1)
    retry_s: int = Field(default=300, ge=1)
    reader_gid: int = Field(default=WORKER_GID, ge=0)

    @property
    def live_pem(self) -> str:
        return f"{self.store}/{LIVE_PEM}"


def render_acme_script(r: AcmeRender) -> str:
    """The sidecar's loop (POSIX sh: busybox in the image, dash in the tests)."""
    q = shlex.quote
    lego = " ".join(q(part) for part in (
        r.lego, "--accept-tos", "--email", r.email, "--server", r.directory_url, "--domains", r.domain,
        "--key-type", r.key_type, "--path", f"{r.store}/lego", "--http", "--http.webroot", r.webroot,
    ))
    return f"""#!/bin/sh
# Rendered by components/gateway/acme.py: obtain, renew and publish the gateway's certificate.
set -u
crt={q(f"{r.store}/lego/certificates/{r.domain}.crt")}
key={q(f"{r.store}/lego/certificates/{r.domain}.key")}
live={q(r.live_pem)}
challenges={q(f"{r.webroot}/.well-known/acme-challenge")}
mkdir -p "$(dirname "$live")" {q(f"{r.store}/status")} "$challenges"

# Chain and key in one file, replaced by a rename: the gateway never pairs a new chain with an
# old key. Readable by the gateway's workers' group only.
publish() {{
  [ -s "$crt" ] && [ -s "$key" ] || return 1
  tmp="$live.tmp"
  (umask 077 && cat "$crt" "$key" > "$tmp") || return 1
  if cmp -s "$tmp" "$live"; then rm -f "$tmp"; return 0; fi
  chgrp {r.reader_gid} "$tmp" && chmod 0640 "$tmp" && mv -f "$tmp" "$live" && echo "acme: published a new certificate"
}}

# Before asking the CA (whose failed validations are rate limited): does the gateway serve
# what this container writes into the webroot?
gateway_serves_webroot() {{
  probe="probe-$$"
  echo "$probe" > "$challenges/$probe"
  answer=$(wget -q -O - {q(r.probe_url)}"/$probe" 2>/dev/null)
  rm -f "$challenges/$probe"
  [ "$answer" = "$probe" ]
}}

delay={r.retry_s}
while :; do
  ok=0
  if ! gateway_serves_webroot; then
    echo "acme: the gateway does not serve the challenge webroot yet" >&2
  elif [ -s "$crt" ]; then
    {lego} renew --days {r.renew_days} --no-random-sleep && ok=1
  else
    {lego} run && ok=1
  fi
  if [ "$ok" = 1 ] && publish; then
    touch {q(f"{r.store}/status/last-success")}
    delay={r.retry_s}
    sleep {r.check_interval_s}
  else
    echo "acme: no certificate this time; next try in ${{delay}}s" >&2
    sleep "$delay"
    delay=$((delay * 2 > {r.check_interval_s} ? {r.check_interval_s} : delay * 2))
  fi
done
"""


def acme_spec(gateway: ServiceSpec) -> ServiceSpec:
    """The sidecar's declaration, named after its gateway. Healthy while renewals succeed."""
    stale = (2 * CHECK_INTERVAL_S) // 60 + 60  # minutes: two missed checks in a row, and an hour
    return ServiceSpec(
        name=f"{gateway.name}-acme",
        image=LEGO_IMAGE,
        # lego's own HTTP solver port; unused and unpublished: the gateway serves the webroot.
        port=80,
        tier="edge",
        description="ACME client (lego): the gateway's certificate, obtained and renewed by HTTP-01",
        health=HealthCheck(
            test=("CMD-SHELL", f"find {SIDECAR_STORE}/status/last-success -mmin -{stale} | grep -q ."),
            interval_s=30, retries=3, start_period_s=180,
        ),
        limits=Limits(memory_mb=64, cpus=0.25),
        stateful=True,  # two clients would race for one account and certificate store
    )


class AcmeArgs(BaseModel):
    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    config: AcmeConfig
    domain: str
    gateway: ServiceSpec
    placement: Placement
    keep_data: bool


class Acme(pulumi.ComponentResource):
    """Owns the ACME sidecar of a gateway: the lego container, its loop script, the challenge
    webroot volume and the certificate store volume (account key, certificates; retained and
    protected where the stack keeps data). `gateway_mounts` are the gateway's read-only views."""

    certificate_volume: pulumi.Output[str]
    webroot_volume: pulumi.Output[str]

    def __init__(self, name: str, args: AcmeArgs, *, opts: pulumi.ResourceOptions | None = None):
        super().__init__("coderz:edge:Acme", name, None, opts)
        provider = args.placement.provider
        prefix = args.placement.prefix
        spec = acme_spec(args.gateway)
        webroot = docker.Volume(f"{name}-webroot", name=f"{prefix}-{spec.name}-webroot",
                                opts=pulumi.ResourceOptions(parent=self, provider=provider))
        store = docker.Volume(f"{name}-data", name=f"{prefix}-{spec.name}-data",
                              opts=retained(args.keep_data, self, provider))
        render = AcmeRender(
            domain=args.domain,
            email=args.config.email,
            directory_url=args.config.directory_url,
            probe_url=f"http://{args.gateway.name}:{args.gateway.port}/.well-known/acme-challenge",
        )
        self.service = ContainerService(
            name,
            ContainerServiceArgs(
                spec=spec,
                placement=args.placement,
                files=[ConfigFile(path=SCRIPT_PATH, content=render_acme_script(render), executable=True)],
                volumes=[
                    VolumeMount(container_path=SIDECAR_STORE, volume_name=store.name),
                    VolumeMount(container_path=SIDECAR_WEBROOT, volume_name=webroot.name),
                ],
                entrypoint=["/bin/sh", SCRIPT_PATH],
            ),
            opts=pulumi.ResourceOptions(parent=self),
        )
        self.gateway_mounts = [
            VolumeMount(container_path=GATEWAY_STORE, volume_name=store.name, read_only=True),
            VolumeMount(container_path=GATEWAY_WEBROOT, volume_name=webroot.name, read_only=True),
        ]
        self.certificate_volume = store.name
        self.webroot_volume = webroot.name
        self.register_outputs({"certificate_volume": self.certificate_volume, "webroot_volume": self.webroot_volume})
