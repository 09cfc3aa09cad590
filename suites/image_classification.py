"""Image classification with a transformers vision backbone (CIFAR-10, Imagenette, the smoke vision task).

Images are decoded once with Pillow and cached as uint8 tensors, so a training step only stacks, crops,
flips and normalises a batch (well under a millisecond per image; the time is logged). Preprocessing
follows the checkpoint's own image processor: its mean/std, resampling filter and crop fraction
(resize the shorter side to `res / crop_fraction`, then crop `res`). The resolution `res` is the budget's
`max_length`. Training takes a random crop position and a random horizontal flip; evaluation the centre.

Two traps of the ImageNet MobileNets in ../shared/models/vision (see their PROVENANCE.md) are handled here
for every method: BatchNorm is folded into the weights, so BN layers stay in eval mode while training
(`train_mode`); with `tf_padding=true` the model reads `stride/kernel_size/dilation` from each conv, which
peft's conv wrappers lack, so they are copied from the wrapped layer (`after_method`).
"""
from __future__ import annotations

import sys
import time
from dataclasses import dataclass

from PIL import Image, ImageOps

from suites import checks
from suites.base import Batch, Budget, LoadedModel, Task
from suites.text_classification import TextClassificationTask

CONV_ATTRS = ("stride", "kernel_size", "dilation", "padding")


@dataclass(frozen=True)
class ImagePreprocessing:
    """What the checkpoint expects of its input, read from its image processor config."""

    mean: tuple[float, ...] = (0.5, 0.5, 0.5)
    std: tuple[float, ...] = (0.5, 0.5, 0.5)
    rescale: float = 1 / 255
    resample: int = Image.Resampling.BILINEAR
    crop_fraction: float = 1.0  # crop size / resized shorter side (0.875 for the ImageNet MobileNets)

    @classmethod
    def from_pretrained(cls, path: str) -> "ImagePreprocessing":
        from transformers import AutoImageProcessor
        proc = AutoImageProcessor.from_pretrained(path)
        size, crop = getattr(proc, "size", None), getattr(proc, "crop_size", None)
        fraction = 1.0
        if getattr(proc, "do_center_crop", False) and size and crop and size.get("shortest_edge") and crop.get("height"):
            fraction = crop["height"] / size["shortest_edge"]
        return cls(mean=tuple(proc.image_mean), std=tuple(proc.image_std),
                   rescale=float(getattr(proc, "rescale_factor", 1 / 255)),
                   resample=int(getattr(proc, "resample", Image.Resampling.BILINEAR)), crop_fraction=fraction)

    def resized_side(self, res: int) -> int:
        return round(res / self.crop_fraction)

    def to_uint8(self, image: Image.Image, res: int, center_crop: bool) -> torch.Tensor:
        """[3, S, S] uint8: shorter side resized to `resized_side(res)`, long side centre-cropped to a square;
        with `center_crop` the centre `res` x `res` of that (what evaluation sees)."""
        import numpy as np
        import torch
        side = self.resized_side(res)
        image = ImageOps.fit(image.convert("RGB"), (side, side), method=self.resample)
        if center_crop and side != res:
            left = (side - res) // 2
            image = image.crop((left, left, left + res, left + res))
        return torch.from_numpy(np.asarray(image).copy()).permute(2, 0, 1)

    def normalise(self, pixels: torch.Tensor) -> torch.Tensor:
        """uint8 [B, 3, H, W] -> float32, (x * rescale - mean) / std per channel."""
        import torch
        mean = torch.tensor(self.mean).view(1, -1, 1, 1)
        std = torch.tensor(self.std).view(1, -1, 1, 1)
        return (pixels.float() * self.rescale - mean) / std


def random_crop_flip(pixels: torch.Tensor, res: int, generator: torch.Generator) -> torch.Tensor:
    """A random `res` x `res` window of each image, each mirrored left-right with probability 1/2."""
    import torch
    n, _, height, width = pixels.shape
    tops = torch.randint(0, height - res + 1, (n,), generator=generator).tolist()
    lefts = torch.randint(0, width - res + 1, (n,), generator=generator).tolist()
    flips = (torch.rand(n, generator=generator) < 0.5).tolist()
    out = []
    for img, top, left, flip in zip(pixels, tops, lefts, flips):
        crop = img[:, top:top + res, left:left + res]
        out.append(crop.flip(-1) if flip else crop)
    return torch.stack(out)


