"""The precision a run trains and evaluates at: fp32, or autocast to bf16/fp16 (fp16 with a gradient scaler),
and whether CUDA fp32 matmuls and convolutions may use TF32. Naming a precision imports no torch."""
from __future__ import annotations

import contextlib

from bench.core.errors import UsageError

PRECISIONS = ("fp32", "bf16", "fp16")
TF32 = ("on", "off")


def check(precision: str, tf32: str) -> None:
    if precision not in PRECISIONS:
        raise UsageError(f"unknown precision {precision!r} (valid: {', '.join(PRECISIONS)})")
    if tf32 not in TF32:
        raise UsageError(f"unknown --tf32 {tf32!r} (valid: {', '.join(TF32)})")


def dtype(precision: str):
    import torch
    return {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]


def autocast(device, precision: str):
    """Mixed precision: weights stay fp32, autocast runs matmuls and convolutions in the chosen dtype."""
    import torch
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype(precision))


def grad_scaler(device, precision: str):
    """fp16 gradients underflow without loss scaling; bf16 has fp32's range and needs none."""
    import torch
    return torch.amp.GradScaler(device.type) if precision == "fp16" else None


def set_tf32(on: bool) -> None:
    """CUDA only (no effect on CPU). Matmuls and cuDNN convolutions alike, so "off" means IEEE fp32 throughout."""
    import torch
    mode = "tf32" if on else "ieee"
    torch.backends.cuda.matmul.fp32_precision = mode
    torch.backends.cudnn.conv.fp32_precision = mode
