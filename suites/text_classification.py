"""Sentence classification with a transformers encoder (SST-2 and the smoke sentiment task)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from bench import resolve
from suites.base import Batch, Budget, Task, subset, to_device


@dataclass
class TextClassificationTask(Task):
    data_subdir: str = ""
    hub_id: str = ""
    hub_config: str | None = None
    train_split: str = "train"
    text_column: str = "sentence"
    label_column: str = "label"

    def resolve_model(self, ref: str, model_dir: Path | None) -> str:
        return resolve.model_path(ref, model_dir, self.model_local_names)

    def raw_splits(self, data_dir: Path | None):
        return resolve.load_splits(data_dir, self.data_subdir, [self.train_split, self.eval_split],
                                   self.hub_id, self.hub_config)

    def load_data(self, data_dir: Path | None, budget: Budget):
        ds = self.raw_splits(data_dir)
        self.label_names = ds[self.train_split].features[self.label_column].names
        train = subset(ds[self.train_split], budget.train_examples)
        evaluation = ds[self.eval_split]
        if budget.eval_examples is not None:
            evaluation = evaluation.select(range(min(budget.eval_examples, len(evaluation))))
        return train, evaluation

    def load_model(self, path: str, **load_kwargs):
        names = self.label_names
        model = AutoModelForSequenceClassification.from_pretrained(
            path, num_labels=len(names), id2label=dict(enumerate(names)),
            label2id={n: i for i, n in enumerate(names)}, **load_kwargs)
        return model, AutoTokenizer.from_pretrained(path)

    def encode(self, ds, tokenizer, budget: Budget, train: bool) -> list[dict]:
        enc = tokenizer(list(ds[self.text_column]), truncation=True, max_length=budget.max_length)
        return [{"input_ids": ids, "attention_mask": mask, "labels": label}
                for ids, mask, label in zip(enc["input_ids"], enc["attention_mask"], list(ds[self.label_column]))]

    def collate(self, examples: list[dict], tokenizer) -> Batch:
        return dict(tokenizer.pad(examples, return_tensors="pt"))

    @torch.inference_mode()
    def evaluate(self, model, batches: list[Batch], device: torch.device) -> dict:
        preds, golds = [], []
        for batch in batches:
            batch = to_device(batch, device)
            golds.append(batch.pop("labels").cpu())
            preds.append(model(**batch).logits.argmax(-1).cpu())
        pred, gold = torch.cat(preds), torch.cat(golds)
        # The majority-class rate is what a constant predictor scores: near it, a run learned nothing.
        return {"accuracy": float((pred == gold).float().mean()),
                "majority_rate": float(torch.bincount(gold).max() / len(gold))}
