"""The one Celery app. Reliability settings here are not optional (DESIGN §4)."""

from __future__ import annotations

from celery import Celery
from kombu import Exchange, Queue

from renderfarm.core.kinds import KINDS, longest_time_limit_s
from renderfarm.core.queues import all_queues
from renderfarm.core.redis_conn import celery_broker_url
from renderfarm.core.settings import get_settings


def make_celery(settings=None) -> Celery:
    settings = settings or get_settings()
    app = Celery("renderfarm", broker=celery_broker_url(settings), set_as_current=True)
    app.conf.update(
        # JSON only: a pickle payload from the queue would be code execution.
        task_serializer="json",
        accept_content=["json"],
        result_serializer="json",
        event_serializer="json",
        # The job store holds results; Celery's result backend is not used.
        task_ignore_result=True,
        # At-least-once: ack after the job ends; a lost worker's job is redelivered.
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        task_acks_on_failure_or_timeout=True,
        worker_prefetch_multiplier=1,
        broker_transport_options={
            # Above the longest hard limit, or a slow job would be delivered twice.
            "visibility_timeout": longest_time_limit_s() + 600,
            # Strict priority: BRPOP lists the queues in the order the worker gave them.
            "queue_order_strategy": "priority",
            "socket_timeout": 10,
            "socket_connect_timeout": 5,
            "health_check_interval": 10,
        },
        broker_connection_retry_on_startup=True,
        broker_connection_max_retries=None,  # ride out a Redis restart
        worker_cancel_long_running_tasks_on_connection_loss=False,
        task_queues=[Queue(name, Exchange(name, type="direct"), routing_key=name) for name in all_queues()],
        task_default_queue="cpu.normal",
        worker_hijack_root_logger=False,
        # A pool child may take a while to come up (torch import, model load):
        # Celery's default of 4 s would kill it before its first job.
        worker_proc_alive_timeout=120,
        worker_send_task_events=False,
        task_send_sent_event=False,
        worker_enable_remote_control=True,
        broker_connection_timeout=5,
    )
    _register_tasks(app)
    return app


def _register_tasks(app: Celery) -> None:
    # One task per registered kind, named from the registry; all run through the runner.
    for kind in KINDS.values():
        def run(self, job_id: str, _kind=kind.name) -> None:
            from renderfarm.worker.runner import run_job

            run_job(self, job_id, _kind)

        app.task(
            name=kind.task_name,
            bind=True,
            soft_time_limit=kind.soft_time_limit_s,
            time_limit=kind.time_limit_s,
            acks_late=True,
            reject_on_worker_lost=True,
            ignore_result=True,
            # The main process records runs it lost (killed pool process, hard time limit).
            Request="renderfarm.worker.lost:RunRequest",
        )(run)


app = make_celery()
