"""Worker recycling decisions (pure): per-pool defaults, settings in their place,
Celery's values, GPU memory growth."""

from __future__ import annotations

import pytest

from renderfarm.core.queues import WorkloadClass
from renderfarm.core.recycling import POOL_DEFAULTS, UNBOUNDED_KB, RecyclingLimits, gpu_memory_grown, recycling_limits
from renderfarm.core.settings import Settings


def test_every_pool_has_defaults_and_gpu_pools_watch_gpu_memory():
    assert set(POOL_DEFAULTS) == set(WorkloadClass)
    for pool, limits in POOL_DEFAULTS.items():
        assert limits.max_tasks_per_child > 0 and limits.max_memory_per_child_mb > 0
        assert (limits.max_gpu_memory_growth_mb > 0) == pool.needs_gpu


def test_settings_replace_the_defaults_and_zero_turns_a_limit_off():
    assert recycling_limits("cpu") == POOL_DEFAULTS[WorkloadClass.cpu]
    limits = recycling_limits("cpu", max_tasks=2, max_memory_mb=0)
    assert limits.celery_max_tasks == 2 and limits.celery_max_memory_kb is None
    assert recycling_limits("gpu-vision", max_memory_mb=300).celery_max_memory_kb == 300 * 1024


def test_a_gpu_cap_alone_keeps_celerys_after_job_memory_check_running():
    limits = RecyclingLimits(max_tasks_per_child=0, max_memory_per_child_mb=0, max_gpu_memory_growth_mb=512)
    assert limits.celery_max_tasks is None and limits.celery_max_memory_kb == UNBOUNDED_KB
    assert RecyclingLimits(0, 0, 0).celery_max_memory_kb is None


@pytest.mark.parametrize(("baseline_mb", "now_mb", "limit_mb", "grown"), [
    (1000, 1500, 512, False), (1000, 1513, 512, True), (1000, 9000, 0, False), (2000, 1000, 1, False)])
def test_gpu_memory_growth_is_measured_from_the_baseline(baseline_mb, now_mb, limit_mb, grown):
    mb = 1024 * 1024
    assert gpu_memory_grown(baseline_mb * mb, now_mb * mb, limit_mb) is grown


def test_recycling_settings_come_from_the_environment(monkeypatch):
    monkeypatch.setenv("RF_MAX_TASKS_PER_CHILD", "2")
    monkeypatch.setenv("RF_MAX_MEMORY_PER_CHILD_MB", "0")
    settings = Settings()
    assert settings.max_tasks_per_child == 2 and settings.max_memory_per_child_mb == 0
    assert settings.max_gpu_memory_growth_mb is None
