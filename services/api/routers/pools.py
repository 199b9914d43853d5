"""/v1/pools: the worker pools (WorkerPool objects) for SREs; any key reads them, PATCH needs admin.

Without Kubernetes (RF_POOLS_NAMESPACE unset, as under ``make run``) pools are
fixed local processes and both routes answer 501 saying so.
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request

from renderfarm.api.deps import Admin, Tenant, settings
from renderfarm.api.errors import ApiError
from renderfarm.api.pools_kube import KubeError, KubePools, PoolsUnavailable
from renderfarm.api.schemas import PoolOut, PoolPatch
from renderfarm.core.settings import Settings
from renderfarm.core.workerpools import check_bounds, pool_summary, spec_patch

router = APIRouter(prefix="/v1/pools", tags=["pools"])

NOT_ON_KUBERNETES = ("worker pools are WorkerPool objects on Kubernetes, and this farm runs without it "
                     "(RF_POOLS_NAMESPACE is not set): its workers are local processes, see GET /v1/workers "
                     "and GET /v1/queues")


def kube_pools(request: Request, settings_: Settings = Depends(settings)) -> KubePools:
    if not settings_.pools_namespace:
        raise ApiError(501, "not_on_kubernetes", NOT_ON_KUBERNETES)
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
def list_pools(tenant: str = Tenant, pools: KubePools = Depends(kube_pools)) -> list[PoolOut]:
    try:
        return [PoolOut.model_validate(pool_summary(item)) for item in pools.list()]
    except KubeError as exc:
        raise _kube_error(exc) from None
    except PoolsUnavailable as exc:
        raise ApiError(503, "kubernetes_unavailable", str(exc)) from None


@router.patch("/{name}", response_model=PoolOut, summary="Set min, max, pin or pause of a pool (admin)")
def patch_pool(name: str, body: PoolPatch, tenant: str = Admin, pools: KubePools = Depends(kube_pools)) -> PoolOut:
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
