from methods.base import Method, freeze_all_but, in_modules


class HeadOnly(Method):
    name = "head"
    default_lr = 5e-3  # a linear probe on frozen features tolerates (and needs) a large rate
    description = "head only: the pretrained body is frozen, only the task head trains"

    def apply(self, model, ctx):
        freeze_all_but(model, lambda name, p: in_modules(name, ctx.head_names))
        return model


METHOD = HeadOnly()
