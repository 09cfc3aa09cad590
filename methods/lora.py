"""LoRA (Hu et al., 2021) through peft: low-rank adapters on the attention projections, head trains."""

from methods.base import Method, lora_targets

RANK, ALPHA, DROPOUT = 8, 16, 0.05


def lora_config(model, ctx):
    from peft import LoraConfig
    return LoraConfig(r=RANK, lora_alpha=ALPHA, lora_dropout=DROPOUT, target_modules=lora_targets(model),
                      modules_to_save=ctx.head_names)


class LoRA(Method):
    name = "lora"
    default_lr = 2e-3
    description = f"LoRA r={RANK} on the attention projections (pointwise convs on CNNs); head trains"
    uses_peft = True

    def apply(self, model, ctx):
        from peft import get_peft_model
        return get_peft_model(model, lora_config(model, ctx))


METHOD = LoRA()
