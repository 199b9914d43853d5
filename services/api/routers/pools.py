"""/v1/pools: the worker pools (WorkerPool objects) for SREs; any key reads them, PATCH needs admin.

Without Kubernetes (RF_POOLS_NAMESPACE unset, as under ``make run``) pools are
fixed local processes: GET shows them read-only (live workers, backlog, in-flight)
and PATCH answers 409 ``pools_read_only`` saying why.
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request

from renderfarm.core.apikeys import ApiKeyRecord
from renderfarm.api.deps import Admin, AnyKey, settings, store
from renderfarm.api.errors import ApiError, error_responses
from renderfarm.api.pools_kube import KubeError, KubePools, PoolsUnavailable
from renderfarm.api.schemas import PoolOut, PoolPatch
from renderfarm.core.queues import PRIORITY_ORDER, WorkloadClass, queue_name
from renderfarm.core.settings import Settings
from renderfarm.core.store import JobStore
from renderfarm.core.workerpools import LOCAL_POOLS_MESSAGE, check_bounds, local_pool_summary, pool_summary, spec_patch

router = APIRouter(prefix="/v1/pools", tags=["pools"], responses=error_responses(401, 502, 503))

def kube_pools(request: Request, settings_: Settings = Depends(settings)) -> KubePools | None:
    """The WorkerPools client, or None on a farm without Kubernetes."""
    if not settings_.pools_namespace:
        return None
    pools = getattr(request.app.state, "kube_pools", None)
    if pools is None:
        try:
            pools = KubePools.from_settings(settings_)
        except PoolsUnavailable as exc:
            raise ApiError(503, "kubernetes_unavailable", str(exc)) from None
        request.app.state.kube_pools = pools
    return pools


def _kube_error(exc: KubeError, name: str | None = None) -> ApiError:
    if exc.status == 404:
        return ApiError(404, "not_found", f"no worker pool {name!r}" if name else exc.message)
    if exc.status == 422:
        return ApiError(422, "validation_error", exc.message)
    if exc.status in (401, 403):
        return ApiError(503, "kubernetes_forbidden", f"the API's ServiceAccount was refused: {exc.message}")
    return ApiError(502, "kubernetes_error", f"{exc.status} {exc.reason}: {exc.message}")


@router.get("", response_model=list[PoolOut], summary="Worker pools: bounds, pin, pause, replicas, backlog")
def list_pools(key: ApiKeyRecord = AnyKey, pools: KubePools | None = Depends(kube_pools),
               store_: JobStore = Depends(store)) -> list[PoolOut]:
    if pools is None:
        return _local_pools(store_)
    try:
        return [PoolOut.model_validate(pool_summary(item)) for item in pools.list()]
    except KubeError as exc:
        raise _kube_error(exc) from None
    except PoolsUnavailable as exc:
        raise ApiError(503, "kubernetes_unavailable", str(exc)) from None


@router.patch("/{name}", response_model=PoolOut, summary="Set min, max, pin or pause of a pool (admin)",
              responses=error_responses(400, 403, 404, 409, 422))
def patch_pool(name: str, body: PoolPatch, key: ApiKeyRecord = Admin,
               pools: KubePools | None = Depends(kube_pools)) -> PoolOut:
    if pools is None:
        raise ApiError(409, "pools_read_only", LOCAL_POOLS_MESSAGE)
    try:
        changes = body.changes()
    except ValueError as exc:
        raise ApiError(422, "validation_error", str(exc)) from None
    if not changes:
        raise ApiError(422, "validation_error", "nothing to change: set min_replicas, max_replicas, "
                                                "pinned_replicas or paused")
    try:
        current = pools.get(name)
        problem = check_bounds(current.get("spec") or {}, changes)
        if problem:
            raise ApiError(422, "validation_error", problem)
        updated = pools.patch(name, spec_patch(changes))
    except KubeError as exc:
        raise _kube_error(exc, name) from None
    except PoolsUnavailable as exc:
        raise ApiError(503, "kubernetes_unavailable", str(exc)) from None
    return PoolOut.model_validate(pool_summary(updated))


def _local_pools(store_: JobStore) -> list[PoolOut]:
    workers = store_.workers()
    out = []
    for pool in WorkloadClass:
        stats = store_.queue_stats([queue_name(pool, priority) for priority in PRIORITY_ORDER])
        queues = [{"name": q.name, "depth": q.depth, "in_flight": q.in_flight, "paused": q.paused} for q in stats]
        out.append(PoolOut.model_validate(local_pool_summary(pool.value, queues, workers)))
    return out
