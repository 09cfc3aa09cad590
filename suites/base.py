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
from suites import checks


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
    kind = ""  # each kind's name in task files (suites/taskfile.py KINDS)
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
    # A task file's own data (suites/taskfile.py): split role (train, eval, dev) -> a file, glob or folder, read
    # with datasets' builders (suites/sources.py) instead of the data dir / Hub pair above.
    data_files: dict[str, str] = field(default_factory=dict)
    labels: list[str] | None = None  # declared class names, when the data's own feature carries none
    source: str = ""  # the task file this task was read from ("" for a task in code)
    digest: str = ""  # sha256 of what the task file declares (its `note` and `description` left out)
    tuned_folder: str = ""  # where `bench tune` writes this task's rates ("": suites/tuned/)

    def budget(self, name: str) -> Budget:
        if not self.budgets and self.source:  # a task file without budgets: sized from its training split
            checked = next(iter(self.__dict__.get("_checked", {}).values()), None) or self.check(None, "dev", deep=False)
            self.budgets = default_budgets(self.kind, checked["rows"][self.train_split])
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
        if self.data_files:
            from suites import sources
            ds = sources.load(self.data_files, splits or self.splits())
            for role, split in ds.items():
                checks.present(split, self.required_columns(), self._source(data_dir, role))
            return ds
        return resolve.load_splits(data_dir if self.data_subdir else None, self.data_subdir, splits or self.splits(), self.hub_id,
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
        if (path / "gguf.json").is_file():  # converted from a GGUF file: that file is the identity
            import json
            made = json.loads((path / "gguf.json").read_text())
            return {"ref": ref, "gguf_sha256": made["sha256"], "dequantised_from": made["file_type"]}
        weights = sorted(p for pattern in resolve.WEIGHT_FILES for p in path.glob(pattern))
        return {"ref": ref, "weights_sha256": {p.name: identity.file_sha256(p) for p in weights}}

    def data_identity(self, data_dir: Path | None, score_on: str = "eval") -> dict:
        """The data as a run's configuration records it: each file's hash and row count, or the Hub dataset."""
        if self.data_files:
            from suites import sources
            rows = self.check(data_dir, score_on)["rows"]
            return {role: {**sources.identity_of(self.data_files[role]), "rows": rows[role]}
                    for role in self.splits(score_on)}
        if data_dir is None or not self.data_subdir:
            if Path(self.hub_id).is_dir():  # a dataset folder in the Hub's layout, on this machine
                from suites import sources
                return {"folder": sources.identity_of(self.hub_id), "hub_config": self.hub_config,
                        "rows": self.check(None, score_on)["rows"]}
            return {"hub_id": self.hub_id, "hub_config": self.hub_config, **self.hub_kwargs}
        out = {}
        for split in self.splits(score_on):
            path = data_dir / self.data_subdir / f"{split}.parquet"
            out[split] = {"sha256": identity.file_sha256(path), "rows": resolve.parquet_rows(path)} \
                if path.is_file() else {"missing": str(path)}
        return out

    def _source(self, data_dir: Path | None, split: str) -> str:
        if self.data_files:
            return f"{self.data_files[split]} (data.{split} of {self.source or self.name})"
        if data_dir is None or not self.data_subdir:
            return f"{'dataset folder' if Path(self.hub_id).is_dir() else 'Hub dataset'} {self.hub_id} split {split}"
        return str(data_dir / self.data_subdir / f"{split}.parquet") if data_dir else \
            f"Hub dataset {self.hub_id} split {split}"

    def required_columns(self) -> list[str]:
        """The columns this task reads from every split."""
        return [self.label_column]

    # The column that holds the classes, and whether it holds one per word (token classification).
    per_word = False

    def class_column(self) -> str:
        return self.label_column

    def check_split(self, split, where: str) -> None:
        """Kind-specific checks of one split's columns (one-line DataError naming `where`)."""

    def labelled(self, ds, data_dir: Path | None):
        """(ds with class indices, class names): from the training split's ClassLabel feature (never a copy in code),
        else the task file's `labels`, else the training split's sorted distinct values (suites/checks.py)."""
        where = {role: self._source(data_dir, role) for role in ds}
        for role, split in ds.items():
            checks.not_empty(split, where[role])
            self.check_split(split, where[role])
        return checks.labelled(ds, self.class_column(), self.train_split, where, self.labels, self.per_word)

    def check(self, data_dir: Path | None, score_on: str = "eval", deep: bool = True) -> dict:
        """Read and check every split a run of this task reads, before any model loads: {"rows": {split: n},
        "labels": names, "warnings": [...]}. With `deep`, a task file's data is also checked example by example
        (images decode, no file twice): the CLI does that once per grid; a worker needs only the rows. Memoised per
        (data dir, score_on) for the life of the process (a task file's own data ignores the data dir)."""
        key = ("" if self.data_files else str(data_dir), score_on)
        memo = self.__dict__.setdefault("_checked", {})
        if key not in memo or deep and not memo[key]["deep"]:
            ds, names = self.labelled(self.raw_splits(data_dir, self.splits(score_on)), data_dir)
            if not self.dev_split:
                checks.dev_carve(len(ds[self.train_split]), self.dev_examples, self._source(data_dir, self.train_split))
            if deep and self.data_files:
                for role, split in ds.items():
                    self.check_deep(split, self._source(data_dir, role))
            warning = checks.imbalance(ds[self.train_split], self.class_column(), names, self.per_word)
            memo[key] = {"rows": {role: len(split) for role, split in ds.items()}, "labels": names,
                         "warnings": [warning] if warning else [], "deep": deep}
        return memo[key]

    def check_deep(self, split, where: str) -> None:
        """Checks that read every example (images decode, no file twice): task files only, once per grid."""

    def head_config(self, label_names: list[str]) -> dict:
        """from_pretrained arguments that give the model a head for these labels, named."""
        return {"num_labels": len(label_names), "id2label": dict(enumerate(label_names)),
                "label2id": {n: i for i, n in enumerate(label_names)}}

    def load_data(self, data_dir: Path | None, budget: Budget, score_on: str = "eval") -> TaskData:
        """The training split and the scored one (the evaluation split or the dev set), cut to the budget."""
        ds, label_names = self.labelled(self.raw_splits(data_dir, self.splits(score_on)), data_dir)
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


def default_budgets(kind: str, train_rows: int) -> dict[str, Budget]:
    """Budgets for a file that declares none, from the training split's size: `quick` trains on up to 4,000 rows for
    at least 100 steps (more epochs on small data, at most 10), `full` on everything for 3 epochs (at least 100
    steps), `smoke` on 64 rows for seconds."""
    image = kind == "image-classification"
    length = 160 if image else 128
    batch = 32 if image else 16
    quick_rows = min(train_rows, 4000)

    def epochs(rows: int, at_least: float) -> float:
        return float(min(10, max(at_least, math.ceil(100 * batch / max(rows, 1)))))
    return {"smoke": Budget(train_examples=min(64, train_rows), batch_size=16, max_length=64 if not image else 96,
                            eval_examples=64, latency_samples=5, untimed_steps=1, log_every=1),
            "quick": Budget(train_examples=quick_rows, epochs=epochs(quick_rows, 1), batch_size=batch,
                            max_length=length, latency_samples=50),
            "full": Budget(train_examples=None, epochs=epochs(train_rows, 3), batch_size=batch, max_length=length,
                           latency_samples=100)}
