"""kind: bitfit — BitFit (Ben Zaken et al., 2022): only bias terms train, plus the task head. peft has no BitFit.

On the transformers MobileNets the convs have no bias, so the biases are the BatchNorm betas (the BN
scales and running statistics stay frozen; see suites/image_classification.py).
"""
from methods.base import Method, freeze_all_but, in_modules


class BitFit(Method):
    def apply(self, model, ctx):
        self.check_applies(model, ctx)
        freeze_all_but(model, lambda name, p: name.endswith(".bias") or in_modules(name, ctx.head_names))
        return model
