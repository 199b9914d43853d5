"""`renderfarm top`'s pure parts: rates from two snapshots, and the screen."""

from __future__ import annotations

from rich.console import Console

from renderfarm.cli.top import Snapshot, rates, view


def _snap(at: float, succeeded: int, failed: int, depth: int = 0) -> Snapshot:
    outcomes = [{"kind": "probe", "queue": "cpu.normal", "status": "succeeded", "count": succeeded},
                {"kind": "transcode", "queue": "cpu.high", "status": "succeeded", "count": 1},
                {"kind": "probe", "queue": "cpu.normal", "status": "failed", "count": failed}]
    queues = [{"name": "cpu.normal", "pool": "cpu", "priority": "normal", "depth": depth, "in_flight": 1,
               "consumers": 1, "paused": False, "oldest_age_s": 75.0 if depth else None}]
    return Snapshot(at=at, status={"redis": "up", "beat": "down", "pools": {"cpu": 1}},
                    stats={"outcomes": outcomes, "queues": queues, "dead_letter": 3},
                    pools=[{"name": "cpu", "min_replicas": 0, "max_replicas": 4, "paused": False}],
                    workers=[{"name": "cpu@a", "pool": "cpu", "queues": ["cpu.normal"], "running_jobs": ["j1"],
                              "last_seen_s_ago": 0.5, "concurrency": 2}])


def test_rates_are_the_change_per_second_summed_over_kinds():
    assert rates(_snap(10.0, 4, 1), _snap(12.0, 10, 3)) == {"succeeded": 3.0, "failed": 1.0}
    assert rates(None, _snap(12.0, 10, 3)) == {}
    assert rates(_snap(12.0, 10, 3), _snap(12.0, 10, 3)) == {}  # no time passed: no rate


def test_view_shows_health_backlog_oldest_wait_flow_and_running_jobs():
    console = Console(width=200, record=True, color_system=None)
    console.print(view(_snap(10.0, 4, 1, depth=5), _snap(12.0, 10, 3, depth=5)))
    text = console.export_text()
    assert "beat down" in text and "redis up" in text
    assert "waiting 5" in text and "running 1" in text and "dead-letter 3" in text
    assert "oldest wait 1m15s" in text, text
    assert "3.00/s succeeded" in text and "1.00/s failed" in text
    assert "cpu.normal" in text and "cpu@a" in text and "j1" in text
    assert "1 running jobs" in text