def is_batchnorm(module: torch.nn.Module) -> bool:
    import torch
    return isinstance(module, torch.nn.modules.batchnorm._BatchNorm)


@dataclass
class ImageClassificationTask(Task):
    kind = "image-classification"
    image_column: str = "image"

    def required_columns(self) -> list[str]:
        return [self.image_column, self.label_column]

    def check_deep(self, split, where: str) -> None:
        checks.images(split, self.image_column, where)

    def load_model(self, path: str, label_names: list[str], **load_kwargs) -> LoadedModel:
        # A new head for our classes: the checkpoint's 1001-way ImageNet head does not fit.
        from transformers import AutoModelForImageClassification
        model = AutoModelForImageClassification.from_pretrained(
            path, **self.head_config(label_names), ignore_mismatched_sizes=True, **load_kwargs)
        return LoadedModel(model, ImagePreprocessing.from_pretrained(path))

    def encode(self, ds, prep: ImagePreprocessing, budget: Budget, train: bool,
               eval_max_length: int | None = None) -> list[dict]:
        """Decode every image once (or read them from the on-disk cache, bench/core/cache.py); training images keep a
        margin for the random crop. The examples' pixels are views of one [N, 3, S, S] uint8 tensor."""
        import torch

        from bench.core.cache import cached

        def build() -> dict:
            t0 = time.perf_counter()
            side = budget.max_length if not train else prep.resized_side(budget.max_length)
            pixels = torch.empty(len(ds), 3, side, side, dtype=torch.uint8)  # filled in place: no second copy
            for i, row in enumerate(ds.select_columns([self.image_column])):
                pixels[i] = prep.to_uint8(row[self.image_column], budget.max_length, center_crop=not train)
            print(f"images: {len(ds)} {'train' if train else 'eval'} images decoded to {(side, side)} uint8 in "
                  f"{time.perf_counter() - t0:.1f} s", file=sys.stderr)
            return {"pixels": pixels, "labels": [int(y) for y in ds[self.label_column]]}
        params = {"encode": "images-v1", "columns": [self.image_column, self.label_column],
                  "res": budget.max_length, "center_crop": not train}
        data = cached(ds, prep, params, build, f"{len(ds)} {'train' if train else 'eval'} images")
        return [{"pixel_values": p, "labels": y} for p, y in zip(data["pixels"], data["labels"])]

    def collate(self, examples: list[dict], prep: ImagePreprocessing) -> Batch:
        import torch
        return {"pixel_values": prep.normalise(torch.stack([e["pixel_values"] for e in examples])),
                "labels": torch.tensor([e["labels"] for e in examples])}

    def length(self, example: dict) -> int:
        return 1  # every image has the same size: nothing to group by

    def train_batches(self, examples: list[dict], prep: ImagePreprocessing, budget: Budget, seed: int):
        import torch
        generator = torch.Generator().manual_seed(seed)
        spent, count = 0.0, 0
        batches = super().train_batches(examples, prep, budget, seed)
        while True:
            t0 = time.perf_counter()
            batch = next(batches, None)
            if batch is None:
                break
            batch["pixel_values"] = random_crop_flip(batch["pixel_values"], budget.max_length, generator)
            spent, count = spent + time.perf_counter() - t0, count + 1
            yield batch
        # Batch assembly runs outside the timed training step: say what it costs, to show it is small.
        print(f"images: {count} training batches assembled in {spent:.2f} s "
              f"({1000 * spent / max(count, 1):.1f} ms per batch)", file=sys.stderr)

    def train_mode(self, model: torch.nn.Module) -> None:
        # BatchNorm of the converted checkpoints is folded (identity statistics); batch statistics
        # would destroy the features, and updating running stats would change the frozen base.
        model.train()
        for module in model.modules():
            if is_batchnorm(module):
                module.eval()

    def after_method(self, model: torch.nn.Module) -> None:
        import torch
        for module in model.modules():
            base = getattr(module, "base_layer", None)
            if isinstance(base, torch.nn.Conv2d) and not isinstance(module, torch.nn.Conv2d):
                for attr in CONV_ATTRS:
                    setattr(module, attr, getattr(base, attr))

    # Scored like sentence classification: accuracy, and the majority-class rate beside it.
    predict = TextClassificationTask.predict
    score = TextClassificationTask.score
