"""What every task provides to the shared runner: data, model, batching and its metric.

A task never decides what trains (that is the method's job) and never runs the loop (bench/execute/train.py).
"""
from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from bench.core import resolve
from bench.core.errors import DataError, SkipRun, UsageError
from bench.results import identity


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
    untimed_steps: int = 3  # first steps left out of throughput (allocator, caches)
    log_every: int = 10  # record the training loss every N steps

    def steps(self, n_train: int) -> int:
        return max(1, math.ceil(self.epochs * math.ceil(n_train / self.batch_size)))


Batch = dict  # input name -> torch.Tensor (torch is imported where it is used: naming a task needs none)


@dataclass(frozen=True)
class TaskData:
    """What `Task.load_data` read: the splits a run uses, cut to its budget, and the class names of the data's
    own label feature (the model's head and the predictions are named with them)."""

    train: Any
    scored: Any  # the evaluation split, or the dev set (tuning trials, early stopping)
    label_names: list[str]


@dataclass(frozen=True)
class LoadedModel:
    """What `Task.load_model` returns. `eval_max_length`: where evaluation inputs are cut when that is not the
    budget's `max_length` (token classification: the model's own position limit, so no gold word is cut
    needlessly); None otherwise."""

    model: Any
    processor: Any  # a tokenizer or an image preprocessing
    eval_max_length: int | None = None


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
    # Per-method learning rates this task needs whatever the tuning (the smoke tasks' random tiny models);
    # real tasks get theirs from `bench tune` (suites/tuned/), never from a look at the evaluation split.
    lr_overrides: dict[str, float] = field(default_factory=dict)
    # Where the data comes from: `<data dir>/<data_subdir>/<split>.parquet`, else the Hub dataset.
    data_subdir: str = ""
    hub_id: str = ""
    hub_config: str | None = None
    hub_kwargs: dict = field(default_factory=dict)  # more load_dataset arguments (revision, data_dir)
    train_split: str = "train"
    # The dev split tuning and early stopping score on; the evaluation split is scored only by `bench run`.
    # A task with its own dev split names it; otherwise `dev_examples` are carved from the training data,
    # disjoint from every budget's training subset (see `load_data`).
    dev_split: str | None = None
    dev_examples: int = 1000
    label_column: str = "label"
    # A caveat every reader of this task's numbers should see; reports print it under the section title.
    note: str = ""

    def budget(self, name: str) -> Budget:
        if name not in self.budgets:
            raise UsageError(f"unknown budget {name!r} for task {self.name} (valid: {', '.join(self.budgets)})")
        return self.budgets[name]

    # --- data and model resolution, shared by every task kind -------------------------------------
    def resolve_model(self, ref: str, model_dir: Path | None) -> str:
        return resolve.model_path(ref, model_dir, self.model_local_names)

    def splits(self, score_on: str = "eval") -> list[str]:
        """The splits a run reads: training data, plus the evaluation split (`eval`) or the dev split (`dev`;
        none extra when the dev set is carved from the training data). Tuning never opens the evaluation split."""
        if score_on not in ("eval", "dev"):
            raise UsageError(f"unknown split to score on {score_on!r} (valid: eval, dev)")
        extra = self.eval_split if score_on == "eval" else self.dev_split
        return [self.train_split] + ([extra] if extra else [])

    def dev_description(self, rows: int | None = None) -> str:
        if self.dev_split:
            return f"the {self.dev_split} split" + (f" ({rows} examples)" if rows is not None else "")
        return f"{rows if rows is not None else self.dev_examples} examples carved from {self.train_split} " \
               f"(never trained on)"

    def raw_splits(self, data_dir: Path | None, splits: list[str] | None = None):
        return resolve.load_splits(data_dir, self.data_subdir, splits or self.splits(), self.hub_id,
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

    def data_identity(self, data_dir: Path | None, score_on: str = "eval") -> dict:
        """The data as a run's configuration records it: each file's hash and row count, or the Hub dataset."""
        if data_dir is None:
            return {"hub_id": self.hub_id, "hub_config": self.hub_config, **self.hub_kwargs}
        out = {}
        for split in self.splits(score_on):
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

    def head_config(self, label_names: list[str]) -> dict:
        """from_pretrained arguments that give the model a head for these labels, named."""
        return {"num_labels": len(label_names), "id2label": dict(enumerate(label_names)),
                "label2id": {n: i for i, n in enumerate(label_names)}}

    def load_data(self, data_dir: Path | None, budget: Budget, score_on: str = "eval") -> TaskData:
        """The training split and the scored one (the evaluation split or the dev set), cut to the budget."""
        ds = self.raw_splits(data_dir, self.splits(score_on))
        try:
            label_names = self.label_names_of(ds[self.train_split])
        except (AttributeError, KeyError, TypeError) as e:
            raise DataError(f"{self._source(data_dir, self.train_split)}: its label column carries no class names "
                            f"(expected a datasets ClassLabel feature, found "
                            f"{ds[self.train_split].features.get(self.required_columns()[-1])})") from e
        n = budget.train_examples
        if self.dev_split:
            train, carved = subset(ds[self.train_split], n), None
        else:  # the pool is a fixed shuffle already: its first rows are the budget's subset
            pool, carved = split_off_dev(ds[self.train_split], self.dev_examples)
            train = pool if n is None or n >= len(pool) else pool.select(range(n))
        evaluation = ds[self.eval_split] if score_on == "eval" else ds[self.dev_split] if self.dev_split else carved
        if budget.eval_examples is not None:
            evaluation = evaluation.select(range(min(budget.eval_examples, len(evaluation))))
        return TaskData(train, evaluation, label_names)

    # --- to implement per task kind -------------------------------------------------------------
    def load_model(self, path: str, label_names: list[str], **load_kwargs) -> LoadedModel:
        """The model with a head for `label_names` (from `load_data`), and its tokenizer or image processor."""
        raise NotImplementedError

    def encode(self, ds, processor, budget: Budget, train: bool, eval_max_length: int | None = None) -> list[dict]:
        """Model-ready examples; `eval_max_length` is `LoadedModel.eval_max_length` (less any positions the
        method's own tokens take), for the task kinds that cut evaluation inputs there."""
        raise NotImplementedError

    def collate(self, examples: list[dict], processor) -> Batch:
        raise NotImplementedError

    def predict(self, model: torch.nn.Module, batches: list[Batch], device: torch.device,
                label_names: list[str]) -> tuple[dict, dict]:
        """({"gold": [...], "pred": [...], maybe "score": [...]} per example in batch order, extra metrics)."""
        raise NotImplementedError

    def score(self, predictions: dict) -> dict:
        """The task's metrics from predictions (so saved predictions can be re-scored without the model)."""
        raise NotImplementedError

    # --- shared defaults --------------------------------------------------------------------------
    def length(self, example: dict) -> int:
        return len(example["input_ids"])

    def real_tokens(self, batch: Batch) -> int:
        mask = batch.get("attention_mask")
        return int(mask.sum()) if mask is not None else 0

    def train_mode(self, model: torch.nn.Module) -> None:
        model.train()

    def loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """The task's own loss, comparable across methods (a method's output may add terms, e.g. AdaLoRA's
        penalty): cross-entropy for sequence ([B, C] vs [B]) and token ([B, T, C] vs [B, T]) classification."""
        import torch.nn.functional as F
        return F.cross_entropy(token_logits(logits, labels).reshape(-1, logits.shape[-1]).float(),
                               labels.reshape(-1), ignore_index=-100)

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

    def eval_order(self, examples: list[dict]) -> list[int]:
        """The order evaluation batches hold the examples in; predictions are mapped back to example indices
        with it. By length, to pad little; longest first, so the first batch grows the heap to its largest and
        the others reuse it: shortest first, each longer batch found no freed block big enough and the heap grew
        batch by batch (CoNLL full fine-tuning: evaluation's RSS growth 618 -> 345 MB, see README)."""
        return sorted(range(len(examples)), key=lambda i: -self.length(examples[i]))

    def eval_batches(self, examples: list[dict], processor, batch_size: int) -> list[Batch]:
        order = self.eval_order(examples)
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


def token_logits(logits, labels_or_ids):
    """A token classifier's logits for the input's own positions: an input prompt (prompt tuning, P-tuning)
    prepends virtual tokens, whose logits come first."""
    extra = logits.shape[1] - labels_or_ids.shape[1] if logits.dim() == 3 else 0
    return logits[:, extra:] if extra > 0 else logits


def to_device(batch: Batch, device) -> Batch:
    return {k: v.to(device) for k, v in batch.items()}


def split_off_dev(ds, n_dev: int, seed: int = 0):
    """(training pool, dev set): a fixed shuffle; the dev set is its last `n_dev` rows (at most a fifth of the
    data). A budget's training subset is the pool's first rows, so the quick subsets are those of a
    shuffle of the whole split, as before dev sets were carved, and never meet the dev set."""
    n_dev = min(n_dev, len(ds) // 5)
    shuffled = ds.shuffle(seed=seed)
    return shuffled.select(range(len(ds) - n_dev)), shuffled.select(range(len(ds) - n_dev, len(ds)))


def subset(ds, n: int | None, seed: int = 0):
    """A fixed subset of `n` rows (the same for every seed and method): the first `n` of a shuffle with `seed`."""
    if n is None or n >= len(ds):
        return ds
    return ds.shuffle(seed=seed).select(range(n))
