"""Imagenette: 10 easy ImageNet classes at 160 px; accuracy on the validation split.

Its images come from ImageNet's own training set, so an ImageNet-pretrained backbone nearly solves it
before any training (PROVENANCE.md): it checks that
a method does not damage pretrained features. CIFAR-10 is where methods separate.
"""
from suites.base import Budget
from suites.cifar10 import LOCAL_MODELS, MOBILENET_V2
from suites.image_classification import ImageClassificationTask

TASK = ImageClassificationTask(
    name="imagenette",
    suite="vision",
    metric="accuracy",
    default_model=MOBILENET_V2,
    model_local_names=LOCAL_MODELS,
    eval_split="validation",
    dev_examples=500,  # carved from the 4,000 training images (quick trains on 2,000 of the other 3,500)
    data_subdir="imagenette",
    hub_id="frgfm/imagenette",
    hub_config="160px",
    image_column="image",
    note=("Imagenette's images come from ImageNet's own training set, so an ImageNet-pretrained backbone nearly "
          "solves it before any training (0.96-0.98): it checks that a method does not damage pretrained "
          "features. CIFAR-10 is where methods separate."),
    budgets={
        "smoke": Budget(train_examples=64, batch_size=16, max_length=96, eval_examples=64,
                        latency_samples=5, untimed_steps=1, log_every=1),
        "quick": Budget(train_examples=2000, batch_size=32, max_length=160, latency_samples=50),
        "full": Budget(train_examples=None, epochs=2, batch_size=32, max_length=160, latency_samples=100),
    },
)
