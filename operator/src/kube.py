"""The Kubernetes calls the operator makes, and nothing else (the edge of the shell).

Each call maps to one RBAC rule of the chart's Role (helm/renderfarm/templates/operator-rbac.yaml):

- deployments: list, watch        (the watch cache the tick reads replicas from; never written)
- deployments/scale: patch        (set replicas; never the Deployment itself)
- pods: list, watch, patch        (watch cache: Unschedulable detection; pod-deletion-cost before scale-in)
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
from typing import Any, Iterator

from kubernetes import client, config
from kubernetes.client.rest import ApiException
from kubernetes.watch.watch import iter_resp_lines

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

    # -- the target Deployment (its replicas are read from the watch cache) -----------

    def patch_scale(self, namespace: str, deployment: str, replicas: int) -> None:
        self.calls += 1
        self.apps.patch_namespaced_deployment_scale(
            deployment, namespace, {"spec": {"replicas": int(replicas)}},
            _content_type=MERGE_PATCH, _request_timeout=self.timeout_s)

    # -- watches (informer-style caches, informer.py): raw JSON, no model objects -------------

    def list_deployments(self, namespace: str) -> tuple[list[dict[str, Any]], str]:
        return self._list_raw(self.apps.list_namespaced_deployment, namespace)

    def watch_deployments(self, namespace: str, resource_version: str, timeout_s: int) -> Iterator[dict[str, Any]]:
        return self._watch_raw(self.apps.list_namespaced_deployment, namespace, resource_version, timeout_s)

    def list_pod_objects(self, namespace: str) -> tuple[list[dict[str, Any]], str]:
        return self._list_raw(self.core.list_namespaced_pod, namespace)

    def watch_pods(self, namespace: str, resource_version: str, timeout_s: int) -> Iterator[dict[str, Any]]:
        return self._watch_raw(self.core.list_namespaced_pod, namespace, resource_version, timeout_s)

    def _list_raw(self, list_fn, namespace: str) -> tuple[list[dict[str, Any]], str]:
        self.calls += 1
        response = list_fn(namespace, _preload_content=False, _request_timeout=self.timeout_s * 6)
        _raise_for_status(response)
        body = json.loads(response.data)
        return body.get("items") or [], (body.get("metadata") or {}).get("resourceVersion", "")

    def _watch_raw(self, list_fn, namespace: str, resource_version: str, timeout_s: int) -> Iterator[dict[str, Any]]:
        self.calls += 1
        response = list_fn(namespace, watch=True, resource_version=resource_version, allow_watch_bookmarks=True,
                           timeout_seconds=timeout_s, _preload_content=False,
                           _request_timeout=(self.timeout_s, timeout_s + 30))
        try:
            _raise_for_status(response)
            for line in iter_resp_lines(response):
                if line:
                    yield json.loads(line)
        finally:
            response.close()
            response.release_conn()

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


def _raise_for_status(response: Any) -> None:
    """A raw (unpreloaded) response is not checked by the client: do what it would."""
    if not 200 <= int(response.status) <= 299:
        raise ApiException(status=response.status, reason=response.reason,
                           body=response.data.decode("utf-8", "replace") if response.data else None)


def api_error_text(exc: Exception) -> str:
    if isinstance(exc, ApiException):
        try:
            return f"{exc.status} {json.loads(exc.body).get('message', exc.reason)}"
        except (TypeError, ValueError):
            return f"{exc.status} {exc.reason}"
    return f"{type(exc).__name__}: {exc}"
