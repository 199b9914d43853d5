"""kopf handlers: watch WorkerPools, run the scaling loop, report liveness.

kopf watches the WorkerPools (``on.event``: no finalizers, no annotations written, so
the operator needs only get/list/watch on them) and feeds a registry; the scaling loop
(controller.ScalingLoop) runs beside kopf in its own thread and does one Redis read
per tick for all pools. kopf's per-object daemons and timers were not used: they put
a finalizer on every object (so the operator would need patch rights on WorkerPools,
and a WorkerPool could not be deleted while the operator is down) and would read
Redis once per pool instead of once per tick.

Run: ``python -m renderfarm.operator`` (see __main__.py and README.md).
"""

from __future__ import annotations

import copy
import logging
import time
from dataclasses import dataclass
from typing import Any

import kopf

from renderfarm.core.redis_conn import redis_client
from renderfarm.core.settings import Settings as CoreSettings
from renderfarm.operator.controller import Controller, PoolRegistry, ScalingLoop
from renderfarm.operator.kube import KubeApi, current_namespace, load_config
from renderfarm.operator.leader import LeaderElector
from renderfarm.operator.metrics import OperatorMetrics
from renderfarm.operator.models import GROUP, PLURAL, VERSION
from renderfarm.operator.queue_reader import QueueReader
from renderfarm.operator.settings import OperatorSettings, get_settings

log = logging.getLogger("renderfarm.operator")

REGISTRY = PoolRegistry()


@dataclass
class Runtime:
    settings: OperatorSettings
    kube: KubeApi
    metrics: OperatorMetrics
    loop: ScalingLoop
    elector: LeaderElector


def serving_namespace(settings: OperatorSettings) -> str:
    return settings.operator_namespace or current_namespace() or "default"


def build_runtime(settings: OperatorSettings, registry: PoolRegistry = REGISTRY) -> Runtime:
    kube = KubeApi(load_config(), timeout_s=settings.operator_api_timeout_s)
    metrics = OperatorMetrics()
    core = CoreSettings(redis_url=settings.redis_url, redis_password=settings.redis_password)
    reader = QueueReader(redis_client(core, socket_timeout_s=settings.operator_redis_timeout_s))
    elector = LeaderElector(kube, settings.operator_lease_namespace or serving_namespace(settings),
                            settings.operator_lease_name, settings.identity(),
                            duration_s=settings.operator_lease_duration_s,
                            renew_every_s=settings.operator_lease_renew_s)
    controller = Controller(kube, metrics, status_refresh_s=settings.operator_status_refresh_s,
                            status_heartbeat_s=settings.operator_status_heartbeat_s)
    loop = ScalingLoop(registry=registry, controller=controller, reader=reader, elector=elector, metrics=metrics,
                       interval_s=settings.operator_interval_s, workers=settings.operator_workers)
    return Runtime(settings=settings, kube=kube, metrics=metrics, loop=loop, elector=elector)


@kopf.on.startup()
def start(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    # Least privilege: no peering CRD, no namespace/CRD scanning, no kopf-posted Events
    # (the operator writes its own), nothing written to the WorkerPools but their status.
    settings.peering.standalone = True
    settings.scanning.disabled = True
    settings.posting.enabled = False
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    op = get_settings()
    runtime = build_runtime(op)
    runtime.metrics.serve(op.operator_metrics_port, op.operator_metrics_host)
    runtime.loop.start()
    memo.runtime = runtime
    log.info("renderfarm operator %s: interval %.1fs, lease %s/%s, metrics :%s", runtime.elector.identity,
             op.operator_interval_s, runtime.elector.namespace, runtime.elector.name, op.operator_metrics_port or "off")


@kopf.on.cleanup()
def stop(memo: kopf.Memo, **_: Any) -> None:
    runtime: Runtime | None = getattr(memo, "runtime", None)
    if runtime is not None:
        runtime.loop.stop()  # also hands the Lease back


@kopf.on.event(GROUP, VERSION, PLURAL)
def pool_event(event: dict[str, Any], body: kopf.Body, **_: Any) -> None:
    REGISTRY.apply(event.get("type"), copy.deepcopy(dict(body)))


@kopf.on.probe(id="scaling_loop_age_s")
def loop_age(memo: kopf.Memo, **_: Any) -> float | None:
    runtime: Runtime | None = getattr(memo, "runtime", None)
    if runtime is None or runtime.loop.last_tick_at is None:
        return None
    age = time.monotonic() - runtime.loop.last_tick_at
    if age > max(30.0, 10 * runtime.settings.operator_interval_s):
        raise kopf.PermanentError(f"scaling loop stalled for {age:.0f}s")
    return round(age, 3)
