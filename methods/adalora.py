"""AdaLoRA (Zhang et al., 2023), the per-step behaviour its file (methods/zoo/adalora.yaml) cannot declare.

Its schedule comes from the budget: warm up 10% of the steps at full rank, prune until 70%, then fine-tune
the final pattern. Its known silent failure: if `update_and_allocate` is never called, AdaLoRA trains as
fixed-rank LoRA and nothing complains. We call it after every optimiser step and fail the run when the
final rank pattern equals the initial one.
"""
import torch

from methods.peft_method import PeftMethod


class AdaLoRA(PeftMethod):
    skipped_steps = False  # whether a grad scaler may skip steps (fp16)

    def apply(self, model, ctx):
        self.skipped_steps = ctx.precision == "fp16"
        return super().apply(model, ctx)

    def peft_config(self, model, ctx):
        kwargs = super().peft_config(model, ctx)
        steps = ctx.total_steps
        kwargs.update(total_step=steps, tinit=max(1, steps // 10), tfinal=max(1, (steps * 3) // 10),
                      deltaT=max(1, steps // 20))
        return kwargs

    def forward(self, model, batch):
        # A PeftModel without a task type calls the transformers model directly and so skips
        # AdaLoraModel.forward, which is where the orthogonality regulariser is added to the loss.
        return model.base_model(**batch)

    def on_step(self, model, step):
        # Under fp16 the grad scaler skips a step whose gradients overflowed; fed to AdaLoRA, their inf/NaN would
        # stay in its importance averages for good (smoke fp16 runs ended with the rank pattern unchanged). The
        # check reads the device, so it runs only where steps can be skipped: on a GPU a sync per step would
        # stop the CPU from queueing ahead.
        if self.skipped_steps:
            grads = [p.grad for p in model.parameters() if p.grad is not None]
            if not (grads and torch.stack([torch.isfinite(g).all() for g in grads]).all()):
                return
        model.base_model.update_and_allocate(step)

    def finish(self, model, ctx):
        out = super().finish(model, ctx)
        config = model.peft_config["default"]
        pattern, layers = config.rank_pattern, adalora_layers(model)
        initial = config.init_r * len(layers)
        final = sum(sum(mask) for mask in pattern.values()) if pattern else initial
        if final == initial:
            raise RuntimeError("AdaLoRA ranks were never reallocated (rank_pattern unchanged): "
                               "update_and_allocate did not take effect")
        # What the final pattern really uses: each pruned rank frees a row of A, a column of B and an entry of E.
        pruned = 0
        for key, mask in (pattern or {}).items():  # key: "<layer>.lora_E.default", the model prefix dropped
            layer = layers[key.split(".lora_")[0].split(".%s")[0]]
            per_rank = layer.lora_A["default"].shape[1] + layer.lora_B["default"].shape[0] + 1
            pruned += (config.init_r - int(sum(mask))) * per_rank
        trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
        out["metrics"].update(ranks_reallocated=1, adalora_rank_initial=initial, adalora_rank_final=final,
                              effective_trainable_params=trainable - pruned)
        out["info"]["rank_pattern"] = {k: int(sum(v)) for k, v in pattern.items()}
        return out


def adalora_layers(model) -> dict:
    return {n.removeprefix("base_model.model."): m for n, m in model.named_modules()
            if hasattr(m, "lora_E") and "default" in m.lora_E}
