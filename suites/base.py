"""What every task provides to the shared runner: data, model, batching and its metric.

A task never decides what trains (that is the method's job) and never runs the loop (bench/train.py).
"""
from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from bench import identity, resolve
from bench.errors import DataError, SkipRun, UnknownName


@dataclass(frozen=True)
class Budget:
    """How much work a run gets. Sizes are documented in README.md ("Budgets")."""

    train_examples: int | None = None  # None: the whole training split
    epochs: float = 1.0
    batch_size: int = 32
    max_length: int = 128  # tokens (text) or pixels (images)
    eval_examples: int | None = None  # None: the whole evaluation split
    eval_batch_size: int = 64
    latency_samples: int = 50  # batch-1 forward passes timed for p50/p95
    warmup_steps: int = 3  # first steps left out of throughput (allocator, caches)
    log_every: int = 10  # record the training loss every N steps

    def steps(self, n_train: int) -> int:
        return max(1, math.ceil(self.epochs * math.ceil(n_train / self.batch_size)))


Batch = dict  # input name -> torch.Tensor (torch is imported where it is used: naming a task needs none)


@dataclass
class Task:
    name: str
    suite: str
    metric: str  # the headline metric, higher is better
    default_model: str
    budgets: dict[str, Budget]
    eval_split: str
    # Hub id -> folder name under the models dir, for models whose local copy has another name.
    model_local_names: dict[str, str] = field(default_factory=dict)
    # Per-method learning rates that suit this task better than the method's default.
    lr_overrides: dict[str, float] = field(default_factory=dict)
    # Where the data comes from: `<data dir>/<data_subdir>/<split>.parquet`, else the Hub dataset.
    data_subdir: str = ""
    hub_id: str = ""
    hub_config: str | None = None
    hub_kwargs: dict = field(default_factory=dict)  # more load_dataset arguments (revision, data_dir)
    train_split: str = "train"
    label_column: str = "label"
    # A caveat every reader of this task's numbers should see; reports print it under the section title.
    note: str = ""

    def budget(self, name: str) -> Budget:
        if name not in self.budgets:
            raise UnknownName(f"unknown budget {name!r} for task {self.name} (valid: {', '.join(self.budgets)})")
        return self.budgets[name]

    # --- data and model resolution, shared by every task kind -------------------------------------
    def resolve_model(self, ref: str, model_dir: Path | None) -> str:
        return resolve.model_path(ref, model_dir, self.model_local_names)

    def raw_splits(self, data_dir: Path | None):
        return resolve.load_splits(data_dir, self.data_subdir, [self.train_split, self.eval_split], self.hub_id,
                                   self.hub_config, columns=tuple(self.required_columns()), **self.hub_kwargs)

    def model_identity(self, ref: str, model_dir: Path | None) -> dict:
        """The model as a run's configuration records it: its reference, and a hash of its weight files where
        they are on this machine (a Hub id not yet local is identified by its id and the `main` revision)."""
        try:
            path = Path(self.resolve_model(ref, model_dir))
        except (SkipRun, DataError) as e:  # the run itself will say so; the id still names the reference
            return {"ref": ref, "unresolved": str(e)}
        if not path.is_dir():
            return {"ref": ref, "hub_revision": "main"}
        weights = sorted(p for pattern in resolve.WEIGHT_FILES for p in path.glob(pattern))
        return {"ref": ref, "weights_sha256": {p.name: identity.file_sha256(p) for p in weights}}

    def data_identity(self, data_dir: Path | None) -> dict:
        """The data as a run's configuration records it: each file's hash and row count, or the Hub dataset."""
        if data_dir is None:
            return {"hub_id": self.hub_id, "hub_config": self.hub_config, **self.hub_kwargs}
        out = {}
        for split in (self.train_split, self.eval_split):
            path = data_dir / self.data_subdir / f"{split}.parquet"
            out[split] = {"sha256": identity.file_sha256(path), "rows": resolve.parquet_rows(path)} \
                if path.is_file() else {"missing": str(path)}
        return out

    def _source(self, data_dir: Path | None, split: str) -> str:
        return str(data_dir / self.data_subdir / f"{split}.parquet") if data_dir else \
            f"Hub dataset {self.hub_id} split {split}"

    def required_columns(self) -> list[str]:
        """The columns this task reads from every split."""
        return [self.label_column]

    def label_names_of(self, split) -> list[str]:
        """Class names, read from the data's own features (never a copy in code)."""
        return list(split.features[self.label_column].names)

    def head_config(self) -> dict:
        """from_pretrained arguments that give the model a head for this task's labels, named."""
        names = self.label_names
        return {"num_labels": len(names), "id2label": dict(enumerate(names)),
                "label2id": {n: i for i, n in enumerate(names)}}

    def load_data(self, data_dir: Path | None, budget: Budget) -> tuple[Any, Any]:
        """(train, eval) datasets, already cut to the budget."""
        ds = self.raw_splits(data_dir)
        try:
            self.label_names = self.label_names_of(ds[self.train_split])
        except (AttributeError, KeyError, TypeError) as e:
            raise DataError(f"{self._source(data_dir, self.train_split)}: its label column carries no class names "
                            f"(expected a datasets ClassLabel feature, found "
                            f"{ds[self.train_split].features.get(self.required_columns()[-1])})") from e
        train = subset(ds[self.train_split], budget.train_examples)
        evaluation = ds[self.eval_split]
        if budget.eval_examples is not None:
            evaluation = evaluation.select(range(min(budget.eval_examples, len(evaluation))))
        return train, evaluation

    # --- to implement per task kind -------------------------------------------------------------
    def load_model(self, path: str, **load_kwargs) -> tuple[torch.nn.Module, Any]:
        """(model, processor) where processor is a tokenizer or image processor."""
        raise NotImplementedError

    def encode(self, ds, processor, budget: Budget, train: bool) -> list[dict]:
        raise NotImplementedError

    def collate(self, examples: list[dict], processor) -> Batch:
        raise NotImplementedError

    def evaluate(self, model: torch.nn.Module, batches: list[Batch], device: torch.device) -> dict:
        raise NotImplementedError

    # --- shared defaults --------------------------------------------------------------------------
    def length(self, example: dict) -> int:
        return len(example["input_ids"])

    def real_tokens(self, batch: Batch) -> int:
        mask = batch.get("attention_mask")
        return int(mask.sum()) if mask is not None else 0

    def train_mode(self, model: torch.nn.Module) -> None:
        model.train()

    def after_method(self, model: torch.nn.Module) -> None:
        """Called right after the method wrapped the model: fix-ups the task's architecture needs."""

    def train_batches(self, examples: list[dict], processor, budget: Budget, seed: int) -> Iterator[Batch]:
        """Length-grouped, shuffled batches for `budget.steps` steps (padding is most of the cost)."""
        rng = random.Random(seed)
        total = budget.steps(len(examples))
        produced = 0
        while produced < total:
            for idx in length_grouped(list(map(self.length, examples)), budget.batch_size, rng):
                yield self.collate([examples[i] for i in idx], processor)
                produced += 1
                if produced == total:
                    return

    def eval_batches(self, examples: list[dict], processor, batch_size: int) -> list[Batch]:
        order = sorted(range(len(examples)), key=lambda i: self.length(examples[i]))
        return [self.collate([examples[i] for i in order[s:s + batch_size]], processor)
                for s in range(0, len(order), batch_size)]


def length_grouped(lengths: list[int], batch_size: int, rng: random.Random, pool: int = 50) -> list[list[int]]:
    """Shuffle, sort within pools of `pool` batches by length, cut into batches, shuffle batches."""
    idx = list(range(len(lengths)))
    rng.shuffle(idx)
    batches = []
    span = batch_size * pool
    for start in range(0, len(idx), span):
        chunk = sorted(idx[start:start + span], key=lambda i: lengths[i])
        batches += [chunk[s:s + batch_size] for s in range(0, len(chunk), batch_size)]
    rng.shuffle(batches)
    return batches


def to_device(batch: Batch, device) -> Batch:
    return {k: v.to(device) for k, v in batch.items()}


def subset(ds, n: int | None, seed: int = 0):
    """A fixed subset (same for every seed and method, so runs stay comparable)."""
    if n is None or n >= len(ds):
        return ds
    return ds.shuffle(seed=seed).select(range(n))
