"""Which library runs fp32 matmuls on a CPU: torch's default (MKL's sgemm in the x86 wheels) or oneDNN.

MKL takes its fast AVX-512 kernels on Intel CPUs only: on the 2-core AMD EPYC (Zen 5) these benchmarks run on,
`torch.mm` 2048x2048 reaches ~213 GFLOP/s and oneDNN's f32 kernel, in the same wheel, ~450; a MiniLM full
fine-tuning step takes 113 ms against 75-80 ms. But oneDNN holds more memory (its primitive cache and
buffers: +130 to +670 MB of training peak on MiniLM, README), which would blur the memory comparison the
harness exists for, so `default` stays the default and `onednn` / `auto` are opt-in speed.

torch routes fp32 matmuls to oneDNN only when `torch.backends.mkldnn.matmul.fp32_precision` allows a reduced
precision ("bf16"). oneDNN then *may* compute in bf16 ("bf32"), which it does only on CPUs with AMX tiles;
elsewhere it runs its f32 kernels. So oneDNN is used only where a probe shows it computing in fp32 (its error
against float64 within 10x the default's, where bf16 would be ~1000x); `auto` also wants it 10% faster. The
probe runs with the peak measurement (bench/meters/flops.py), once per host and thread count, cached with it. MFU
divides by the faster library's rate either way. Naming a backend imports no torch.
"""
from __future__ import annotations

from bench.core.errors import UsageError

BACKENDS = ("default", "onednn", "auto")
_FLAG = {"default": "none", "onednn": "bf16"}  # torch.backends.mkldnn.matmul.fp32_precision for each
MIN_GAIN = 1.10  # auto: oneDNN must beat the default by this much


def check(backend: str) -> None:
    if backend not in BACKENDS:
        raise UsageError(f"unknown --cpu-matmul {backend!r} (valid: {', '.join(BACKENDS)})")


def use(backend: str) -> None:
    import torch
    torch.backends.mkldnn.matmul.fp32_precision = _FLAG[backend]


def max_error() -> float:
    """Largest absolute error of an fp32 product at a MiniLM layer's shape against the float64 product."""
    import torch
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(256, 384, generator=g), torch.randn(384, 1536, generator=g)
    return float((torch.mm(a, b).double() - a.double() @ b.double()).abs().max())


def probe(measure) -> dict:
    """Each backend's fp32 GEMM FLOP/s (`measure()` under it) and error; which one `auto` takes."""
    import torch
    before = torch.backends.mkldnn.matmul.fp32_precision
    out = {}
    try:
        for backend in ("default", "onednn"):
            use(backend)
            out[backend] = {"flops_per_s": measure(), "max_error": max_error()}
    finally:
        torch.backends.mkldnn.matmul.fp32_precision = before
    out["onednn_is_fp32"] = out["onednn"]["max_error"] <= 10 * max(out["default"]["max_error"], 1e-6)
    fast = out["onednn"]["flops_per_s"] >= MIN_GAIN * out["default"]["flops_per_s"]
    out["auto"] = "onednn" if out["onednn_is_fp32"] and fast else "default"
    return out

