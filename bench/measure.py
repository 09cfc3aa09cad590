"""Measurement glue: peak memory, timers and latency that work on CPU and CUDA.

Peak RSS uses the kernel's high-water mark (VmHWM), reset through /proc/self/clear_refs, because a
sampling thread misses short spikes and tracemalloc does not see tensor memory. RSS is never given
back to the OS, so each run lives in its own process (see bench/runner.py).
"""
from __future__ import annotations

import resource
import threading
import time
from contextlib import contextmanager

import numpy as np
import psutil
import torch

MB = 1024 * 1024


def current_rss_mb() -> float:
    return psutil.Process().memory_info().rss / MB


def _read_hwm_mb() -> float | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024  # kB -> MB
    except OSError:
        return None
    return None


class PeakMemory:
    """High-water mark of RSS (and CUDA allocator) from `reset()` to `read()`."""

    def __init__(self, device: torch.device):
        self.device = device
        self.source = "VmHWM"
        self._sampler: threading.Thread | None = None
        self._sampled = 0.0
        self._stop = threading.Event()

    def reset(self) -> None:
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")  # resets VmHWM to the current RSS
        except OSError:
            # No procfs control (macOS, locked-down containers): sample instead and say so.
            self.source = "psutil-sampled"
            self._sampled = current_rss_mb()
            self._sampler = threading.Thread(target=self._sample, daemon=True)
            self._sampler.start()
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)

    def _sample(self) -> None:
        while not self._stop.wait(0.005):
            self._sampled = max(self._sampled, current_rss_mb())

    def read(self) -> dict[str, float]:
        if self._sampler is not None:
            self._stop.set()
            self._sampler.join()
            peak = max(self._sampled, current_rss_mb())
        else:
            peak = _read_hwm_mb()
            if peak is None:  # no procfs at all: lifetime peak is the best we have
                self.source = "ru_maxrss"
                peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        out = {"peak_rss_mb": peak}
        if self.device.type == "cuda":
            out["cuda_max_allocated_mb"] = torch.cuda.max_memory_allocated(self.device) / MB
            out["cuda_max_reserved_mb"] = torch.cuda.max_memory_reserved(self.device) / MB
        return out


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class StepTimer:
    """Accumulates wall and CPU time of timed sections; on CUDA waits for the GPU before reading."""

    def __init__(self, device: torch.device):
        self.device = device
        self.wall = 0.0
        self.cpu = 0.0

    @contextmanager
    def section(self, timed: bool = True):
        synchronize(self.device)
        w0, c0 = time.perf_counter(), time.process_time()
        yield
        synchronize(self.device)
        if timed:
            self.wall += time.perf_counter() - w0
            self.cpu += time.process_time() - c0


def time_call_ms(fn, device: torch.device) -> float:
    """Time one call in milliseconds: CUDA events on GPU, perf_counter on CPU."""
    if device.type == "cuda":
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize(device)
        return start.elapsed_time(end)
    t0 = time.perf_counter()
    fn()
    return (time.perf_counter() - t0) * 1000


def percentile(values: list[float], q: float) -> float:
    """Percentile (q in 0..100) with numpy's linear interpolation."""
    if not values:
        raise ValueError("percentile of no values")
    return float(np.percentile(values, q))
