"""Maintenance decisions (pure): which waiting jobs age up."""

from __future__ import annotations

import math

from renderfarm.core.queues import PRIORITY_ORDER, Priority


def aged_priority(original: Priority | str, current: Priority | str, waited_s: float, aging_s: float) -> Priority | None:
    """The priority a waiting job should sit at after ``waited_s``, if higher than now.

    A job moves up one priority for each ``aging_s`` it has waited, so low priority
    never starves behind a steady stream of higher work.
    """
    if aging_s <= 0 or waited_s < aging_s:
        return None
    steps = math.floor(waited_s / aging_s)
    target_index = max(0, PRIORITY_ORDER.index(Priority(original)) - steps)
    if target_index < PRIORITY_ORDER.index(Priority(current)):
        return PRIORITY_ORDER[target_index]
    return None
