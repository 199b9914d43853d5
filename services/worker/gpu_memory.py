"""GPU memory in use by this worker's pool processes, for the worker's /metrics.

The models live in the prefork pool's child processes, and CUDA's caching allocator
counts per process. The main process serves /metrics but must never initialise CUDA
itself (its children are forked from it, and CUDA does not survive a fork), so each
child writes its own numbers to a small file after warm-up and after each task, and
the main process sums the files of its live children at scrape time. Without torch,
or without CUDA initialised, nothing is written and the gauges are simply absent.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class GpuMemory:
    device: int
    allocated_bytes: int  # held by live tensors
    reserved_bytes: int  # held by the caching allocator (what the GPU sees as used)


def sample(torch_module=None) -> list[GpuMemory]:
    """This process's CUDA memory per device; [] without torch, CUDA, or a CUDA context.
    torch is not imported here: a process that never imported it has no GPU memory."""
    torch = torch_module if torch_module is not None else sys.modules.get("torch")
    if torch is None or not torch.cuda.is_available() or not torch.cuda.is_initialized():
        return []
    cuda = torch.cuda
    return [GpuMemory(device, int(cuda.memory_allocated(device)), int(cuda.memory_reserved(device)))
            for device in range(cuda.device_count())]


def samples_dir(main_pid: int) -> Path:
    # /tmp is the pod's own emptyDir: these files never mix between pods.
    return Path(tempfile.gettempdir()) / f"renderfarm-gpu-memory-{main_pid}"


def publish(directory: Path | None = None, samples: list[GpuMemory] | None = None) -> None:
    """In a pool child: write this process's numbers (atomically) for the main process."""
    samples = sample() if samples is None else samples
    if not samples:
        return
    directory = directory or samples_dir(os.getppid())
    directory.mkdir(parents=True, exist_ok=True)
    temporary = directory / f".{os.getpid()}.tmp"
    temporary.write_text(json.dumps([[s.device, s.allocated_bytes, s.reserved_bytes] for s in samples]))
    temporary.replace(directory / f"{os.getpid()}.json")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def totals(directory: Path, alive=_alive) -> list[GpuMemory]:
    """In the main process: the sum per device over live children (a dead child's file
    is removed: a recycled child's memory is freed with it)."""
    per_device: dict[int, list[int]] = {}
    for path in sorted(directory.glob("*.json")) if directory.is_dir() else []:
        if not path.stem.isdigit() or not alive(int(path.stem)):
            path.unlink(missing_ok=True)
            continue
        try:
            rows = json.loads(path.read_text())
        except (OSError, ValueError):
            continue  # being replaced right now: next scrape
        for device, allocated, reserved in rows:
            total = per_device.setdefault(int(device), [0, 0])
            total[0] += int(allocated)
            total[1] += int(reserved)
    return [GpuMemory(device, allocated, reserved) for device, (allocated, reserved) in sorted(per_device.items())]
