"""int8 base + LoRA: frozen base weights stored in int8 (bitsandbytes LLM.int8), LoRA in float32.

bitsandbytes runs on CPU with the same code as on CUDA (verified in ../shared/STACK.md). It replaces
only nn.Linear layers; the figures `base_int8_mb` / `base_float_mb` show how much of the base really is
int8. Without a usable backend the run is skipped, never silently run in fp32.
"""
from peft import get_peft_model, prepare_model_for_kbit_training

from methods.base import Method, SkipRun
from methods.lora import lora_config

MB = 1024 * 1024
HEAD_CANDIDATES = ["classifier", "score"]  # kept in float32: the head trains


class Int8LoRA(Method):
    name = "int8-lora"
    default_lr = 2e-3
    description = "bitsandbytes int8 frozen base + LoRA adapters (float32) on the attention projections"
    uses_peft = True

    def load_kwargs(self, ctx):
        try:
            import bitsandbytes  # noqa: F401
            from transformers import BitsAndBytesConfig
        except Exception as exc:  # ImportError, or a broken native library
            raise SkipRun(f"bitsandbytes unavailable: {exc}") from exc
        if ctx.device.type not in ("cpu", "cuda"):
            raise SkipRun(f"bitsandbytes int8 has no backend for device {ctx.device.type}")
        return {"quantization_config": BitsAndBytesConfig(load_in_8bit=True, llm_int8_skip_modules=HEAD_CANDIDATES),
                "device_map": {"": str(ctx.device) if ctx.device.type == "cpu" else ctx.device.index or 0}}

    def apply(self, model, ctx):
        int8, floating = base_bytes(model)
        if int8 == 0:
            raise SkipRun("bitsandbytes quantised no layer of this model (it replaces only nn.Linear)")
        # No gradient checkpointing: it would change the memory and speed we are here to measure.
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
        return get_peft_model(model, lora_config(model, ctx))

    def finish(self, model, ctx):
        int8, floating = base_bytes(model, skip_trainable=True)
        return {"metrics": {"base_int8_mb": int8 / MB, "base_float_mb": floating / MB,
                            "base_int8_share": int8 / (int8 + floating)},
                "info": {"int8_backend": "bitsandbytes"}}


def base_bytes(model, skip_trainable: bool = False) -> tuple[int, int]:
    """Bytes of frozen weights held in int8 and in floating point."""
    int8 = floating = 0
    for p in model.parameters():
        if skip_trainable and p.requires_grad:
            continue
        size = p.numel() * p.element_size()
        if p.dtype.is_floating_point:
            floating += size
        else:
            int8 += size
    return int8, floating


METHOD = Int8LoRA()
