"""The cluster's certificate authorities and the admin identity, made by the program.

k3s uses CA files it finds in `server/tls/` on its first start instead of generating its own
(k3s-io/k3s#1868). Handing it CAs made here means the program knows the cluster's credentials
before the cluster exists: the kubeconfig is built from state, never read back from the host,
and a preview can plan Kubernetes resources against a cluster that is not up yet.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass

import pulumi
import pulumi_tls as tls

from components.yamltext import dump_yaml

# The CAs k3s would otherwise generate, by the file stem it looks for.
CA_NAMES = ("server-ca", "client-ca", "request-header-ca")
TLS_DIR = "/var/lib/rancher/k3s/server/tls"
TEN_YEARS_H = 87_600
ADMIN_USER, ADMIN_GROUP = "coderz-admin", "system:masters"


@dataclass(frozen=True)
class ClusterPki:
    """PEM texts (secret Outputs for keys) of the CAs and of the admin client certificate."""

    ca_certs: dict[str, pulumi.Output[str]]
    ca_keys: dict[str, pulumi.Output[str]]
    admin_cert: pulumi.Output[str]
    admin_key: pulumi.Output[str]

    def tls_files(self) -> dict[str, pulumi.Output[str]]:
        """Path in the k3s server's tls folder -> content (keys secret)."""
        files: dict[str, pulumi.Output[str]] = {}
        for ca in CA_NAMES:
            files[f"{TLS_DIR}/{ca}.crt"] = self.ca_certs[ca]
            files[f"{TLS_DIR}/{ca}.key"] = self.ca_keys[ca]
        return files


def _key(name: str, parent: pulumi.Resource) -> tls.PrivateKey:
    return tls.PrivateKey(name, algorithm="ECDSA", ecdsa_curve="P256", opts=pulumi.ResourceOptions(parent=parent))


def make_pki(name: str, *, parent: pulumi.Resource) -> ClusterPki:
    """Three self-signed CAs (ten years, as k3s' own) and an admin client certificate."""
    ca_certs, ca_keys = {}, {}
    for ca in CA_NAMES:
        key = _key(f"{name}-{ca}-key", parent)
        cert = tls.SelfSignedCert(
            f"{name}-{ca}",
            private_key_pem=key.private_key_pem,
            subject=tls.SelfSignedCertSubjectArgs(common_name=f"k3s-{ca}"),
            is_ca_certificate=True,
            validity_period_hours=TEN_YEARS_H,
            allowed_uses=["cert_signing", "crl_signing", "digital_signature", "key_encipherment"],
            opts=pulumi.ResourceOptions(parent=parent),
        )
        ca_certs[ca] = cert.cert_pem
        ca_keys[ca] = pulumi.Output.secret(key.private_key_pem)

    admin_key = _key(f"{name}-admin-key", parent)
    request = tls.CertRequest(
        f"{name}-admin-request",
        private_key_pem=admin_key.private_key_pem,
        subject=tls.CertRequestSubjectArgs(common_name=ADMIN_USER, organization=ADMIN_GROUP),
        opts=pulumi.ResourceOptions(parent=parent),
    )
    admin = tls.LocallySignedCert(
        f"{name}-admin",
        cert_request_pem=request.cert_request_pem,
        ca_cert_pem=ca_certs["client-ca"],
        ca_private_key_pem=ca_keys["client-ca"],
        validity_period_hours=TEN_YEARS_H // 10,
        early_renewal_hours=24 * 30,
        allowed_uses=["client_auth", "digital_signature", "key_encipherment"],
        opts=pulumi.ResourceOptions(parent=parent),
    )
    return ClusterPki(ca_certs, ca_keys, admin.cert_pem, pulumi.Output.secret(admin_key.private_key_pem))


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def _kubeconfig(server: str, ca_pem: str, user: str, credentials: dict[str, str], *, cluster: str) -> str:
    return dump_yaml({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": cluster, "cluster": {"server": server, "certificate-authority-data": _b64(ca_pem)}}],
        "users": [{"name": user, "user": credentials}],
        "contexts": [{"name": cluster, "context": {"cluster": cluster, "user": user}}],
        "current-context": cluster,
    })


def render_kubeconfig(server: str, ca_pem: str, client_cert_pem: str, client_key_pem: str, *, cluster: str) -> str:
    """A kubeconfig for one cluster and the admin identity (certificate auth)."""
    return _kubeconfig(server, ca_pem, ADMIN_USER, {
        "client-certificate-data": _b64(client_cert_pem), "client-key-data": _b64(client_key_pem)}, cluster=cluster)


def render_token_kubeconfig(server: str, ca_pem: str, token: str, *, user: str, cluster: str) -> str:
    """A kubeconfig for a ServiceAccount's bearer token (the read-only monitor identity)."""
    return _kubeconfig(server, ca_pem, user, {"token": token}, cluster=cluster)


def kubeconfig(pki: ClusterPki, server: pulumi.Input[str], *, cluster: str) -> pulumi.Output[str]:
    """The admin kubeconfig for `server` (where the program reaches the API), a secret."""
    return pulumi.Output.secret(
        pulumi.Output.all(server, pki.ca_certs["server-ca"], pki.admin_cert, pki.admin_key).apply(
            lambda v: render_kubeconfig(v[0], v[1], v[2], v[3], cluster=cluster)
        )
    )


def monitor_kubeconfig(pki: ClusterPki, server: str, token: pulumi.Input[str], *, user: str,
                       cluster: str) -> pulumi.Output[str]:
    """The monitor identity's kubeconfig for `server` (as the stack's containers reach it), a secret."""
    return pulumi.Output.secret(
        pulumi.Output.all(pki.ca_certs["server-ca"], token).apply(
            lambda v: render_token_kubeconfig(server, v[0], v[1], user=user, cluster=cluster)
        )
    )
