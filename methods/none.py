"""kind: none — nothing trains and nothing is saved: the model is scored as it was loaded (zero-shot).

Its row in every table is the untouched model's score, cost and size (adapter 0 MB), the baseline a method's
training must beat. `trains = False` tells the worker to run no training loop. It means something only for a
model that answers in words (a causal LM); a classifier's new head is random, so its method file declares it
not on the encoder and CNN families.
"""
from methods.base import Method, freeze_all_but


class NoTraining(Method):
    trains = False

    def apply(self, model, ctx):
        self.check_applies(model, ctx)
        freeze_all_but(model, lambda name, p: False)
        return model

    def save(self, model, folder):
        folder.mkdir(parents=True, exist_ok=True)  # nothing to keep: the base model is the result
