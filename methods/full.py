from methods.base import Method, freeze_all_but


class Full(Method):
    name = "full"
    default_lr = 5e-5
    description = "full fine-tuning: every parameter trains"

    def apply(self, model, ctx):
        freeze_all_but(model, lambda name, p: True)
        return model


METHOD = Full()
