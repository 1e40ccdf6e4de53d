"""Timing, peak memory and machine description for the benchmark rows.

Peak memory of a row is measured in the fresh process that runs only that row: on CPU the
peak resident set over the timed runs minus the resident set before them. The peak is
Linux's ``VmHWM`` after resetting it at the start (``echo 5 > /proc/self/clear_refs``);
where that is not possible, ``getrusage(RUSAGE_SELF).ru_maxrss``, whose high-water mark
may predate the window (then the growth reads 0). On CUDA: ``torch.cuda.max_memory_allocated``
over the timed runs. (tracemalloc does not see torch's allocations.)
"""

from __future__ import annotations

import os
import platform
import resource
import statistics
import time
from collections.abc import Callable
from importlib import metadata

import torch


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _status_mb(field: str) -> float | None:
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 1024  # kB
    except OSError:
        pass
    return None


def reset_peak_rss() -> bool:
    """Reset the process's peak resident set to its current value (Linux >= 4.0)."""
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as clear:
            clear.write("5")
        return True
    except OSError:
        return False


def peak_rss_mb() -> float:
    """Peak resident set of this process (since the last reset where supported)."""
    peak = _status_mb("VmHWM")
    if peak is not None:
        return peak
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


class PeakMemory:
    """``with PeakMemory(device) as peak: ...``; then ``peak.mb`` = growth of the peak."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.mb = 0.0

    def __enter__(self) -> PeakMemory:
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
            self._start = torch.cuda.memory_allocated(self.device) / 2**20
        else:
            reset = reset_peak_rss()
            current = _status_mb("VmRSS")
            self._start = current if reset and current is not None else peak_rss_mb()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.device.type == "cuda":
            self.mb = torch.cuda.max_memory_allocated(self.device) / 2**20 - self._start
        else:
            self.mb = peak_rss_mb() - self._start


def timed_runs(
    work: Callable[[], object], repeats: int, device: torch.device
) -> tuple[list[float], object]:
    """Wall-clock seconds of ``repeats`` calls of ``work`` and the last call's result."""
    times, result = [], None
    for _ in range(repeats):
        synchronize(device)
        start = time.perf_counter()
        result = work()
        synchronize(device)
        times.append(time.perf_counter() - start)
    return times, result


def median(values: list[float]) -> float:
    return statistics.median(values)


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def machine(device: torch.device, threads: int) -> dict[str, str]:
    """What the numbers were measured on."""
    info = {
        "CPU": f"{_cpu_model()}, {os.cpu_count()} logical cores",
        "torch threads": f"{threads} intra-op (of {torch.get_num_threads()} default)",
        "load average (1, 5, 15 min) at start": ", ".join(f"{v:.2f}" for v in os.getloadavg()),
        "device": str(device),
        "python": platform.python_version(),
    }
    if device.type == "cuda":
        info["GPU"] = torch.cuda.get_device_name(device)
    for package in ("torch", "torchvision", "grad-cam", "pydensecrf2", "nibabel", "numpy"):
        info[package] = _version(package)
    return info


def count_aten_ops(work: Callable[[], object]) -> int:
    """Number of aten operations ``work()`` dispatches (a ``TorchDispatchMode`` counter):
    the device operations it launches, whatever their size."""
    from torch.utils._python_dispatch import TorchDispatchMode

    class Counter(TorchDispatchMode):
        def __init__(self) -> None:
            super().__init__()
            self.count = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            self.count += 1
            return func(*args, **(kwargs or {}))

    with Counter() as counter:
        work()
    return counter.count
