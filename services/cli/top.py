"""``renderfarm top``: a refreshing terminal view of the farm, from the API only.

Each refresh reads /v1/status, /v1/stats (queues, outcomes, dead-letter),
/v1/pools and /v1/workers; throughput and failures are the outcome counters'
change since the previous refresh.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from rich.console import Group
from rich.text import Text

from renderfarm.cli.render import human_seconds, pools_table, queues_table, workers_table


@dataclass(frozen=True)
class Snapshot:
    at: float  # monotonic seconds
    status: dict[str, Any]
    stats: dict[str, Any]
    pools: list[dict[str, Any]]
    workers: list[dict[str, Any]]


def take(client, clock=time.monotonic) -> Snapshot:
    return Snapshot(at=clock(), status=client.status(), stats=client.request("GET", "/v1/stats"),
                    pools=client.pools(), workers=client.workers())


def _totals(stats: dict[str, Any]) -> dict[str, int]:
    totals: dict[str, int] = {}
    for row in stats.get("outcomes", []):
        totals[row["status"]] = totals.get(row["status"], 0) + int(row["count"])
    return totals


def rates(before: Snapshot | None, now: Snapshot) -> dict[str, float]:
    """Pure: finished jobs per second by status since ``before`` (empty without one)."""
    if before is None or now.at <= before.at:
        return {}
    old, new = _totals(before.stats), _totals(now.stats)
    return {status: max(0, count - old.get(status, 0)) / (now.at - before.at) for status, count in new.items()}


def view(before: Snapshot | None, now: Snapshot) -> Group:
    """Pure: the screen for one refresh."""
    per_s = rates(before, now)
    up = lambda value: Text(value, style="green" if value == "up" else "bold red")  # noqa: E731
    queues = now.stats.get("queues", [])
    waiting = sum(q.get("depth", 0) for q in queues)
    running = sum(q.get("in_flight", 0) for q in queues)
    oldest = max((q.get("oldest_age_s") or 0 for q in queues), default=0)
    head = Text.assemble(
        ("redis ", "bold"), up(now.status.get("redis", "?")), ("   beat ", "bold"), up(now.status.get("beat", "?")),
        ("   waiting ", "bold"), str(waiting), ("   running ", "bold"), str(running),
        ("   oldest wait ", "bold"), human_seconds(oldest) if oldest else "-",
        ("   dead-letter ", "bold"), str(now.stats.get("dead_letter", 0)),
    )
    flow = Text.assemble(
        ("throughput ", "bold"), (f"{per_s.get('succeeded', 0.0):.2f}/s" if per_s else "…"), " succeeded   ",
        ("failures ", "bold"), (f"{per_s.get('failed', 0.0):.2f}/s" if per_s else "…"),
        (" failed", "red" if per_s.get("failed") else ""),
    )
    in_flight = [w for w in now.workers if w.get("running_jobs")]
    parts: list[Any] = [head, flow, Text(""), Text("POOLS", style="bold underline"), pools_table(now.pools),
                        Text(""), Text("QUEUES", style="bold underline"), queues_table(queues)]
    parts += [Text(""), Text(f"WORKERS ({len(now.workers)}, {len(in_flight)} running jobs)", style="bold underline"),
              workers_table(now.workers) if now.workers else Text("no live workers", style="bright_black")]
    return Group(*parts)


def run_top(client, console, interval_s: float = 2.0, once: bool = False) -> None:
    """Refresh every ``interval_s`` until Ctrl-C; ``once``: two reads ``interval_s`` apart, one screen."""
    before = take(client)
    if once:
        time.sleep(interval_s)
        console.print(view(before, take(client)))
        return
    from rich.live import Live

    with Live(view(None, before), console=console, screen=False, auto_refresh=False) as live:
        try:
            while True:
                time.sleep(interval_s)
                now = take(client)
                live.update(view(before, now), refresh=True)
                before = now
        except KeyboardInterrupt:
            pass
