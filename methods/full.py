"""kind: full — every parameter trains."""
from methods.base import Method, freeze_all_but


class Full(Method):
    def apply(self, model, ctx):
        self.check_applies(model, ctx)
        freeze_all_but(model, lambda name, p: True)
        return model
