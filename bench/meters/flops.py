"""Model FLOPs utilisation: FLOPs counted on real training steps, over the device's peak at the run's precision.

The peak is measured (a dense GEMM, best of a few timed bursts) once per host, device, thread count and dtype,
and cached on disk: a datasheet says nothing about a 2-core share of a CPU. Measured on a busy machine it
reads low (and MFU high), so a CPU measurement records its `contention`: the share of the CPU time its threads
needed that other processes took meanwhile (from /proc/stat, beyond the CPUs it left free; the meter, in
bench/meters/contention.py, also measures each run's timed training windows). Only a quiet figure (contention
<= 0.1) is reused as it is; a contended one is measured again by every run until a quiet one comes, and the
higher figure is kept. (The 1-minute load average lags: runs on a machine gone quiet still read a peak
measured minutes before under load. It decides only where /proc/stat is missing.) Delete the file
(`peak_flops.json` in $BENCH_CACHE_DIR, else ~/.cache/peft-bench) to measure again. Known GPUs also get their
datasheet peak (dense, no sparsity) beside it. A CPU's fp32 peak is the faster of the wheel's two GEMM
libraries, MKL and oneDNN (bench/meters/cpu_matmul.py), whichever of them a run uses.
"""
from __future__ import annotations

import fcntl
import json
import os
import socket
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils import flop_counter
from torch.utils.flop_counter import FlopCounterMode

from bench.core.cache import cache_root
from bench.core.errors import UsageError
from bench.core.metrics import CONTENDED_ABOVE
from bench.meters import cpu_matmul
from bench.meters.contention import measure_with_contention

# Dense tensor-core peaks in TFLOP/s ("tf32": fp32 matmuls with TF32 on); first substring of the name wins.
DATASHEET_TFLOPS = [
    ("H100 PCIe", {"bf16": 756, "fp16": 756, "tf32": 378, "fp32": 51.2}),
    ("H100", {"bf16": 989, "fp16": 989, "tf32": 495, "fp32": 67}),
    ("H200", {"bf16": 989, "fp16": 989, "tf32": 495, "fp32": 67}),
    ("A100", {"bf16": 312, "fp16": 312, "tf32": 156, "fp32": 19.5}),
    ("L40S", {"bf16": 362, "fp16": 362, "tf32": 183, "fp32": 91.6}),
    ("L4", {"bf16": 121, "fp16": 121, "tf32": 60, "fp32": 30.3}),
    ("V100", {"fp16": 125, "fp32": 15.7}),
    ("T4", {"fp16": 65, "fp32": 8.1}),
]


def conv_backward_flop(grad_out_shape, x_shape, w_shape, bias, stride, padding, dilation, transposed,
                       output_padding, groups, output_mask, out_shape=None, **kwargs) -> int:
    """torch's formula, but for the weight gradient of a grouped convolution: torch counts it as if every input
    channel met every output channel, `groups` times too many (MobileNet's depthwise convolutions: full
    fine-tuning read MFU 2.5 on CPU). Each group's weight gradient is a convolution of its own channels."""
    args = (grad_out_shape, x_shape, w_shape, bias, stride, padding, dilation, transposed, output_padding, groups)
    torch_formula = flop_counter.conv_backward_flop  # registered shape-wrapped: takes out_val, not out_shape
    grad_input = torch_formula(*args, [output_mask[0], False, False], out_val=out_shape, **kwargs)
    grad_weight = torch_formula(*args, [False, output_mask[1], False], out_val=out_shape, **kwargs)
    return grad_input + grad_weight // groups


def counter() -> FlopCounterMode:
    """Counts matmul, convolution and attention FLOPs (2 per multiply-add) of what runs inside it, backward too."""
    return FlopCounterMode(display=False,
                           custom_mapping={torch.ops.aten.convolution_backward: conv_backward_flop})


def cache_path() -> Path:
    return cache_root() / "peak_flops.json"


def _kind(precision: str, tf32: bool, device: torch.device) -> str:
    return "tf32" if precision == "fp32" and tf32 and device.type == "cuda" else precision


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    from bench.meters.environment import cpu_model
    return cpu_model()


GEMM_OP = "linear"  # what measure_gemm_peak times; a cached peak of another op is measured again
QUIET = CONTENDED_ABOVE  # contention up to which a measured CPU peak is reused as it is (a run's too)


def _contended(entry: dict, load: float) -> bool:
    """Measure again? A CPU peak is, unless measured quiet; without /proc/stat, once the load average has
    dropped by more than 1 since."""
    if entry.get("contention") is None:
        return load < entry["load_avg_1m"] - 1
    return entry["contention"] > QUIET


def datasheet_peak(device: torch.device, precision: str, tf32: bool) -> float | None:
    if device.type != "cuda":
        return None
    name = _device_name(device)
    for key, peaks in DATASHEET_TFLOPS:
        if key in name:
            tflops = peaks.get(_kind(precision, tf32, device))
            return tflops * 1e12 if tflops else None
    return None


