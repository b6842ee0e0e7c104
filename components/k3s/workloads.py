"""`K3sWorkloads`: what the stack runs in its cluster, as typed Kubernetes objects.

- the `coderz` namespace and the `coderz-web` Deployment (non-root, read-only root, probes,
  rolling update that never drops below the desired count), its PodDisruptionBudget and a
  NodePort Service the gateway routes to;
- kube-state-metrics with its ServiceAccount, ClusterRole and binding, on a NodePort Prometheus
  scrapes;
- `coderz-monitor`: a read-only ServiceAccount and its token, for Prometheus (API server
  `/metrics`) and the k8s-health flow; the token leaves this component only as a secret.

Every object uses the cluster's one provider; nothing is fetched from a chart at deploy time.
"""

from __future__ import annotations

import base64

import pulumi
import pulumi_kubernetes as k8s
from pydantic import BaseModel, ConfigDict

from components.k3s.settings import K3sConfig

NAMESPACE = "coderz"
WEB = "coderz-web"
KSM = "kube-state-metrics"
MONITOR = "coderz-monitor"
KSM_PORT, KSM_TELEMETRY_PORT = 8080, 8081
meta = k8s.meta.v1.ObjectMetaArgs
core = k8s.core.v1
rbac = k8s.rbac.v1


def _restricted(user: int) -> dict:
    """The pod and container security settings of the `restricted` Pod Security Standard."""
    return {
        "pod": core.PodSecurityContextArgs(run_as_non_root=True, run_as_user=user, run_as_group=user,
                                           seccomp_profile=core.SeccompProfileArgs(type="RuntimeDefault")),
        "container": core.SecurityContextArgs(allow_privilege_escalation=False, read_only_root_filesystem=True,
                                              capabilities=core.CapabilitiesArgs(drop=["ALL"])),
    }


def _resources(memory_mb: int, cpus: float) -> core.ResourceRequirementsArgs:
    limits = {"memory": f"{memory_mb}Mi", "cpu": f"{int(cpus * 1000)}m"}
    requests = {"memory": f"{max(memory_mb // 2, 16)}Mi", "cpu": f"{max(int(cpus * 250), 10)}m"}
    return core.ResourceRequirementsArgs(limits=limits, requests=requests)


def _http_probe(path: str, port: int, *, period_s: int, failures: int) -> core.ProbeArgs:
    return core.ProbeArgs(http_get=core.HTTPGetActionArgs(path=path, port=port), period_seconds=period_s,
                          timeout_seconds=2, failure_threshold=failures)


class K3sWorkloadsArgs(BaseModel):
    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    config: K3sConfig
    provider: k8s.Provider


