"""The API's only Kubernetes calls: list, get and merge-patch WorkerPools (the edge).

The chart's Role for the API allows exactly these verbs on exactly this resource.
The kubernetes client is imported here only, and only when a namespace is set, so
an API without Kubernetes (``make run``) never needs it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from renderfarm.core.settings import Settings
from renderfarm.core.workerpools import GROUP, PLURAL, VERSION


class PoolsUnavailable(Exception):
    """The Kubernetes API could not be asked (no config) or did not answer."""


@dataclass
class KubeError(Exception):
    status: int
    reason: str
    message: str


class KubePools:
    def __init__(self, namespace: str, api_client: Any, timeout_s: float = 5.0):
        from kubernetes import client

        self.namespace = namespace
        self.custom = client.CustomObjectsApi(api_client)
        self.timeout_s = timeout_s

    @classmethod
    def from_settings(cls, settings: Settings) -> "KubePools":
        try:
            from kubernetes import client, config
        except ImportError:
            raise PoolsUnavailable("the kubernetes client is not installed (pip install 'renderfarm[operator]')") from None

        try:
            if settings.kubeconfig:
                api_client = config.new_client_from_config(config_file=settings.kubeconfig)
            elif os.environ.get("KUBERNETES_SERVICE_HOST"):
                configuration = client.Configuration()
                config.load_incluster_config(client_configuration=configuration)
                api_client = client.ApiClient(configuration)
            else:
                api_client = config.new_client_from_config()
        except (config.ConfigException, OSError) as exc:
            raise PoolsUnavailable(f"no Kubernetes configuration: {exc}") from None
        return cls(settings.pools_namespace, api_client)

    def _call(self, method, *args, **kwargs) -> dict[str, Any]:
        from kubernetes.client.rest import ApiException
        from urllib3.exceptions import HTTPError

        try:
            return method(*args, _request_timeout=self.timeout_s, **kwargs)
        except ApiException as exc:
            raise KubeError(exc.status or 0, exc.reason or "", _message(exc)) from None
        except (HTTPError, OSError) as exc:
            raise PoolsUnavailable(f"the Kubernetes API did not answer: {exc}") from None

    def list(self) -> list[dict[str, Any]]:
        body = self._call(self.custom.list_namespaced_custom_object, GROUP, VERSION, self.namespace, PLURAL)
        return sorted(body.get("items") or [], key=lambda item: item["metadata"]["name"])

    def get(self, name: str) -> dict[str, Any]:
        return self._call(self.custom.get_namespaced_custom_object, GROUP, VERSION, self.namespace, PLURAL, name)

    def patch(self, name: str, patch: dict[str, Any]) -> dict[str, Any]:
        # A JSON merge patch: a null clears a field (the pin), as `kubectl patch --type=merge` does.
        return self._call(self.custom.patch_namespaced_custom_object, GROUP, VERSION, self.namespace, PLURAL,
                          name, patch, _content_type="application/merge-patch+json")


def _message(exc: Any) -> str:
    import json

    try:
        return json.loads(exc.body).get("message") or str(exc.reason)
    except (TypeError, ValueError, AttributeError):
        return str(exc.reason)
