"""`quantize_base: int4` — QLoRA's base: the frozen model in bitsandbytes 4-bit NF4 under a peft adapter.

NF4 with double quantisation of the block scales and bfloat16 compute (Dettmers et al., 2023), loaded through
transformers' BitsAndBytesConfig and prepared with peft's `prepare_model_for_kbit_training` (no gradient
checkpointing: it would change the memory and speed measured). bitsandbytes replaces only nn.Linear layers;
the task head (`classifier`, `score`) and a causal LM's `lm_head` (tied to its input embeddings) stay float.
A model that nothing was quantised in is skipped, never silently run in float.

On CPU it loads and trains (bitsandbytes 0.50.2), but its fast CPU 4-bit kernel comes from the Hub through the
`kernels` package; offline the fallback makes a step about 20x a float32 LoRA step (../shared/STACK.md), which
is why int4-lora declares `devices: [cuda]`.
"""
from __future__ import annotations

from bench.core.errors import SkipRun
from methods.int8 import HEAD_CANDIDATES, MB, base_bytes

BACKEND = "bitsandbytes nf4 (double quantisation, bfloat16 compute)"


def load_kwargs(ctx) -> dict:
    try:
        import bitsandbytes  # noqa: F401
        import torch
        from transformers import BitsAndBytesConfig
    except Exception as e:  # ImportError, or a broken native library
        raise SkipRun(f"a 4-bit base needs bitsandbytes, which cannot be imported here ({type(e).__name__}: {e})")
    if ctx.device.type not in ("cpu", "cuda"):
        raise SkipRun(f"bitsandbytes has no 4-bit backend for {ctx.device.type}")
    config = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch.bfloat16,
                                bnb_4bit_use_double_quant=True, llm_int8_skip_modules=HEAD_CANDIDATES)
    return {"quantization_config": config,
            "device_map": {"": "cpu" if ctx.device.type == "cpu" else ctx.device.index or 0}}


def quantize_base(model, ctx):
    """Prepare a bitsandbytes 4-bit model for training (the adapter's inputs get gradients, norms float32)."""
    if not quantized_layers(model):
        raise SkipRun(f"no layer of {type(model).__name__} was loaded in 4-bit (bitsandbytes replaces nn.Linear "
                      f"layers only)")
    from peft import prepare_model_for_kbit_training
    return prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)


def quantized_layers(model) -> list[str]:
    try:
        from bitsandbytes.nn import Linear4bit
    except Exception:
        return []
    return [n for n, m in model.named_modules() if isinstance(m, Linear4bit)]


def figures(model) -> dict:
    """Bytes of the frozen base in packed 4-bit (two weights a byte) and in floating point; the 4-bit block
    scales (bitsandbytes' quant_state, double quantised) are not parameters and are left out."""
    packed, floating = base_bytes(model, skip_trainable=True)  # packed 4-bit weights are integer tensors
    return {"metrics": {"base_int4_mb": packed / MB, "base_float_mb": floating / MB,
                        "base_int4_share": packed / (packed + floating) if packed + floating else 0.0,
                        "base_int4_layers": len(quantized_layers(model))},
            "info": {"int4_backend": BACKEND}}
