"""Contention during a run's timed training windows (issue 24): the CPU share other processes took, from
/proc/stat at window edges only; other processes on the GPU, from NVML; `contended` and its threshold; and the
int8 rule of `reference_spread` (int8 FLOPs are counted as float: their MFU is never averaged or gated)."""
import os
import sys
from types import SimpleNamespace

import pytest
import torch
from test_flops_energy import _train

from bench.core.metrics import CONTENDED_ABOVE, METRICS, Metric, contended, reference_spread
from bench.execute.train import TrainStats
from bench.execute.worker import train_measures
from bench.meters import contention, flops
from bench.meters.windows import WindowTimer

CPU = torch.device("cpu")


def _fake_proc_stat(monkeypatch, busy, own, clock):
    """Feed the meter's three readings from lists; returns the list of busy readings taken (one per edge)."""
    busy, own, clock, taken = iter(busy), iter(own), iter(clock), []

    def read_busy(cpus):
        taken.append(cpus)
        return next(busy)
    monkeypatch.setattr(contention.os, "sched_getaffinity", lambda pid: {0, 1})
    monkeypatch.setattr(contention, "busy_s", read_busy)
    monkeypatch.setattr(contention, "own_cpu_s", lambda: next(own))
    monkeypatch.setattr(contention, "time", SimpleNamespace(perf_counter=lambda: next(clock)))
    return taken


def test_the_window_timer_sums_contention_over_its_windows_read_at_their_edges(monkeypatch):
    # Two windows of 0.25 s on 2 CPUs with 2 threads; this process used 0.25 CPU s in each. Others took 0.5 CPU s
    # in the first, 0 in the second: 1 CPU's worth over 0.5 s of 2 threads' time = 0.5. The 50 CPU s others used
    # between the windows (evaluation, a hook) are not counted.
    taken = _fake_proc_stat(monkeypatch, busy=[100.0, 100.75, 150.75, 151.0], own=[10.0, 10.25, 20.0, 20.25],
                            clock=[1.0, 1.25, 5.0, 5.25])
    timer = WindowTimer(CPU, threads=2)
    timer.start()
    timer.start()  # already running: no reading
    timer.stop()
    timer.start()
    timer.stop()
    timer.stop()  # not running: no reading
    assert len(taken) == 4 and timer.contention == 0.5
    assert timer.gpu_other_processes is None  # a CPU run never asks NVML


def test_contention_is_none_without_proc_stat_or_when_the_windows_are_too_short(monkeypatch):
    _fake_proc_stat(monkeypatch, busy=[None, None], own=[0.0, 0.25], clock=[0.0, 1.0])
    timer = WindowTimer(CPU, threads=1)
    timer.start()
    timer.stop()
    assert timer.contention is None and "/proc/stat" in timer.contention_unavailable
    _fake_proc_stat(monkeypatch, busy=[0.0, 1.0, 1.0, 2.0], own=[0.0, 0.0, 0.0, 0.0], clock=[0.0, 0.1, 1.0, 1.09])
    timer = WindowTimer(CPU, threads=1)
    for _ in range(2):
        timer.start()
        timer.stop()
    assert timer.contention is None and "too short" in timer.contention_unavailable  # 0.19 s: under 0.2 s


def test_the_training_loop_reads_proc_stat_at_window_edges_never_per_step(monkeypatch):
    reads = []
    real = contention.busy_s
    monkeypatch.setattr(contention, "busy_s", lambda cpus: reads.append(1) or real(cpus))
    monkeypatch.setattr(contention, "MIN_WALL_S", 0.0)  # the toy model's windows are far shorter than 0.2 s
    stats = _train(steps=8)
    assert stats.windows == 3 and len(reads) == 2 * stats.windows  # 6 timed steps, 3 windows: 6 readings
    assert 0.0 <= stats.contention <= 1.0 and stats.gpu_other_processes is None


def test_flops_measures_the_gemms_contention_with_the_same_meter(monkeypatch):
    _fake_proc_stat(monkeypatch, busy=[100.0, 100.625], own=[10.0, 10.25], clock=[50.0, 50.25])
    assert flops.measure_with_contention(lambda: "done", 2) == ("done", 0.75)
    assert not hasattr(flops, "_busy_s") and not hasattr(flops, "_own_cpu_s")  # one implementation, in contention.py


def test_the_worker_records_contention_or_says_why_not():
    stats = TrainStats(timed_steps=4, timed_examples=8, timed_wall_s=2.0, timed_data_s=0.5, contention=0.35)
    info = {}
    out = train_measures(stats, CPU, "fp32", "off", info)
    assert out["contention"] == 0.35 and "gpu_other_processes" not in out
    info = {}
    stats = TrainStats(timed_steps=4, timed_examples=8, timed_wall_s=2.0, contention=None,
                       contention_unavailable="unavailable: no /proc/stat")
    assert "contention" not in train_measures(stats, CPU, "fp32", "off", info)
    assert info["contention"] == "unavailable: no /proc/stat"
    stats = TrainStats(timed_steps=4, timed_examples=8, timed_wall_s=2.0, contention=0.0, gpu_other_processes=2)
    assert train_measures(stats, CPU, "fp32", "off", {})["gpu_other_processes"] == 2


