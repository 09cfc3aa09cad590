"""Sentence classification with a transformers encoder (SST-2 and the smoke sentiment task)."""
from __future__ import annotations

from dataclasses import dataclass

from suites.base import Batch, Budget, Task, to_device


@dataclass
class TextClassificationTask(Task):
    text_column: str = "sentence"
    peft_task_type: str = "SEQ_CLS"  # what peft's prompt-based methods need to know

    def required_columns(self) -> list[str]:
        return [self.text_column, self.label_column]

    def load_model(self, path: str, **load_kwargs):
        from transformers import AutoModelForSequenceClassification, AutoTokenizer
        model = AutoModelForSequenceClassification.from_pretrained(path, **self.head_config(), **load_kwargs)
        return model, AutoTokenizer.from_pretrained(path)

    def encode(self, ds, tokenizer, budget: Budget, train: bool) -> list[dict]:
        enc = tokenizer(list(ds[self.text_column]), truncation=True, max_length=budget.max_length)
        return [{"input_ids": ids, "attention_mask": mask, "labels": label}
                for ids, mask, label in zip(enc["input_ids"], enc["attention_mask"], list(ds[self.label_column]))]

    def collate(self, examples: list[dict], tokenizer) -> Batch:
        return dict(tokenizer.pad(examples, return_tensors="pt"))

    def evaluate(self, model, batches: list[Batch], device) -> dict:
        import torch
        preds, golds = [], []
        with torch.inference_mode():
            for batch in batches:
                batch = to_device(batch, device)
                golds.append(batch.pop("labels").cpu())
                preds.append(model(**batch).logits.argmax(-1).cpu())
        pred, gold = torch.cat(preds), torch.cat(golds)
        # The majority-class rate is what a constant predictor scores: near it, a run learned nothing.
        return {"accuracy": float((pred == gold).float().mean()),
                "majority_rate": float(torch.bincount(gold).max() / len(gold))}
