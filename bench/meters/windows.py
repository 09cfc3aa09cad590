"""Measurement glue: peak memory, timers and latency that work on CPU and CUDA.

Peak RSS uses the kernel's high-water mark (VmHWM), reset through /proc/self/clear_refs, because a
sampling thread misses short spikes and tracemalloc does not see tensor memory. RSS is never given
back to the OS, so each run lives in its own process (see bench/execute/runner.py).
"""
from __future__ import annotations

import ctypes
import ctypes.util
import gc
import resource
import threading
import time

import numpy as np
import psutil
import torch

from bench.meters.contention import CpuContention, GpuProcesses

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


def release_freed_memory() -> None:
    """Hand freed memory back before a window starts, so what an earlier phase freed (the load's temporary copies)
    does not stay in RSS and hide a later phase's savings: collect cycles, then glibc's malloc_trim(0)."""
    gc.collect()
    if _libc is not None:
        _libc.malloc_trim(0)


def _load_libc():
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.malloc_trim  # glibc only (not musl, not macOS)
        return libc
    except (OSError, AttributeError):
        return None


_libc = _load_libc()


class PeakMemory:
    """High-water mark of RSS (and CUDA allocator) from `reset()` to `read()`; one instance serves successive
    windows (load, train, infer)."""

    def __init__(self, device: torch.device):
        self.device = device
        self.source = "VmHWM"
        self._sampler: threading.Thread | None = None
        self._sampled = 0.0
        self._stop = threading.Event()

    def reset(self) -> None:
        release_freed_memory()
        if self.device.type == "cuda":  # cached blocks of the last window would otherwise count as reserved
            torch.cuda.synchronize(self.device)
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(self.device)
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")  # resets VmHWM to the current RSS
        except OSError:
            # No procfs control (macOS, locked-down containers): sample instead and say so.
            self.source = "psutil-sampled"
            self._sampled = current_rss_mb()
            self._sampler = threading.Thread(target=self._sample, daemon=True)
            self._sampler.start()

    def _sample(self) -> None:
        while not self._stop.wait(0.005):
            self._sampled = max(self._sampled, current_rss_mb())

    def read(self) -> dict[str, float]:
        if self._sampler is not None:
            self._stop.set()
            self._sampler.join()
            self._sampler, self._stop = None, threading.Event()
            peak = max(self._sampled, current_rss_mb())
        else:
            peak = _read_hwm_mb()
            if peak is None:  # no procfs at all: lifetime peak is the best we have
                self.source = "ru_maxrss"
                peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        out = {"peak_mb": peak}
        if self.device.type == "cuda":
            out["cuda_max_allocated_mb"] = torch.cuda.max_memory_allocated(self.device) / MB
            out["cuda_max_reserved_mb"] = torch.cuda.max_memory_reserved(self.device) / MB
        return out

    def window(self, name: str) -> dict[str, float]:
        """`read()` under the window's names: peak_<name>_mb, cuda_peak_<name>_allocated_mb / _reserved_mb."""
        got = self.read()
        out = {f"peak_{name}_mb": got["peak_mb"]}
        if "cuda_max_allocated_mb" in got:
            out[f"cuda_peak_{name}_allocated_mb"] = got["cuda_max_allocated_mb"]
            out[f"cuda_peak_{name}_reserved_mb"] = got["cuda_max_reserved_mb"]
        return out


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class WindowTimer:
    """Wall and CPU time summed over windows of steps, with one device synchronisation at each end of a window:
    a sync per step would stop the CPU from queueing the next step while the GPU runs this one.

    At the same edges (never per step) it reads what other processes took meanwhile (bench/meters/contention.py):
    `contention`, the share of the CPU time this process's `threads` (torch's, unless given) needed that they
    took, and on CUDA `gpu_other_processes`, the most other processes NVML listed on the GPU at a window's end."""

    def __init__(self, device: torch.device, threads: int | None = None):
        self.device = device
        self.wall = 0.0
        self.cpu = 0.0
        self.windows = 0
        self._t0: tuple[float, float] | None = None
        self._cpu_contention = CpuContention(threads or torch.get_num_threads())
        self._gpu = GpuProcesses(device) if device.type == "cuda" else None

    @property
    def running(self) -> bool:
        return self._t0 is not None

    def start(self) -> None:
        if self._t0 is None:
            synchronize(self.device)
            self._cpu_contention.start()
            self._t0 = (time.perf_counter(), time.process_time())

    def stop(self) -> None:
        if self._t0 is not None:
            synchronize(self.device)
            self.wall += time.perf_counter() - self._t0[0]
            self.cpu += time.process_time() - self._t0[1]
            self._cpu_contention.stop()
            if self._gpu is not None:
                self._gpu.sample()
            self.windows += 1
            self._t0 = None

    @property
    def contention(self) -> float | None:
        """Share (0..1) of the CPU time the threads needed in the windows that other processes took; None without
        /proc/stat or when the windows add up to under 0.2 s (see `contention_unavailable`)."""
        return self._cpu_contention.value

    @property
    def contention_unavailable(self) -> str | None:
        return self._cpu_contention.unavailable

    @property
    def gpu_other_processes(self) -> int | None:
        """CUDA only: the most other processes on the GPU at a window's end; None on CPU or where NVML cannot say."""
        return self._gpu.most if self._gpu is not None else None


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


class ForwardTimer:
    """Stands in for the model during evaluation: times each forward call (time_call_ms) and counts its
    examples, so the evaluation pass also gives forward-only throughput at the evaluation batch size, over every
    evaluation batch, with no second pass. No call is left out as a warm-up: the model has just trained, and
    dropping the first batch (at times the shortest) biased the rate."""

    def __init__(self, model, device: torch.device):
        self.model, self.device = model, device
        self.calls: list[tuple[int, float]] = []  # (examples, ms)

    def __call__(self, **inputs):
        out = None

        def forward():
            nonlocal out
            out = self.model(**inputs)
        ms = time_call_ms(forward, self.device)
        self.calls.append((len(next(iter(inputs.values()))), ms))
        return out

    def __getattr__(self, name):  # anything else a task reads from the model
        return getattr(self.model, name)

    def examples_per_s(self) -> float | None:
        ms = sum(t for _, t in self.calls)
        return 1000 * sum(n for n, _ in self.calls) / ms if ms > 0 else None
