"""kind: bitfit — BitFit (Ben Zaken et al., 2022): only bias terms train, plus the task head. peft has no BitFit.

On the transformers MobileNets the convs have no bias, so the biases are the BatchNorm betas (the BN
scales and running statistics stay frozen; see suites/image_classification.py). A model with no bias term
outside its head (Llama and most recent decoders) is skipped, naming its class: BitFit would train the head alone.
"""
from methods.base import Method, SkipRun, freeze_all_but, in_modules


class BitFit(Method):
    def apply(self, model, ctx):
        self.check_applies(model, ctx)
        if not any(name.endswith(".bias") and not in_modules(name, ctx.head_names)
                   for name, _ in model.named_parameters()):
            where = " outside its task head" if ctx.head_names else ""
            raise SkipRun(f"{self.spec.name} trains only bias terms, and {type(model).__name__} has no bias "
                          f"terms{where}")
        freeze_all_but(model, lambda name, p: name.endswith(".bias") or in_modules(name, ctx.head_names))
        return model
