"""Contention: how much of the machine other processes took while this process measured something.

CPU: the busy time of the CPUs this process may use (/proc/stat: user, nice, system, irq, softirq, steal),
less this process's own CPU time (getrusage, every thread), is what other processes ran. As a share: the CPU
time this process's `threads` threads needed that other processes took, beyond the CPUs the threads left free
(`share`). Read at the edges of each measured window only (a timed training window, the peak GEMM), summed over
windows; None without /proc/stat or when the windows add up to under MIN_WALL_S, too short for its 10 ms ticks.

GPU: the processes NVML lists with a compute context on the device, this one left out (`GpuProcesses`).

bench/meters/flops.py measures the peak GEMM's contention with this meter, bench/meters/windows.py
(WindowTimer) the timed training windows'; bench/core/metrics.py (`contended`) says when a run's is too high.
"""
from __future__ import annotations

import os
import resource
import time

MIN_WALL_S = 0.2  # /proc/stat counts in 10 ms ticks per CPU


def usable_cpus() -> list[int]:
    """The CPUs this process may run on (all of them where affinity is unknown: then /proc/stat's count)."""
    if hasattr(os, "sched_getaffinity"):
        return sorted(os.sched_getaffinity(0))
    return list(range(os.cpu_count() or 1))


def busy_s(cpus: list[int]) -> float | None:
    """Seconds the given CPUs have spent busy (user, nice, system, irq, softirq, steal) since boot."""
    try:
        with open("/proc/stat") as f:
            lines = [line.split() for line in f if line.startswith("cpu") and line[3].isdigit()]
    except OSError:
        return None
    ticks = sum(sum(int(v) for i, v in enumerate(fields[1:9]) if i not in (3, 4))  # not idle, iowait
                for fields in lines if int(fields[0][3:]) in cpus)
    return ticks / os.sysconf("SC_CLK_TCK") if lines else None


def own_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)  # every thread of this process
    return usage.ru_utime + usage.ru_stime


def share(others_cpu_s: float, wall_s: float, cpus: int, threads: int) -> float:
    """Of the CPU time `threads` threads needed over `wall_s`, the share other processes took: the CPUs' worth
    they ran beyond the `cpus - threads` CPUs the threads left free, over `threads`, within [0, 1]. More threads
    than CPUs need no more than every CPU."""
    threads = min(threads, cpus)
    others = max(0.0, others_cpu_s) / wall_s  # CPUs' worth of other processes' work
    return round(min(1.0, max(0.0, others - (cpus - threads)) / threads), 3)


class CpuContention:
    """`share` summed over windows: start() and stop() read /proc/stat, this process's CPU time and the clock at
    a window's edges, nothing in between. What other processes ran between windows is not counted."""

    def __init__(self, threads: int | None):
        self.threads, self.cpus = threads, usable_cpus()
        self.others_cpu_s = self.wall_s = 0.0
        self.windows, self.readable = 0, True
        self._start: tuple[float | None, float, float] | None = None

    def start(self) -> None:
        if self._start is None:
            self._start = (busy_s(self.cpus), own_cpu_s(), time.perf_counter())

    def stop(self) -> None:
        if self._start is None:
            return
        (busy0, own0, t0), self._start = self._start, None
        busy1, own1, t1 = busy_s(self.cpus), own_cpu_s(), time.perf_counter()
        if busy0 is None or busy1 is None:
            self.readable = False
            return
        self.others_cpu_s += busy1 - busy0 - (own1 - own0)  # signed: tick rounding cancels over windows
        self.wall_s += t1 - t0
        self.windows += 1

    @property
    def value(self) -> float | None:
        return None if self.unavailable else share(self.others_cpu_s, self.wall_s, len(self.cpus), self.threads)

    @property
    def unavailable(self) -> str | None:
        """Why there is no figure; None where there is one."""
        if not self.threads:
            return "unavailable: no thread count"
        if not self.readable:
            return "unavailable: /proc/stat not readable"
        if self.wall_s < MIN_WALL_S:
            return f"unavailable: windows of {self.wall_s:.2f} s in all, too short for /proc/stat's 10 ms ticks"
        return None


def measure_with_contention(measure, threads: int | None):
    """(measure(), contention): the share of the CPU time `threads` threads needed during the call that other
    processes took, beyond the CPUs this process may use and left free; None on GPUs (no thread count), without
    /proc/stat, or when the call took under MIN_WALL_S."""
    meter = CpuContention(threads)
    meter.start()
    result = measure()
    meter.stop()
    return result, meter.value


class GpuProcesses:
    """The most other processes NVML listed with a compute context on the device, over the samples taken (one
    at each timed window's end); None where NVML cannot say (no pynvml, no driver, or it lists no process, not
    even this one). In a container NVML lists the host's process ids: this one is then counted out by number."""

    def __init__(self, device):
        from bench.meters.energy import NvmlUnavailable, nvml_handle
        self.most: int | None = None
        try:
            self._nvml, self._handle = nvml_handle(device)
            self.source = "nvml compute processes"
        except NvmlUnavailable as e:
            self._nvml, self._handle, self.source = None, None, f"unavailable: {e}"

    def sample(self) -> None:
        if self._nvml is None:
            return
        try:
            pids = {p.pid for p in self._nvml.nvmlDeviceGetComputeRunningProcesses(self._handle)}
        except Exception:  # a driver without the query
            return
        if not pids:
            return
        me = os.getpid()
        others = len(pids - {me}) if me in pids else len(pids) - 1
        self.most = max(self.most or 0, others)
