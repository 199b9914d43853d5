"""Watch caches: the operator's view of Deployments and pods, kept by one LIST + WATCH each.

What client-go's informers do, for the two resources the tick reads: one LIST per
namespace, then one long WATCH from its resourceVersion (re-opened every few minutes,
re-listed only when the server says the version is gone). The tick reads these
caches instead of sending a GET per pool per tick, so a steady farm costs the API
server nothing but the open watches.

Each object is reduced to the few fields the operator needs (``ScaleInfo`` for a
Deployment, ``PodInfo`` for a pod) as it arrives, so 500 Deployments cost kilobytes.
"""

from __future__ import annotations

import logging
import threading
from typing import Any, Callable, Generic, Iterator, Mapping, TypeVar

from renderfarm.operator.kube import KubeApi, ScaleInfo, api_error_text
from renderfarm.operator.pods import PodInfo, pod_info

log = logging.getLogger("renderfarm.operator")

T = TypeVar("T")

# The API server ends a watch after this long; the cache then re-opens it from the
# last resourceVersion (no LIST). KEDA/client-go use 5-10 min.
WATCH_TIMEOUT_S = 300
RETRY_DELAY_S = 1.0


# -- pure: objects -> the records the tick reads ------------------------------------------------


def format_selector(selector: Mapping[str, Any] | None) -> str:
    """A LabelSelector as text, as the scale subresource gives it (metav1.FormatLabelSelector)."""
    selector = selector or {}
    parts = [f"{key}={value}" for key, value in sorted((selector.get("matchLabels") or {}).items())]
    for expression in selector.get("matchExpressions") or []:
        key, operator, values = expression.get("key", ""), expression.get("operator", ""), expression.get("values") or []
        if operator == "In":
            parts.append(f"{key} in ({','.join(sorted(values))})")
        elif operator == "NotIn":
            parts.append(f"{key} notin ({','.join(sorted(values))})")
        elif operator == "Exists":
            parts.append(key)
        elif operator == "DoesNotExist":
            parts.append(f"!{key}")
    return ",".join(parts)


def deployment_scale(deployment: Mapping[str, Any]) -> ScaleInfo:
    """What ``GET deployments/<name>/scale`` would answer, from the Deployment itself."""
    spec, status = deployment.get("spec") or {}, deployment.get("status") or {}
    replicas = spec.get("replicas")
    return ScaleInfo(replicas=int(1 if replicas is None else replicas), status_replicas=int(status.get("replicas") or 0),
                     selector=format_selector(spec.get("selector")))


# -- the shell: one cache per (resource, namespace) ----------------------------------------------------


