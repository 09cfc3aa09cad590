"""Sentence classification with a transformers encoder (SST-2 and the smoke sentiment task)."""
from __future__ import annotations

from dataclasses import dataclass

from suites import checks
from suites.base import Batch, Budget, LoadedModel, Task, to_device


@dataclass
class TextClassificationTask(Task):
    kind = "text-classification"
    text_column: str = "sentence"
    peft_task_type: str = "SEQ_CLS"  # what peft's prompt-based methods need to know

    text_pair_column: str | None = None  # the second text of a pair task (premise/hypothesis, query/passage)

    def required_columns(self) -> list[str]:
        return [self.text_column] + ([self.text_pair_column] if self.text_pair_column else []) + [self.label_column]

    def check_split(self, split, where: str) -> None:
        for column in self.required_columns()[:-1]:
            checks.text(split, column, where)

    def load_model(self, path: str, label_names: list[str], **load_kwargs) -> LoadedModel:
        from transformers import AutoModelForSequenceClassification, AutoTokenizer
        model = AutoModelForSequenceClassification.from_pretrained(path, **self.head_config(label_names),
                                                                   **load_kwargs)
        return LoadedModel(model, AutoTokenizer.from_pretrained(path))

    def encode(self, ds, tokenizer, budget: Budget, train: bool, eval_max_length: int | None = None) -> list[dict]:
        from bench.core.cache import cached

        def build() -> list[dict]:
            pair = [list(ds[self.text_pair_column])] if self.text_pair_column else []
            enc = tokenizer(list(ds[self.text_column]), *pair, truncation=True, max_length=budget.max_length)
            return [{"input_ids": ids, "attention_mask": mask, "labels": label} for ids, mask, label
                    in zip(enc["input_ids"], enc["attention_mask"], list(ds[self.label_column]))]
        params = {"encode": "text-v1", "columns": self.required_columns(),
                  "max_length": budget.max_length}
        return cached(ds, tokenizer, params, build, f"{len(ds)} {'train' if train else 'eval'} sentences")

    def collate(self, examples: list[dict], tokenizer) -> Batch:
        return dict(tokenizer.pad(examples, return_tensors="pt"))

    def predict(self, model, batches: list[Batch], device, label_names: list[str]) -> tuple[dict, dict]:
        """Per example, in batch order: gold class, predicted class and its probability (class indices, so
        `label_names` is not needed); no extra metrics. The class names stay out: the predictions are saved one
        row per example, which a K-long list cannot join, so `score` names per-class figures by index."""
        import torch
        preds, golds, probs = [], [], []
        with torch.inference_mode():
            for batch in batches:
                batch = to_device(batch, device)
                golds.append(batch.pop("labels").cpu())
                p = model(**batch).logits.float().softmax(-1).cpu()
                conf, pred = p.max(-1)
                preds.append(pred)
                probs.append(conf)
        return {"gold": torch.cat(golds).tolist(), "pred": torch.cat(preds).tolist(),
                "score": torch.cat(probs).tolist()}, {}

    def score(self, predictions: dict) -> dict:
        """Accuracy; macro F1 (sklearn's: the mean of the per-class F1 over the classes found in gold or
        predictions, 0 for a class never predicted correctly); each of those classes' precision, recall and F1,
        named `predictions["classes"][c]` where the predictions carry the class names, else by class index `c`
        (saved predictions hold indices only); and what a constant predictor of the commonest gold class
        scores: `majority_rate` for accuracy, `majority_macro_f1` (2p / (1 + p) / K: F1 2p / (1 + p) on its class
        of share p, 0 on the K - 1 other gold classes) for macro F1."""
        import numpy as np
        gold, pred = np.asarray(predictions["gold"]), np.asarray(predictions["pred"])
        counts = np.bincount(gold)
        # The majority-class rate is what a constant predictor scores: near it, a run learned nothing.
        out = {"accuracy": float((pred == gold).mean()),
               "majority_rate": float(counts.max() / len(gold))}
        classes = np.union1d(gold, pred)
        g, p = np.searchsorted(classes, gold), np.searchsorted(classes, pred)
        tp = np.bincount(g[gold == pred], minlength=len(classes))
        predicted, actual = np.bincount(p, minlength=len(classes)), np.bincount(g, minlength=len(classes))
        f1 = 2 * tp / (predicted + actual)  # every class here was predicted or is gold
        out["macro_f1"] = float(f1.mean())
        share = out["majority_rate"]
        out["majority_macro_f1"] = 2 * share / (1 + share) / int((counts > 0).sum())
        names = predictions.get("classes")
        for c, t, n_pred, n_gold, f in zip(classes.tolist(), tp, predicted, actual, f1):
            name = names[c] if names is not None else c
            out[f"precision_{name}"] = float(t / n_pred) if n_pred else 0.0
            out[f"recall_{name}"] = float(t / n_gold) if n_gold else 0.0
            out[f"f1_{name}"] = float(f)
        return out
