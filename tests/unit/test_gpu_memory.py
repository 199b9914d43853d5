"""GPU memory gauges: absent without CUDA, summed over live pool processes with it.

Here: the CPU path of ``sample`` with the real torch, the files the pool children
write, and the families the worker exports. The CUDA numbers themselves
(memory_allocated / memory_reserved per device) need a GPU, which these machines
do not have."""

from __future__ import annotations

import os
import subprocess
import sys

from renderfarm.worker import gpu_memory
from renderfarm.worker.bootsteps import gpu_memory_families


def test_without_cuda_there_is_nothing_to_sample_and_nothing_is_published(tmp_path):
    # A fresh process with the real torch (the gpu pools' dependency): on a machine
    # without CUDA, and on one with CUDA whose process never initialised it, there is
    # no GPU memory of its own to report, and nothing is published.
    samples = tmp_path / "samples"
    code = ("import sys, torch; from pathlib import Path; from renderfarm.worker import gpu_memory; "
            "assert gpu_memory.sample(torch) == []; assert gpu_memory.sample() == []; "
            "assert not torch.cuda.is_initialized(); gpu_memory.publish(Path(sys.argv[1]))")
    subprocess.run([sys.executable, "-c", code, str(samples)], check=True)
    assert not samples.exists()
    assert gpu_memory.totals(samples) == []
    assert gpu_memory_families("gpu-vision", "w", gpu_memory.totals(samples)) == []


def test_a_process_that_never_imported_torch_is_not_made_to():
    code = ("import sys; from renderfarm.worker import gpu_memory; "
            "assert gpu_memory.sample() == []; assert 'torch' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_totals_sum_live_children_and_drop_dead_ones(tmp_path):
    live, dead = os.getpid(), 999_999_999
    gpu_memory.publish(tmp_path, [gpu_memory.GpuMemory(0, 100, 200), gpu_memory.GpuMemory(1, 5, 6)])
    (tmp_path / f"{dead}.json").write_text("[[0, 1000, 2000]]")
    other = tmp_path / "12345.json"
    other.write_text("[[0, 10, 20]]")
    totals = gpu_memory.totals(tmp_path, alive=lambda pid: pid in (live, 12345))
    assert totals == [gpu_memory.GpuMemory(0, 110, 220), gpu_memory.GpuMemory(1, 5, 6)]
    assert not (tmp_path / f"{dead}.json").exists()  # a recycled child's memory went with it
    families = {f.name: f for f in gpu_memory_families("gpu-vision", "gpu-vision@pod", totals)}
    assert set(families) == {"renderfarm_worker_gpu_memory_allocated_bytes",
                             "renderfarm_worker_gpu_memory_reserved_bytes"}
    samples = {(s.labels["device"], s.value) for s in families["renderfarm_worker_gpu_memory_reserved_bytes"].samples}
    assert samples == {("0", 220), ("1", 6)}