class K3sWorkloads(pulumi.ComponentResource):
    """Owns the namespace, coderz-web, kube-state-metrics and the monitor identity."""

    monitor_token: pulumi.Output[str]
    web_replicas: pulumi.Output[int]

    def __init__(self, name: str, args: K3sWorkloadsArgs, *, opts: pulumi.ResourceOptions | None = None):
        super().__init__("coderz:kubernetes:K3sWorkloads", name, None, opts)
        self._child = pulumi.ResourceOptions(parent=self, provider=args.provider)
        config = args.config
        namespace = core.Namespace(f"{name}-namespace", metadata=meta(
            name=NAMESPACE, labels={"pod-security.kubernetes.io/enforce": "restricted"}), opts=self._child)
        self._after_namespace = pulumi.ResourceOptions.merge(self._child, pulumi.ResourceOptions(depends_on=[namespace]))
        self._web(name, config)
        self._kube_state_metrics(name, config)
        self.monitor_token = self._monitor(name)
        self.web_replicas = pulumi.Output.from_input(config.web.replicas)
        self.register_outputs({"monitor_token": self.monitor_token, "web_replicas": self.web_replicas})

    def _web(self, name: str, config: K3sConfig) -> None:
        web = config.web
        labels = {"app.kubernetes.io/name": WEB}
        security = _restricted(101)  # nginx-unprivileged's nginx user
        k8s.apps.v1.Deployment(
            f"{name}-web",
            metadata=meta(name=WEB, namespace=NAMESPACE, labels=labels),
            spec=k8s.apps.v1.DeploymentSpecArgs(
                replicas=web.replicas,
                selector=k8s.meta.v1.LabelSelectorArgs(match_labels=labels),
                # A rollout adds a pod before it removes one: never fewer than `replicas` ready.
                strategy=k8s.apps.v1.DeploymentStrategyArgs(
                    type="RollingUpdate",
                    rolling_update=k8s.apps.v1.RollingUpdateDeploymentArgs(max_unavailable=0, max_surge=1)),
                template=core.PodTemplateSpecArgs(
                    metadata=meta(labels=labels),
                    spec=core.PodSpecArgs(
                        automount_service_account_token=False,
                        security_context=security["pod"],
                        containers=[core.ContainerArgs(
                            name="web",
                            image=web.image,
                            ports=[core.ContainerPortArgs(name="http", container_port=web.container_port)],
                            security_context=security["container"],
                            resources=_resources(web.limits.memory_mb, web.limits.cpus),
                            readiness_probe=_http_probe("/", web.container_port, period_s=5, failures=3),
                            liveness_probe=_http_probe("/", web.container_port, period_s=10, failures=6),
                            # nginx writes its pid and temp files under /tmp: the one writable path.
                            volume_mounts=[core.VolumeMountArgs(name="tmp", mount_path="/tmp")],
                        )],
                        volumes=[core.VolumeArgs(name="tmp", empty_dir=core.EmptyDirVolumeSourceArgs(size_limit="64Mi"))],
                    ),
                ),
            ),
            opts=self._after_namespace,
        )
        k8s.policy.v1.PodDisruptionBudget(
            f"{name}-web-pdb",
            metadata=meta(name=WEB, namespace=NAMESPACE, labels=labels),
            spec=k8s.policy.v1.PodDisruptionBudgetSpecArgs(
                max_unavailable=1, selector=k8s.meta.v1.LabelSelectorArgs(match_labels=labels)),
            opts=self._after_namespace,
        )
        core.Service(
            f"{name}-web-service",
            metadata=meta(name=WEB, namespace=NAMESPACE, labels=labels),
            spec=core.ServiceSpecArgs(type="NodePort", selector=labels, ports=[core.ServicePortArgs(
                name="http", port=80, target_port="http", node_port=web.node_port)]),
            opts=self._after_namespace,
        )

    def _kube_state_metrics(self, name: str, config: K3sConfig) -> None:
        labels = {"app.kubernetes.io/name": KSM}
        account = core.ServiceAccount(f"{name}-ksm-account", metadata=meta(name=KSM, namespace=NAMESPACE),
                                      automount_service_account_token=True, opts=self._after_namespace)
        listed = ["configmaps", "secrets", "nodes", "pods", "services", "serviceaccounts", "resourcequotas",
                  "replicationcontrollers", "limitranges", "persistentvolumeclaims", "persistentvolumes",
                  "namespaces", "endpoints"]
        role = rbac.ClusterRole(f"{name}-ksm-role", metadata=meta(name=KSM), rules=[
            rbac.PolicyRuleArgs(api_groups=[""], resources=listed, verbs=["list", "watch"]),
            rbac.PolicyRuleArgs(api_groups=["apps"], resources=["deployments", "daemonsets", "statefulsets", "replicasets"],
                                verbs=["list", "watch"]),
            rbac.PolicyRuleArgs(api_groups=["batch"], resources=["cronjobs", "jobs"], verbs=["list", "watch"]),
            rbac.PolicyRuleArgs(api_groups=["policy"], resources=["poddisruptionbudgets"], verbs=["list", "watch"]),
        ], opts=self._child)
        self._bind(f"{name}-ksm-binding", KSM, depends_on=[account, role])
        security = _restricted(65534)
        k8s.apps.v1.Deployment(
            f"{name}-ksm",
            metadata=meta(name=KSM, namespace=NAMESPACE, labels=labels),
            spec=k8s.apps.v1.DeploymentSpecArgs(
                replicas=1,
                selector=k8s.meta.v1.LabelSelectorArgs(match_labels=labels),
                template=core.PodTemplateSpecArgs(
                    metadata=meta(labels=labels),
                    spec=core.PodSpecArgs(
                        service_account_name=KSM,
                        security_context=security["pod"],
                        containers=[core.ContainerArgs(
                            name=KSM,
                            image=config.kube_state_metrics_image,
                            args=[f"--port={KSM_PORT}", f"--telemetry-port={KSM_TELEMETRY_PORT}"],
                            ports=[core.ContainerPortArgs(name="metrics", container_port=KSM_PORT),
                                   core.ContainerPortArgs(name="telemetry", container_port=KSM_TELEMETRY_PORT)],
                            security_context=security["container"],
                            resources=_resources(128, 0.1),
                            readiness_probe=_http_probe("/", KSM_TELEMETRY_PORT, period_s=10, failures=3),
                            liveness_probe=_http_probe("/livez", KSM_PORT, period_s=10, failures=6),
                        )],
                    ),
                ),
            ),
            opts=self._after_namespace,
        )
        core.Service(
            f"{name}-ksm-service",
            metadata=meta(name=KSM, namespace=NAMESPACE, labels=labels),
            spec=core.ServiceSpecArgs(type="NodePort", selector=labels, ports=[core.ServicePortArgs(
                name="metrics", port=KSM_PORT, target_port="metrics", node_port=config.kube_state_metrics_node_port)]),
            opts=self._after_namespace,
        )

    def _bind(self, resource_name: str, account: str, *, depends_on: list[pulumi.Resource]) -> None:
        """Grant the ClusterRole named `account` to the ServiceAccount of the same name."""
        rbac.ClusterRoleBinding(
            resource_name, metadata=meta(name=account),
            role_ref=rbac.RoleRefArgs(api_group="rbac.authorization.k8s.io", kind="ClusterRole", name=account),
            subjects=[rbac.SubjectArgs(kind="ServiceAccount", name=account, namespace=NAMESPACE)],
            opts=pulumi.ResourceOptions.merge(self._child, pulumi.ResourceOptions(depends_on=depends_on)),
        )

    def _monitor(self, name: str) -> pulumi.Output[str]:
        """A ServiceAccount that can read the API server's metrics, nodes and deployments, and
        a long-lived token for it (a service-account-token Secret the control plane fills)."""
        account = core.ServiceAccount(f"{name}-monitor-account", metadata=meta(name=MONITOR, namespace=NAMESPACE),
                                      automount_service_account_token=False, opts=self._after_namespace)
        role = rbac.ClusterRole(f"{name}-monitor-role", metadata=meta(name=MONITOR), rules=[
            rbac.PolicyRuleArgs(non_resource_urls=["/metrics", "/readyz", "/livez"], verbs=["get"]),
            rbac.PolicyRuleArgs(api_groups=[""], resources=["nodes", "pods"], verbs=["get", "list"]),
            rbac.PolicyRuleArgs(api_groups=["apps"], resources=["deployments"], verbs=["get", "list"]),
        ], opts=self._child)
        self._bind(f"{name}-monitor-binding", MONITOR, depends_on=[account, role])
        token_secret = core.Secret(
            f"{name}-monitor-token",
            metadata=meta(name=f"{MONITOR}-token", namespace=NAMESPACE,
                          annotations={"kubernetes.io/service-account.name": MONITOR}),
            type="kubernetes.io/service-account-token",
            opts=pulumi.ResourceOptions.merge(self._after_namespace, pulumi.ResourceOptions(depends_on=[account])),
        )
        # The token is written by the control plane after creation: read the live Secret back.
        live = core.Secret.get(f"{name}-monitor-token-live", pulumi.Output.concat(NAMESPACE, "/", token_secret.metadata.name),
                               opts=pulumi.ResourceOptions(parent=self, provider=self._child.provider, depends_on=[token_secret]))
        return pulumi.Output.secret(live.data.apply(lambda data: base64.b64decode((data or {}).get("token", "")).decode()))
