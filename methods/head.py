"""kind: head — the pretrained body is frozen, only the task head trains (a linear probe)."""
from methods.base import Method, freeze_all_but, in_modules


class HeadOnly(Method):
    def apply(self, model, ctx):
        self.check_applies(model, ctx)
        freeze_all_but(model, lambda name, p: in_modules(name, ctx.head_names))
        return model
