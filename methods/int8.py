"""`quantize_base: int8` — the frozen base held in int8 under a peft adapter trained in float32.

Two backends, the one used is recorded (info `int8_backend`):
- bitsandbytes LLM.int8 (same code on CPU and CUDA, verified in ../shared/STACK.md). It replaces only
  nn.Linear layers, so it serves transformers and causal LMs whose body is linear layers.
- where bitsandbytes quantised nothing (a CNN: its only nn.Linear is the trainable classifier) or is not
  installed: methods/int8_weights.py, per-output-channel int8 storage of every frozen conv and linear
  weight, dequantised on the fly in forward.
`base_int8_mb` / `base_float_mb` / `base_int8_share` show how much of the frozen base really is int8. A
model with nothing to quantise is skipped, never silently run in float32.
"""
from __future__ import annotations

from bench.core.errors import SkipRun
from methods import int8_weights

MB = 1024 * 1024
# Kept in float32: a task head trains; a causal LM's lm_head is tied to its input embeddings (an nn.Embedding,
# which bitsandbytes leaves float) and must stay one tensor with them. A name absent from the model is harmless.
HEAD_CANDIDATES = ["classifier", "score", "lm_head"]


def load_kwargs(ctx) -> dict:
    try:
        import bitsandbytes  # noqa: F401
        from transformers import BitsAndBytesConfig
    except Exception:  # ImportError, or a broken native library: quantize_base() uses our own int8 weights
        return {}
    if ctx.device.type not in ("cpu", "cuda"):
        return {}  # bitsandbytes has no backend here; so too quantize_base() uses our own int8 weights
    return {"quantization_config": BitsAndBytesConfig(load_in_8bit=True, llm_int8_skip_modules=HEAD_CANDIDATES),
            "device_map": {"": str(ctx.device) if ctx.device.type == "cpu" else ctx.device.index or 0}}


def quantize_base(model, ctx):
    """Prepare a bitsandbytes-loaded model for training, or hold a CNN's frozen weights in int8 ourselves."""
    int8, _ = base_bytes(model)
    if int8:
        from peft import prepare_model_for_kbit_training
        # No gradient checkpointing: it would change the memory and speed we are here to measure.
        return prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    if not int8_weights.quantize_frozen_weights(model, keep_float=ctx.head_names):
        raise SkipRun(f"no conv or linear layer outside the head to hold in int8 in {type(model).__name__}")
    return model


def figures(model) -> dict:
    int8, floating = base_bytes(model, skip_trainable=True)
    backend = int8_weights.BACKEND if int8_weights.int8_layers(model) else "bitsandbytes"
    return {"metrics": {"base_int8_mb": int8 / MB, "base_float_mb": floating / MB,
                        "base_int8_share": int8 / (int8 + floating)},
            "info": {"int8_backend": backend}}


def base_bytes(model, skip_trainable: bool = False) -> tuple[int, int]:
    """Bytes of frozen weights held in int8 and in floating point (the int8 scales count as floating)."""
    int8 = floating = 0
    for p in model.parameters():
        if skip_trainable and p.requires_grad:
            continue
        size = p.numel() * p.element_size()
        if p.dtype.is_floating_point:
            floating += size
        else:
            int8 += size
    floating += sum(b.numel() * b.element_size() for n, b in model.named_buffers() if n.endswith("weight_scale"))
    return int8, floating