def measure_gemm_peak(device: torch.device, dtype: torch.dtype, seconds: float = 1.0) -> float:
    """FLOP/s of the best of 4 bursts of square `F.linear` products, the call a model's layers make: on CPU,
    fp16 `torch.mm` takes a reference kernel (1 GFLOP/s here) while fp16 `F.linear` reaches 52, so a peak
    from `torch.mm` made fp16 runs read MFU 1.1-1.3. The size grows until one call takes >= 20 ms, up to
    2048 on CPU, 8192 on GPU."""
    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    limit = 8192 if device.type == "cuda" else 2048
    n = 256
    while True:
        a, b = (torch.randn(n, n, device=device).to(dtype) for _ in range(2))
        F.linear(a, b)  # first call: kernel selection, allocation
        sync()
        t0 = time.perf_counter()
        F.linear(a, b)
        sync()
        one = time.perf_counter() - t0
        if one >= 0.02 or n >= limit:
            break
        n *= 2
    reps = max(1, int(seconds / 4 / max(one, 1e-6)))
    best = 0.0
    for _ in range(4):
        sync()
        t0 = time.perf_counter()
        for _ in range(reps):
            F.linear(a, b)
        sync()
        best = max(best, 2 * n**3 * reps / (time.perf_counter() - t0))
    return best


def _best_cpu_fp32(device: torch.device) -> dict:
    """The CPU's fp32 peak is the faster of the two GEMM libraries in the wheel (bench/meters/cpu_matmul.py): dividing
    by MKL's rate where MKL runs a slow path (AMD) would report twice the utilisation the hardware allows."""
    gemm = cpu_matmul.probe(lambda: measure_gemm_peak(device, torch.float32))
    usable = ["default"] + (["onednn"] if gemm["onednn_is_fp32"] else [])
    return {"flops_per_s": max(gemm[b]["flops_per_s"] for b in usable), "gemm": gemm}


def device_peak(device: torch.device, precision: str, tf32: bool) -> dict:
    """{"flops_per_s", "source", ...}: the measured peak (cached per host, device, threads, dtype) and, for known
    GPUs, `datasheet_flops_per_s`."""
    from bench.meters.precision import dtype
    kind = _kind(precision, tf32, device)
    threads = torch.get_num_threads() if device.type == "cpu" else None
    key = f"{socket.gethostname()}|{_device_name(device)}|threads={threads}|{kind}"
    path = cache_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # parallel workers: one measures, the others wait and read its figure
        cache = json.loads(path.read_text()) if path.is_file() else {}
        entry = cache.get(key)
        load = os.getloadavg()[0]
        both_libraries = device.type == "cpu" and kind == "fp32"
        outdated = entry is None or (both_libraries and "gemm" not in entry) or \
            (device.type == "cpu" and "contention" not in entry) or \
            entry.get("op") != GEMM_OP  # from before the MKL/oneDNN probe, the contention check or F.linear
        cached = not outdated and not (device.type == "cpu" and _contended(entry, load))
        if not cached:  # under the run's own TF32 setting (the worker applied it)
            measured, contention = measure_with_contention(
                lambda: _best_cpu_fp32(device) if both_libraries else
                {"flops_per_s": measure_gemm_peak(device, dtype(precision))}, threads)
            new = {**measured, "measured_at": time.strftime("%Y-%m-%dT%H:%M:%S"), "load_avg_1m": load,
                   "contention": contention, "op": GEMM_OP}
            if outdated or measured["flops_per_s"] > entry["flops_per_s"]:  # keep the best: contention only lowers it
                entry = new
            elif contention is not None and contention <= QUIET < (entry.get("contention") or 0):
                entry = {**entry, "contention": contention}  # a quiet run confirms the higher, earlier figure
            cache[key] = entry
            tmp = path.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_text(json.dumps(cache, indent=1, sort_keys=True))
            os.replace(tmp, path)
    out = {**entry, "dtype": kind, "key": key,
           "source": f"measured GEMM ({'cached' if cached else 'this run'}, {path})"}
    sheet = datasheet_peak(device, precision, tf32)
    if sheet:
        out["datasheet_flops_per_s"] = sheet
    return out


def choose_cpu_matmul(requested: str, device) -> str | None:
    """Apply the backend for this CPU run and describe it (None on a GPU, where neither applies)."""
    cpu_matmul.check(requested)
    if device.type != "cpu":
        return None
    if requested == "default":  # no probe before the run's memory windows: the peak is measured after training
        return "default (torch's own library; both rates in info.peak_flops.gemm)"
    gemm = device_peak(device, "fp32", False)["gemm"]
    backend = gemm["auto"] if requested == "auto" else requested
    if backend == "onednn" and not gemm["onednn_is_fp32"]:
        raise UsageError(f"--cpu-matmul onednn computes in bf16 on this CPU (error {gemm['onednn']['max_error']:.2g} "
                          f"vs {gemm['default']['max_error']:.2g}); valid here: default, auto")
    if backend != "default":  # the default leaves torch's settings untouched
        cpu_matmul.use(backend)  # the probe ran in this process: ~17 MB of library buffers stay (README)
    rates = ", ".join(f"{b} {gemm[b]['flops_per_s'] / 1e9:.0f} GFLOP/s" for b in ("default", "onednn"))
    return f"{backend} ({'chosen' if requested == 'auto' else 'asked for'}; fp32 GEMM here: {rates})"
