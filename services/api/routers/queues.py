"""/v1/queues: depth, in-flight, consumers, paused; pause and resume."""

from __future__ import annotations

from fastapi import APIRouter, Depends

from renderfarm.api.deps import Admin, AnyKey, store
from renderfarm.api.errors import ApiError, error_responses
from renderfarm.core.apikeys import ApiKeyRecord
from renderfarm.api.schemas import QueueOut
from renderfarm.core.queues import all_queues, parse_queue_name
from renderfarm.core.store import JobStore

router = APIRouter(prefix="/v1/queues", tags=["queues"], responses=error_responses(401, 503))


def queue_overview(store_: JobStore) -> list[QueueOut]:
    stats = store_.queue_stats(all_queues())
    consumers: dict[str, int] = {}
    for worker in store_.workers():
        for queue in filter(None, worker.get("queues", "").split(",")):
            consumers[queue] = consumers.get(queue, 0) + 1
    out = []
    for stat in stats:
        pool, priority = parse_queue_name(stat.name)
        out.append(QueueOut(name=stat.name, pool=pool.value, priority=priority.value, depth=stat.depth,
                            in_flight=stat.in_flight, consumers=consumers.get(stat.name, 0), paused=stat.paused,
                            oldest_age_s=stat.oldest_age_s))
    return out


@router.get("", response_model=list[QueueOut], summary="Depth, in-flight, consumers and pause state of every queue")
def list_queues(key: ApiKeyRecord = AnyKey, store_: JobStore = Depends(store)) -> list[QueueOut]:
    return queue_overview(store_)


def _known(name: str) -> str:
    try:
        parse_queue_name(name)
    except ValueError as exc:
        raise ApiError(404, "not_found", str(exc)) from None
    return name


@router.post("/{name}/pause", response_model=QueueOut, summary="Stop all workers consuming this queue (admin)",
             responses=error_responses(403, 404))
def pause_queue(name: str, key: ApiKeyRecord = Admin, store_: JobStore = Depends(store)) -> QueueOut:
    store_.set_paused(_known(name), True)
    return next(q for q in queue_overview(store_) if q.name == name)


@router.post("/{name}/resume", response_model=QueueOut, summary="Let workers consume this queue again (admin)",
             responses=error_responses(403, 404))
def resume_queue(name: str, key: ApiKeyRecord = Admin, store_: JobStore = Depends(store)) -> QueueOut:
    store_.set_paused(_known(name), False)
    return next(q for q in queue_overview(store_) if q.name == name)
