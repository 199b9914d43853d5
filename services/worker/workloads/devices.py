"""Device, precision and memory decisions shared by the GPU pools.

The decisions are pure functions (``choose_device``, ``is_out_of_memory``,
``halved``); ``WarmSlot`` is the small shell that keeps one model per worker
process warm, and ``free_accelerator_memory`` is the one call that touches CUDA.
"""

from __future__ import annotations

import gc
import logging
import sys
import threading
from concurrent.futures import Future
from typing import Callable, Generic, Hashable, TypeVar

log = logging.getLogger("renderfarm.worker")

DEVICES = ("auto", "cpu", "cuda")

# CTranslate2's compute types (https://opennmt.net/CTranslate2/quantization.html).
COMPUTE_TYPES = (
    "auto", "default", "int8", "int8_float32", "int8_float16", "int8_bfloat16", "int16", "float16", "bfloat16",
    "float32",
)


class DeviceUnavailable(ValueError):
    """A device was asked for by setting but this machine does not have it."""


def normalise_device(requested: str | None) -> str:
    """``requested`` lower-cased, with an empty value meaning ``auto``; ValueError if unknown."""
    device = (requested or "auto").strip().lower() or "auto"
    if device not in DEVICES:
        raise ValueError(f"unknown device {requested!r}; use one of {', '.join(DEVICES)}")
    return device


def normalise_compute_type(requested: str | None) -> str:
    compute_type = (requested or "auto").strip().lower() or "auto"
    if compute_type not in COMPUTE_TYPES:
        raise ValueError(f"unknown compute type {requested!r}; use one of {', '.join(COMPUTE_TYPES)}")
    return compute_type


def choose_device(requested: str | None, cuda_available: bool, compute_type: str | None = "auto") -> tuple[str, str]:
    """(device, compute type) for a model.

    ``auto`` takes CUDA when there is one, the CPU otherwise; an automatic
    precision is float16 on CUDA (tensor cores, half the memory) and int8 on the
    CPU (the fastest CPU path with a negligible accuracy loss for Whisper). An
    explicit compute type is kept as given. Asking for ``cuda`` on a machine
    without it raises DeviceUnavailable rather than quietly running on the CPU.
    """
    device = normalise_device(requested)
    precision = normalise_compute_type(compute_type)
    if device == "cuda" and not cuda_available:
        raise DeviceUnavailable("CUDA was requested but no CUDA device is available")
    if device == "auto":
        device = "cuda" if cuda_available else "cpu"
    if precision == "auto":
        precision = "float16" if device == "cuda" else "int8"
    return device, precision


_OOM_MARKERS = (
    "out of memory",  # torch: "CUDA out of memory"; CTranslate2: "CUDA failed with error out of memory"
    "cublas_status_alloc_failed",
    "cudnn_status_alloc_failed",
    "not enough memory",  # torch's CPU allocator
    "failed to allocate memory",
)


def is_out_of_memory(exc: BaseException) -> bool:
    """Whether ``exc`` is an allocation failure (CUDA or host) rather than a bug."""
    if isinstance(exc, MemoryError) or type(exc).__name__ == "OutOfMemoryError":
        return True
    message = str(exc).lower()
    return any(marker in message for marker in _OOM_MARKERS)


def halved(value: int) -> int:
    return max(1, value // 2)


def free_accelerator_memory() -> None:
    """Drop what Python still references and hand torch's cached CUDA blocks back.

    torch is only touched when something in this process already imported it and
    initialised CUDA: importing it here would cost seconds and gain nothing.
    """
    gc.collect()
    torch = sys.modules.get("torch")
    if torch is not None:
        try:
            if torch.cuda.is_initialized():
                torch.cuda.empty_cache()
        except Exception:  # freeing memory must never hide the original failure
            log.debug("torch.cuda.empty_cache failed", exc_info=True)


T = TypeVar("T")


class WarmSlot(Generic[T]):
    """One model per worker process, keyed by the settings that chose it.

    ``start`` loads in a background thread: a Celery prefork child must report
    "up" within ``worker_proc_alive_timeout`` (4 s by default) or the parent kills
    it, and importing torch plus loading weights takes longer than that on a busy
    node. ``get`` waits for the load; a failed load is forgotten so the next job
    tries again and reports the real error.
    """

    def __init__(self, name: str):
        self.name = name
        self._lock = threading.Lock()
        self._key: Hashable | None = None
        self._future: Future[T] | None = None

    def start(self, key: Hashable, loader: Callable[[], T]) -> Future[T]:
        with self._lock:
            if self._future is not None and self._key == key:
                return self._future
            future: Future[T] = Future()
            self._key, self._future = key, future

        def load() -> None:
            try:
                future.set_result(loader())
            except BaseException as exc:  # handed to whoever waits in get()
                future.set_exception(exc)

        threading.Thread(target=load, name=f"load-{self.name}", daemon=True).start()
        return future

    def get(self, key: Hashable, loader: Callable[[], T]) -> T:
        future = self.start(key, loader)
        try:
            return future.result()
        except BaseException:
            with self._lock:
                if self._future is future:
                    self._key, self._future = None, None
            raise

    def loaded(self) -> T | None:
        """The model if it finished loading, without waiting."""
        future = self._future
        if future is not None and future.done() and future.exception() is None:
            return future.result()
        return None

    def clear(self) -> None:
        with self._lock:
            self._key, self._future = None, None
