"""Device and precision choice for the GPU pools, out-of-memory recognition, and the
per-process model slot (pure decisions; no model and no GPU needed)."""

from __future__ import annotations

import threading
import time

import pytest

from renderfarm.worker.workloads.devices import (
    DeviceUnavailable,
    WarmSlot,
    choose_device,
    halved,
    is_out_of_memory,
)


@pytest.mark.parametrize(
    ("requested", "cuda", "compute", "expected"),
    [
        ("auto", True, "auto", ("cuda", "float16")),
        ("auto", False, "auto", ("cpu", "int8")),
        ("", True, "", ("cuda", "float16")),
        (None, False, None, ("cpu", "int8")),
        ("cpu", True, "auto", ("cpu", "int8")),
        ("cuda", True, "auto", ("cuda", "float16")),
        ("CUDA", True, "auto", ("cuda", "float16")),
        ("auto", True, "int8_float16", ("cuda", "int8_float16")),
        ("auto", False, "float32", ("cpu", "float32")),
        ("cpu", False, " INT8 ", ("cpu", "int8")),
    ],
)
def test_device_and_precision_follow_the_hardware_unless_set(requested, cuda, compute, expected):
    assert choose_device(requested, cuda, compute) == expected


def test_cuda_asked_for_without_a_gpu_is_refused_not_downgraded():
    with pytest.raises(DeviceUnavailable, match="CUDA"):
        choose_device("cuda", False)


@pytest.mark.parametrize("requested", ["tpu", "gpu", "cuda:0"])
def test_unknown_devices_are_refused(requested):
    with pytest.raises(ValueError, match="unknown device"):
        choose_device(requested, True)


def test_unknown_precisions_are_refused():
    with pytest.raises(ValueError, match="unknown compute type"):
        choose_device("auto", True, "float8")


class OutOfMemoryError(RuntimeError):  # the name torch.cuda.OutOfMemoryError has
    pass


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (RuntimeError("CUDA failed with error out of memory"), True),  # CTranslate2
        (OutOfMemoryError("Tried to allocate 20.00 MiB"), True),  # torch
        (RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB"), True),
        (RuntimeError("cuBLAS failed with status CUBLAS_STATUS_ALLOC_FAILED"), True),
        (RuntimeError("DefaultCPUAllocator: not enough memory: you tried to allocate 1 GB"), True),
        (MemoryError(), True),
        (RuntimeError("CUDA error: device-side assert triggered"), False),
        (ValueError("Invalid input features shape"), False),
        (OSError("libcublas.so.12: cannot open shared object file"), False),
    ],
)
def test_out_of_memory_is_told_apart_from_other_failures(error, expected):
    assert is_out_of_memory(error) is expected


def test_halving_never_reaches_zero():
    assert [halved(n) for n in (16, 9, 2, 1)] == [8, 4, 1, 1]


def test_warm_slot_loads_once_per_key_and_reloads_when_settings_change():
    loads: list[str] = []

    def loader(name):
        def load():
            loads.append(name)
            return f"model-{name}"
        return load

    slot: WarmSlot[str] = WarmSlot("test")
    slot.start("a", loader("a"))
    assert slot.get("a", loader("a")) == "model-a"
    assert slot.get("a", loader("a")) == "model-a"
    assert slot.get("b", loader("b")) == "model-b"
    assert loads == ["a", "b"]
    assert slot.loaded() == "model-b"


def test_warm_slot_loads_in_the_background_and_get_waits():
    release = threading.Event()

    def slow():
        release.wait(5)
        return "ready"

    slot: WarmSlot[str] = WarmSlot("test")
    started = time.monotonic()
    slot.start("k", slow)
    assert time.monotonic() - started < 1, "start must not block (Celery's child start-up timeout)"
    assert slot.loaded() is None
    threading.Timer(0.2, release.set).start()
    assert slot.get("k", slow) == "ready"


def test_warm_slot_forgets_a_failed_load_so_the_next_job_retries():
    attempts: list[int] = []

    def flaky():
        attempts.append(1)
        if len(attempts) == 1:
            raise RuntimeError("driver not ready")
        return "model"

    slot: WarmSlot[str] = WarmSlot("test")
    with pytest.raises(RuntimeError, match="driver not ready"):
        slot.get("k", flaky)
    assert slot.get("k", flaky) == "model"
    assert len(attempts) == 2


def test_vision_batches_windows_on_a_gpu_and_runs_one_lean_window_on_the_cpu():
    from renderfarm.worker.workloads.vision import GPU_BATCH_WINDOWS, inference_plan

    assert inference_plan("cuda", 16) == (GPU_BATCH_WINDOWS, None)  # threads left to torch
    assert inference_plan("cpu", 2) == (1, 1)  # half the cores: the decoder gets the other
    assert inference_plan("cpu", 1) == (1, 1)
    assert inference_plan("cpu", 16) == (1, 8)
    assert inference_plan("cpu", 16, threads_setting=3) == (1, 3)  # RF_VISION_THREADS wins
