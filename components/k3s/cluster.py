"""`K3sCluster`: the stack's Kubernetes API server and the provider that reaches it.

On the local engine k3s runs as a pinned `rancher/k3s` container on the stack's network (its
data on a volume; privileged, as k3s runs containers itself). On an SSH target it is installed
on the host at the pinned version by an idempotent `remote.Command`, and the program reaches
its API through an SSH tunnel. Either way the CAs come from `pki.make_pki`, so the kubeconfig
is known up front and no port is opened in the firewall.
"""

from __future__ import annotations

import base64
import hashlib
from pathlib import Path

import pulumi
import pulumi_command as command
import pulumi_docker as docker
import pulumi_kubernetes as k8s
from jinja2 import Environment, FileSystemLoader, StrictUndefined
from pydantic import BaseModel, ConfigDict

from components.container import ConfigFile, ContainerService, ContainerServiceArgs, Placement, VolumeMount, retained
from components.host import HostShell, TargetConfig, ssh_options
from components.k3s import pki
from components.k3s.settings import K3sConfig
from components.secrets import generated_password
from components.spec import ServiceSpec

API_PORT = 6443
DATA_DIR = "/var/lib/rancher/k3s"
TEMPLATES = Environment(loader=FileSystemLoader(Path(__file__).parent / "templates"), undefined=StrictUndefined,
                        keep_trailing_newline=True)


def server_args(tls_sans: tuple[str, ...]) -> list[str]:
    """k3s server flags: no bundled ingress or load balancer (the gateway is the only entry),
    the names the API is reached by in its certificate, a kubeconfig readable by root only."""
    return ["--disable=traefik", "--disable=servicelb", "--write-kubeconfig-mode=600",
            *[f"--tls-san={name}" for name in tls_sans]]


def install_script(config: K3sConfig, tls_sans: tuple[str, ...]) -> str:
    return TEMPLATES.get_template("install-k3s.sh.j2").render(
        version=config.version, server_args=" ".join(server_args(tls_sans)))


def tls_bundle(files: dict[str, str]) -> str:
    """The CA files as the install script reads them: '<file> <base64>' lines."""
    return "".join(f"{Path(path).name} {base64.b64encode(text.encode()).decode()}\n" for path, text in sorted(files.items()))


def tunnel_commands(target: TargetConfig, key_path: str, local_port: int) -> tuple[str, str]:
    """Open (idempotently) and close an SSH forward of 127.0.0.1:local_port to the host's API."""
    forward = f"127.0.0.1:{local_port}:127.0.0.1:{API_PORT}"
    # the provider's options but its shared connection: a forward outlives any master
    options = ssh_options(key_path)
    kept = [part for flag, value in zip(options[::2], options[1::2]) if not value.startswith("Control")
            for part in (flag, value)]
    ssh = " ".join(["ssh", *kept])
    opts = f"-o ControlPath=none -o ExitOnForwardFailure=yes -p {target.port}"
    create = (f"pgrep -f -- '-L {forward}' >/dev/null || "
              f"{ssh} {opts} -f -N -L {forward} {target.user}@{target.host}")
    delete = f"pkill -f -- '-L {forward}' || true"
    return create, delete


class K3sClusterArgs(BaseModel):
    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    config: K3sConfig
    spec: ServiceSpec
    placement: Placement
    target: TargetConfig
    shell: HostShell
    keep_data: bool = False
    # Where the program reaches the API on its own machine (published or tunnelled loopback port).
    local_port: int
    ssh_key_path: str | None = None


class K3sCluster(pulumi.ComponentResource):
    """Owns the k3s server (container or host install), its PKI and the Kubernetes provider."""

    kubeconfig: pulumi.Output[str]
    api_server: pulumi.Output[str]
    ca_certificate: pulumi.Output[str]
    provider: k8s.Provider

    def __init__(self, name: str, args: K3sClusterArgs, *, opts: pulumi.ResourceOptions | None = None):
        super().__init__("coderz:kubernetes:K3sCluster", name, None, opts)
        config, spec = args.config, args.spec
        child = pulumi.ResourceOptions(parent=self)
        self.pki = pki.make_pki(f"{name}-pki", parent=self)
        tls_files = self.pki.tls_files()

        if args.target.kind == "local":
            sans = (spec.name, "127.0.0.1")
            volume = docker.Volume(
                f"{name}-data", name=f"{args.placement.prefix}-{spec.name}-data",
                opts=retained(args.keep_data, self, args.placement.provider))
            server = ContainerService(
                name,
                ContainerServiceArgs(
                    spec=spec,
                    placement=args.placement,
                    command=["server", *server_args(sans)],
                    envs=[pulumi.Output.concat("K3S_TOKEN=", generated_password(f"{name}-token", parent=self))],
                    files=[ConfigFile(path=path, content=pulumi.Output.secret(text) if path.endswith(".key") else text)
                           for path, text in tls_files.items()],
                    volumes=[VolumeMount(container_path=DATA_DIR, volume_name=volume.name)],
                    privileged=True,
                    tmpfs={"/run": "", "/var/run": ""},
                ),
                opts=child,
            )
            ready: list[pulumi.Resource] = [server]
            in_network = f"{spec.name}:{API_PORT}"
        else:
            assert args.ssh_key_path is not None and args.shell.connection is not None
            sans = (config.host_address, "127.0.0.1")
            script = install_script(config, sans)
            bundle = pulumi.Output.secret(pulumi.Output.all(**tls_files).apply(tls_bundle))
            install = command.remote.Command(
                f"{name}-install",
                connection=args.shell.connection,
                create=script,
                stdin=bundle,
                # Re-run when the script (version, flags) or the CAs change, never otherwise.
                triggers=[hashlib.sha256(script.encode()).hexdigest(),
                          bundle.apply(lambda text: hashlib.sha256(text.encode()).hexdigest())],
                opts=child,
            )
            create, delete = tunnel_commands(args.target, args.ssh_key_path, args.local_port)
            tunnel = command.local.Command(f"{name}-tunnel", create=create, delete=delete,
                                           triggers=[create], opts=pulumi.ResourceOptions(parent=self, depends_on=[install]))
            ready = [install, tunnel]
            in_network = f"{config.host_address}:{API_PORT}"

        self.api_server = pulumi.Output.from_input(in_network)
        self.ca_certificate = self.pki.ca_certs["server-ca"]
        self.kubeconfig = pki.kubeconfig(self.pki, f"https://127.0.0.1:{args.local_port}", cluster=args.placement.prefix)
        self.provider = k8s.Provider(
            f"{name}-kubernetes",
            kubeconfig=self.kubeconfig,
            opts=pulumi.ResourceOptions(parent=self, depends_on=ready),
        )
        self.register_outputs({"api_server": self.api_server, "kubeconfig": self.kubeconfig,
                               "ca_certificate": self.ca_certificate})
