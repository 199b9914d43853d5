"""The Kubernetes calls the operator makes, and nothing else (the edge of the shell).

Each call maps to one RBAC rule of the chart's Role (helm/renderfarm/templates/operator-rbac.yaml):

- deployments/scale: get, patch   (read and set replicas; never the Deployment itself)
- pods: list, patch               (Unschedulable detection; pod-deletion-cost before scale-in)
- workerpools/status: patch       (workerpools get/list/watch is kopf's watch)
- events: create
- leases: get, create, update     (leader election)
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from kubernetes import client, config
from kubernetes.client.rest import ApiException

from renderfarm.operator.models import API_VERSION, GROUP, KIND, PLURAL, VERSION
from renderfarm.operator.pods import DELETION_COST, PodInfo, pod_info

log = logging.getLogger("renderfarm.operator")
MERGE_PATCH = "application/merge-patch+json"


def load_config() -> client.ApiClient:
    """In a pod: the ServiceAccount; elsewhere: KUBECONFIG / ~/.kube/config."""
    configuration = client.Configuration()
    if os.environ.get("KUBERNETES_SERVICE_HOST") and not os.environ.get("KUBECONFIG"):
        config.load_incluster_config(client_configuration=configuration)
    else:
        config.load_kube_config(client_configuration=configuration)
    return client.ApiClient(configuration)


def current_namespace() -> str | None:
    """The namespace of this pod, or the kubeconfig context's namespace."""
    path = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"
    if os.environ.get("KUBERNETES_SERVICE_HOST") and os.path.exists(path):
        with open(path) as fh:
            return fh.read().strip()
    try:
        _, active = config.list_kube_config_contexts()
        return (active or {}).get("context", {}).get("namespace")
    except Exception:  # noqa: BLE001 - no kubeconfig: the caller decides
        return None


@dataclass(frozen=True)
class ScaleInfo:
    replicas: int  # what the Deployment is set to
    status_replicas: int  # pods it has
    selector: str  # label selector, "k=v,k2=v2"


class KubeApi:
    def __init__(self, api_client: client.ApiClient, *, timeout_s: float = 5.0):
        self.api_client = api_client
        self.apps = client.AppsV1Api(api_client)
        self.core = client.CoreV1Api(api_client)
        self.custom = client.CustomObjectsApi(api_client)
        self.coordination = client.CoordinationV1Api(api_client)
        self.timeout_s = timeout_s
        self.calls = 0  # API calls made (for the bench)

    # -- the target Deployment -----------------------------------------------------

    def get_scale(self, namespace: str, deployment: str) -> ScaleInfo | None:
        self.calls += 1
        try:
            scale = self.apps.read_namespaced_deployment_scale(deployment, namespace, _request_timeout=self.timeout_s)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise
        return ScaleInfo(replicas=int(scale.spec.replicas or 0), status_replicas=int(scale.status.replicas or 0),
                         selector=scale.status.selector or "")

    def patch_scale(self, namespace: str, deployment: str, replicas: int) -> None:
        self.calls += 1
        self.apps.patch_namespaced_deployment_scale(
            deployment, namespace, {"spec": {"replicas": int(replicas)}},
            _content_type=MERGE_PATCH, _request_timeout=self.timeout_s)

    # -- pods ------------------------------------------------------------------------

    def list_pods(self, namespace: str, selector: str) -> list[PodInfo]:
        self.calls += 1
        pods = self.core.list_namespaced_pod(namespace, label_selector=selector, _request_timeout=self.timeout_s)
        return [pod_info(pod) for pod in pods.items]

    def set_deletion_cost(self, namespace: str, pod: str, cost: str) -> None:
        self.calls += 1
        try:
            self.core.patch_namespaced_pod(pod, namespace, {"metadata": {"annotations": {DELETION_COST: cost}}},
                                           _content_type=MERGE_PATCH, _request_timeout=self.timeout_s)
        except ApiException as exc:
            if exc.status != 404:  # gone already: nothing to protect
                raise

    # -- the WorkerPool ------------------------------------------------------------------

    def patch_pool_status(self, namespace: str, name: str, patch: dict[str, Any]) -> None:
        self.calls += 1
        self.custom.patch_namespaced_custom_object_status(
            GROUP, VERSION, namespace, PLURAL, name, patch, _content_type=MERGE_PATCH,
            _request_timeout=self.timeout_s)

    def create_event(self, *, namespace: str, name: str, uid: str, reason: str, message: str,
                     warning: bool = False, component: str = "renderfarm-operator") -> None:
        self.calls += 1
        now = datetime.now(timezone.utc)
        event = client.CoreV1Event(
            metadata=client.V1ObjectMeta(generate_name=f"{name}.", namespace=namespace),
            involved_object=client.V1ObjectReference(api_version=API_VERSION, kind=KIND, name=name,
                                                     namespace=namespace, uid=uid or None),
            reason=reason, message=message[:1024], type="Warning" if warning else "Normal",
            first_timestamp=now, last_timestamp=now, count=1,
            source=client.V1EventSource(component=component), reporting_component=component,
            reporting_instance=os.environ.get("HOSTNAME", component),
        )
        try:
            self.core.create_namespaced_event(namespace, event, _request_timeout=self.timeout_s)
        except ApiException as exc:  # an Event is a report, never a reason to stop scaling
            log.warning("could not record event %s for %s/%s: %s", reason, namespace, name, exc.reason)

    # -- leases -------------------------------------------------------------------------------

    def get_lease(self, namespace: str, name: str) -> client.V1Lease | None:
        self.calls += 1
        try:
            return self.coordination.read_namespaced_lease(name, namespace, _request_timeout=self.timeout_s)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise

    def create_lease(self, namespace: str, lease: client.V1Lease) -> client.V1Lease:
        self.calls += 1
        return self.coordination.create_namespaced_lease(namespace, lease, _request_timeout=self.timeout_s)

    def replace_lease(self, namespace: str, name: str, lease: client.V1Lease) -> client.V1Lease:
        """Optimistic: fails with 409 when someone else wrote the Lease since it was read."""
        self.calls += 1
        return self.coordination.replace_namespaced_lease(name, namespace, lease, _request_timeout=self.timeout_s)


def api_error_text(exc: Exception) -> str:
    if isinstance(exc, ApiException):
        try:
            return f"{exc.status} {json.loads(exc.body).get('message', exc.reason)}"
        except (TypeError, ValueError):
            return f"{exc.status} {exc.reason}"
    return f"{type(exc).__name__}: {exc}"