class WatchCache(Generic[T]):
    """name -> record for one resource in one namespace, kept current by LIST + WATCH in a thread."""

    def __init__(self, *, what: str, namespace: str, list_fn: Callable[[str], tuple[list[dict], str]],
                 watch_fn: Callable[[str, str, int], Iterator[dict]], transform: Callable[[dict], T]):
        self.what, self.namespace = what, namespace
        self._list, self._watch, self._transform = list_fn, watch_fn, transform
        self._items: dict[str, T] = {}
        self._lock = threading.Lock()
        self._synced = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.lists = 0  # LISTs sent (a steady cache sends none)
        self.watches = 0  # WATCHes opened
        self.error = ""

    # -- reading (the tick) --------------------------------------------------------------------------------

    @property
    def synced(self) -> bool:
        return self._synced.is_set()

    def wait_synced(self, timeout: float) -> bool:
        return self._synced.wait(timeout)

    def get(self, name: str) -> T | None:
        with self._lock:
            return self._items.get(name)

    def values(self) -> list[T]:
        with self._lock:
            return list(self._items.values())

    def put(self, name: str, record: T) -> None:
        """Write-through after our own change, so the next tick does not act on the old value
        before the watch event arrives (the event, when it comes, carries the same value)."""
        with self._lock:
            if name in self._items:
                self._items[name] = record

    # -- the thread -----------------------------------------------------------------------------------------

    def start(self) -> "WatchCache[T]":
        self._thread = threading.Thread(target=self._run, name=f"rf-watch-{self.what}-{self.namespace}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        version = ""
        while not self._stop.is_set():
            try:
                if not version:
                    version = self._relist()
                version = self._follow(version)
            except Exception as exc:  # noqa: BLE001 - the cache must outlive any API trouble
                self.error = api_error_text(exc)
                log.warning("watch %s in %s: %s (retrying)", self.what, self.namespace, self.error)
                if getattr(exc, "status", None) == 410:
                    version = ""
                self._stop.wait(RETRY_DELAY_S)

    def _relist(self) -> str:
        self.lists += 1
        items, version = self._list(self.namespace)
        fresh = {}
        for item in items:
            name = (item.get("metadata") or {}).get("name", "")
            fresh[name] = self._transform(item)
        with self._lock:
            self._items = fresh
        self._synced.set()
        self.error = ""
        return version

    def _follow(self, version: str) -> str:
        """One WATCH until the server closes it; returns the version to continue from ("" = re-list)."""
        self.watches += 1
        for event in self._watch(self.namespace, version, WATCH_TIMEOUT_S):
            if self._stop.is_set():
                return version
            kind, obj = event.get("type"), event.get("object") or {}
            meta = obj.get("metadata") or {}
            if kind == "ERROR":
                if obj.get("code") == 410:  # too old: the server no longer has that history
                    return ""
                raise RuntimeError(f"{obj.get('reason')}: {obj.get('message')}")
            version = meta.get("resourceVersion") or version
            if kind == "BOOKMARK":
                continue
            name = meta.get("name", "")
            with self._lock:
                if kind == "DELETED":
                    self._items.pop(name, None)
                else:
                    self._items[name] = self._transform(obj)
        return version


class ClusterView:
    """The Deployments and pods of every namespace that has pools, from watch caches.

    Caches start on a namespace's first pool and stop with its last, so the operator
    watches exactly what its Role lets it (namespaced, no cluster-wide list).
    """

    def __init__(self, kube: KubeApi, *, sync_timeout_s: float = 10.0):
        self.kube = kube
        self.sync_timeout_s = sync_timeout_s
        self._deployments: dict[str, WatchCache[ScaleInfo]] = {}
        self._pods: dict[str, WatchCache[PodInfo]] = {}
        self._lock = threading.Lock()

    def serve(self, namespaces: set[str]) -> None:
        with self._lock:
            for namespace in namespaces - set(self._deployments):
                self._deployments[namespace] = WatchCache(
                    what="deployments", namespace=namespace, list_fn=self.kube.list_deployments,
                    watch_fn=self.kube.watch_deployments, transform=deployment_scale).start()
                self._pods[namespace] = WatchCache(
                    what="pods", namespace=namespace, list_fn=self.kube.list_pod_objects,
                    watch_fn=self.kube.watch_pods, transform=pod_info).start()
            for namespace in set(self._deployments) - namespaces:
                self._deployments.pop(namespace).stop()
                self._pods.pop(namespace).stop()

    def stop(self) -> None:
        self.serve(set())

    def ready(self, namespace: str) -> bool:
        """Both caches listed once (waits up to sync_timeout_s on first use)."""
        with self._lock:
            caches = (self._deployments.get(namespace), self._pods.get(namespace))
        return all(c is not None and c.wait_synced(self.sync_timeout_s) for c in caches)

    def scale(self, namespace: str, deployment: str) -> ScaleInfo | None:
        cache = self._deployments.get(namespace)
        return cache.get(deployment) if cache is not None else None

    def scaled(self, namespace: str, deployment: str, replicas: int) -> None:
        cache = self._deployments.get(namespace)
        if cache is not None and (known := cache.get(deployment)) is not None:
            cache.put(deployment, ScaleInfo(replicas=replicas, status_replicas=known.status_replicas,
                                            selector=known.selector))

    def pods(self, namespace: str) -> list[PodInfo]:
        cache = self._pods.get(namespace)
        return cache.values() if cache is not None else []

    def counters(self) -> dict[str, int]:
        with self._lock:
            caches = list(self._deployments.values()) + list(self._pods.values())
        return {"lists": sum(c.lists for c in caches), "watches": sum(c.watches for c in caches)}
