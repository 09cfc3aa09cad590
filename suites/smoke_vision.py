"""The smoke vision task: 64 real CIFAR-10 images and the tiny ImageNet MobileNetV1 0.25/128, seconds per run.

Both come from the local folders (CI: BENCH_DATA_DIR=../shared/data, BENCH_MODEL_DIR=../shared/models).
Without them the run is recorded as skipped with the reason. The model has the traps of the full-size
backbone (folded BatchNorm, TF padding under peft, 1x1 convs as LoRA targets), so every method exercises
the same code as the `vision` suite.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from bench.core.errors import SkipRun
from suites.base import Budget
from suites.image_classification import ImageClassificationTask

TINY_MOBILENET = "vision/mobilenet_v1_0.25_128-imagenet"  # a folder under the models dir


@dataclass
class SmokeVisionTask(ImageClassificationTask):
    def resolve_model(self, ref, model_dir):
        if ref == TINY_MOBILENET and (model_dir is None or not (model_dir / ref / "config.json").is_file()):
            raise SkipRun(f"the smoke vision task needs {TINY_MOBILENET} under a models dir "
                          f"(--model-dir or BENCH_MODEL_DIR; got {model_dir})")
        return super().resolve_model(ref, model_dir)

    def load_data(self, data_dir: Path | None, budget: Budget, score_on: str = "eval"):
        if data_dir is None or not (data_dir / self.data_subdir).is_dir():
            raise SkipRun(f"the smoke vision task needs real images in {self.data_subdir}/ under a data dir "
                          f"(--data-dir or BENCH_DATA_DIR; got {data_dir})")
        return super().load_data(data_dir, budget, score_on)


SMOKE_VISION_BUDGET = Budget(train_examples=64, batch_size=16, epochs=2, max_length=64, eval_examples=32,
                             eval_batch_size=32, latency_samples=5, untimed_steps=2, log_every=2)

TASK = SmokeVisionTask(
    name="images", suite="smoke", metric="accuracy", default_model=TINY_MOBILENET, eval_split="test",
    data_subdir="cifar10", hub_id="cifar10", image_column="img",
    budgets={"smoke": SMOKE_VISION_BUDGET, "quick": SMOKE_VISION_BUDGET, "full": SMOKE_VISION_BUDGET},
    lr_overrides={"full": 1e-4},  # the converted MobileNets collapse under full fine-tuning at 1e-3
)