class _FakeNvml:
    """What GpuProcesses needs of pynvml; `pids` are the processes with a compute context on the device."""

    def __init__(self, pids):
        self.pids, self.initialised = pids, 0

    def nvmlInit(self):
        self.initialised += 1

    def nvmlDeviceGetHandleByUUID(self, uuid):
        raise RuntimeError("no uuid")

    def nvmlDeviceGetHandleByIndex(self, index):
        return ("handle", index)

    def nvmlDeviceGetComputeRunningProcesses(self, handle):
        return [SimpleNamespace(pid=p, usedGpuMemory=1) for p in self.pids]


@pytest.mark.parametrize("pids, others", [([os.getpid(), 11, 12], 2),  # this process and two others
                                          ([11, 12], 1),  # a container: NVML shows host pids, one of them ours
                                          ([os.getpid()], 0),
                                          ([], None)])  # NVML sees no process, not even this one: unknown
def test_gpu_other_processes_counts_nvml_processes_besides_this_one(monkeypatch, pids, others):
    fake = _FakeNvml(pids)
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    gpu = contention.GpuProcesses(torch.device("cuda", 0))  # import-safe on a CPU build: the handle is by index
    gpu.sample()
    assert gpu.most == others
    monkeypatch.setattr(contention, "busy_s", lambda cpus: None)
    timer = WindowTimer(CPU)
    timer.start()
    timer.stop()
    assert timer.gpu_other_processes is None and fake.initialised == 1  # the CPU timer never touched NVML


def test_gpu_processes_without_pynvml_are_unknown(monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", None)  # import pynvml raises ImportError
    gpu = contention.GpuProcesses(torch.device("cuda", 0))
    gpu.sample()
    assert gpu.most is None and "pynvml" in gpu.source


def test_contention_is_declared_informational_and_contended_gives_a_reason():
    assert METRICS["contention"] == Metric("ratio", None, "info") and CONTENDED_ABOVE == 0.10
    assert METRICS["gpu_other_processes"].higher_is_better is None
    assert contended({"metrics": {"contention": 0.35}}) == "other processes took 35% of the CPU during timed steps"
    assert contended({"metrics": {"contention": 0.10}}) is None  # at the threshold: quiet enough
    assert contended({"metrics": {"contention": None}}) is None and contended({"metrics": {}}) is None
    assert contended({"metrics": {"contention": float("nan"), "gpu_other_processes": float("nan")}}) is None
    assert contended({"metrics": {"contention": 0.0, "gpu_other_processes": 2}}) == "2 other processes on the GPU"
    assert contended({"metrics": {"gpu_other_processes": 1}}) == "1 other process on the GPU"
    assert contended({"metrics": {"contention": 0.5, "gpu_other_processes": 1}}) == \
        "other processes took 50% of the CPU during timed steps; 1 other process on the GPU"
    assert contended({}) is None


def _run(mfu, **extra):
    return {"metrics": {"train_mfu": mfu, "train_mfu_datasheet": mfu / 2, "train_flops_per_s": mfu * 444e9,
                        "peak_flops_per_s": 444e9, "train_flops_per_example": 6e8,
                        "train_examples_per_s": 50.0, **extra.pop("metrics", {})}, **extra}


@pytest.mark.parametrize("int8", [{"metrics": {"base_int8_mb": 10.0}}, {"info": {"int8_backend": "bitsandbytes"}},
                                  {"config": {"method": {"quantize_base": "int8"}}}])
def test_int8_runs_mfu_is_never_pooled_with_float_runs_nor_gated_alone(int8):
    floats, int8_run = [_run(0.30), _run(0.31)], _run(0.02, **int8)
    for metric in ("train_mfu", "train_flops_per_s", "train_mfu_datasheet"):
        assert reference_spread(metric, floats) is None
        assert "int8" in reference_spread(metric, floats + [int8_run])  # mixed: not averaged, not gated
    assert reference_spread("train_examples_per_s", floats + [int8_run]) is None  # a speed stays comparable
    for metric in ("train_mfu", "train_mfu_datasheet"):  # alone too: flagged
        assert reference_spread(metric, [int8_run]) == "int8 base: FLOPs counted as float"
    assert reference_spread("train_flops_per_s", [int8_run, _run(0.02, **int8)]) is None  # counted alike
    nan = _run(0.3, metrics={"base_int8_mb": float("nan")})  # a wide table's empty cell is no int8 base
    assert reference_spread("train_mfu", floats + [nan]) is None
