"""Workload classes, priorities and queue names: pure functions, no I/O.

Each workload class (a worker pool) has one Celery queue per priority, named
``<class>.<priority>``. Workers of a class consume its four queues in strict
priority order.
"""

from __future__ import annotations

from enum import StrEnum


class WorkloadClass(StrEnum):
    cpu = "cpu"
    gpu_transcribe = "gpu-transcribe"
    gpu_vision = "gpu-vision"

    @property
    def needs_gpu(self) -> bool:
        """Its workers need an accelerator (the chart requests nvidia.com/gpu for them)."""
        return self is not WorkloadClass.cpu


class Priority(StrEnum):
    critical = "critical"
    high = "high"
    normal = "normal"
    low = "low"


# Highest first: the order workers poll their queues in.
PRIORITY_ORDER: tuple[Priority, ...] = (Priority.critical, Priority.high, Priority.normal, Priority.low)

# kombu's Redis transport keeps a message priority in separate lists named
# "<queue><sep><n>"; we never set message priorities, but depth counts them anyway
# so a message published by another client is never invisible to scaling.
KOMBU_PRIORITY_SEP = "\x06\x16"
KOMBU_PRIORITY_STEPS = (3, 6, 9)


def queue_name(workload: WorkloadClass | str, priority: Priority | str) -> str:
    return f"{WorkloadClass(workload).value}.{Priority(priority).value}"


def pool_queues(workload: WorkloadClass | str) -> list[str]:
    """The queues of one pool, highest priority first."""
    return [queue_name(workload, priority) for priority in PRIORITY_ORDER]


def all_queues() -> list[str]:
    return [q for workload in WorkloadClass for q in pool_queues(workload)]


def parse_queue_name(name: str) -> tuple[WorkloadClass, Priority]:
    """Split ``gpu-vision.high`` into its class and priority; ValueError if unknown."""
    workload, sep, priority = name.rpartition(".")
    if not sep:
        raise ValueError(f"not a queue name: {name!r}")
    try:
        return WorkloadClass(workload), Priority(priority)
    except ValueError:
        raise ValueError(f"unknown queue {name!r}; known: {', '.join(all_queues())}") from None


def redis_list_keys(queue: str) -> list[str]:
    """Every Redis list a queue's messages can sit in (base list + priority sub-lists)."""
    return [queue] + [f"{queue}{KOMBU_PRIORITY_SEP}{step}" for step in KOMBU_PRIORITY_STEPS]


def next_priority_up(priority: Priority | str) -> Priority | None:
    """The priority a waiting message ages into, or None at the top."""
    index = PRIORITY_ORDER.index(Priority(priority))
    return PRIORITY_ORDER[index - 1] if index > 0 else None
