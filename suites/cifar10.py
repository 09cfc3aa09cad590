"""CIFAR-10: 32 px photos in 10 classes, upsampled for an ImageNet backbone; accuracy on the test split.

The local mirror (../shared/data/cifar10) holds 10,000 training images (1,000 per class) and the first
1,000 official test images. Upsampling changes what a frozen backbone sees (PROVENANCE.md has the linear-probe
scores): resolution is part of the budget.
"""
from suites.base import Budget
from suites.image_classification import ImageClassificationTask

MOBILENET_V2 = "google/mobilenet_v2_1.0_224"
LOCAL_MODELS = {MOBILENET_V2: "vision/mobilenet_v2_1.0_224-imagenet"}

TASK = ImageClassificationTask(
    name="cifar10",
    suite="vision",
    metric="accuracy",
    default_model=MOBILENET_V2,
    model_local_names=LOCAL_MODELS,
    eval_split="test",
    dev_examples=1000,  # carved from the 10,000 training images
    data_subdir="cifar10",
    hub_id="cifar10",
    image_column="img",
    budgets={
        "smoke": Budget(train_examples=64, batch_size=16, max_length=64, eval_examples=64,
                        latency_samples=5, untimed_steps=1, log_every=1),
        # Sized, with imagenette quick, for the whole suite on CPU in well under an hour (docs/ has the times).
        "quick": Budget(train_examples=4000, batch_size=32, max_length=112, latency_samples=50),
        "full": Budget(train_examples=None, epochs=3, batch_size=32, max_length=128, latency_samples=100),
    },
)
