"""/v1/workers, /v1/stats, /v1/kinds, /v1/status: what the farm is doing."""

from __future__ import annotations

import time

from fastapi import APIRouter, Depends

from renderfarm.api.deps import Admin, AnyKey, store
from renderfarm.api.errors import error_responses
from renderfarm.api.routers.queues import queue_overview
from renderfarm.api.schemas import KindOut, StatsOut, StatusOut, WorkerOut
from renderfarm.core.apikeys import ApiKeyRecord
from renderfarm.core.kinds import KINDS
from renderfarm.core.metrics_store import OUTCOMES, duration_key, parse_outcomes
from renderfarm.core.queues import WorkloadClass, all_queues
from renderfarm.core.store import BEAT_HEARTBEAT, JobStore, inflight_key

router = APIRouter(prefix="/v1", tags=["farm"], responses=error_responses(401, 503))


# Workers and stats are farm-wide (they name every tenant's running jobs and count
# them all), so they need the admin scope; a tenant sees its own jobs in /v1/jobs.
@router.get("/workers", response_model=list[WorkerOut], summary="Live workers and what they run (admin)",
            responses=error_responses(403))
def list_workers(key: ApiKeyRecord = Admin, store_: JobStore = Depends(store)) -> list[WorkerOut]:
    pipe = store_.redis.pipeline(transaction=False)
    for queue in all_queues():
        pipe.hgetall(inflight_key(queue))
    running: dict[str, list[str]] = {}
    for inflight in pipe.execute():
        for job_id, worker in inflight.items():
            running.setdefault(worker, []).append(job_id)
    now = time.time()
    out = []
    for info in store_.workers():
        out.append(WorkerOut(
            name=info["name"], pool=info.get("pool", ""), pod=info.get("pod", ""),
            queues=[q for q in info.get("queues", "").split(",") if q],
            concurrency=int(info["concurrency"]) if info.get("concurrency", "").isdigit() else None,
            running_jobs=sorted(running.get(info["name"], [])),
            last_seen_s_ago=round(max(0.0, now - float(info.get("seen_at", now))), 3),
        ))
    return out


@router.get("/stats", response_model=StatsOut, summary="Farm-wide counts by status and kind, outcomes, durations (admin)",
            responses=error_responses(403))
def stats(key: ApiKeyRecord = Admin, store_: JobStore = Depends(store)) -> StatsOut:
    # One row per (kind, queue, status); failures carry their counts by error type.
    rows: dict[tuple[str, str, str], dict[str, int]] = {}
    for key, count in parse_outcomes(store_.redis.hgetall(OUTCOMES)).items():
        by_type = rows.setdefault((key.kind, key.queue, key.status), {})
        by_type[key.error_type] = by_type.get(key.error_type, 0) + count
    pipe = store_.redis.pipeline(transaction=False)
    keys = sorted({(kind, queue) for kind, queue, _ in rows})
    for kind, queue in keys:
        pipe.hmget(duration_key(kind, queue), "sum", "count")
    durations = {key: value for key, value in zip(keys, pipe.execute())}
    outcomes = []
    for (kind, queue, status), by_type in sorted(rows.items()):
        total, n = durations.get((kind, queue), (None, None))
        row = {"kind": kind, "queue": queue, "status": status, "count": sum(by_type.values()),
               "mean_duration_s": round(float(total) / int(n), 3) if total and n and int(n) else None}
        if status == "failed":
            row["error_types"] = dict(sorted(by_type.items()))
        outcomes.append(row)
    return StatsOut(
        jobs_by_status=store_.counts_by_status(),
        jobs_by_kind=store_.counts_by_kind(KINDS),
        outcomes=outcomes,
        dead_letter=store_.dead_letter_size(),
        queues=queue_overview(store_),
    )


@router.get("/kinds", response_model=list[KindOut], summary="Registered job kinds and their parameters")
def list_kinds(key: ApiKeyRecord = AnyKey) -> list[KindOut]:
    return [KindOut(name=k.name, pool=k.workload.value, description=k.description,
                    soft_time_limit_s=k.soft_time_limit_s, time_limit_s=k.time_limit_s,
                    max_retries=k.retry.max_retries, params_schema=k.params_model.model_json_schema())
            for k in KINDS.values()]


@router.get("/status", response_model=StatusOut, summary="Which parts of the farm are up")
def farm_status(key: ApiKeyRecord = AnyKey, store_: JobStore = Depends(store)) -> StatusOut:
    pools = {pool.value: 0 for pool in WorkloadClass}
    for info in store_.workers():
        if info.get("pool") in pools:
            pools[info["pool"]] += 1
    beat = "up" if store_.redis.exists(BEAT_HEARTBEAT) else "down"
    return StatusOut(redis="up", pools=pools, beat=beat)
