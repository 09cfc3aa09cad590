"""Causal-LM tasks (`kind: causal-lm`): a decoder answers a prompt in words, and the answer is parsed back.

Two answer forms, chosen by the task's columns:
- a class as a word (`text` + `label`, e.g. sst2-gen): the answer is the class's word (`answers`), the headline is
  the accuracy of the *generated* answer after normalisation; the run also records the label-word log-likelihood
  accuracy (`ll_accuracy`: which answer word's first token the model ranks higher after the prompt) and the share
  of answers that are no class (`invalid_rate`).
- entities as text (`tokens` + `tags`, e.g. conll-gen): the answer lists a sentence's entities as
  `PER: John Smith; LOC: Paris` (`none` without one); the headline is micro F1 over (type, text) pairs
  (`span_f1`), with `invalid_rate` the share of answers of which no part parses.

Training puts the loss on the answer tokens only (the prompt's labels are -100: TRL's completion-only loss), with
the answer ending in the tokenizer's end-of-sequence token, so the model learns to stop. Evaluation pads on the
left and generates greedily, in batches, up to `max_new_tokens`. `forgetting` (the causal-LM loss on a fixed
sample of general text, after training minus before) is measured by the worker through `general_loss`.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

from suites import checks
from suites.base import Batch, Budget, LoadedModel, Task, to_device, token_logits

IGNORE = -100
NONE_ANSWER = "none"


class EvalBatch(dict):
    """Model inputs plus `gold` (each example's gold answer: a class index or a list of pairs), kept off the
    device: `to_device` builds a plain dict of the tensors."""
    gold: list


def normalise(text: str) -> str:
    """Lower case, first line only, punctuation and surrounding spaces stripped, inner spaces single."""
    first = text.strip().split("\n", 1)[0].lower()
    return " ".join(re.sub(r"[^\w\s:;'-]", " ", first).split())


def parse_label(text: str, words: list[str]) -> int:
    """The class whose answer word the generated text starts with (normalised); -1: none of them."""
    first = normalise(text).split(" ", 1)[0] if normalise(text) else ""
    lowered = [w.lower() for w in words]
    return lowered.index(first) if first in lowered else -1


def parse_spans(text: str, types: list[str]) -> tuple[list[str], bool]:
    """(the `TYPE: text` pairs that parse, whether the answer parsed at all). `none` is a valid empty answer; a
    part with an unknown type or no text is dropped; an answer none of whose parts parse is invalid."""
    answer = normalise(text)
    if answer == NONE_ANSWER:
        return [], True
    known = {t.lower(): t for t in types}
    pairs, parts = [], [p.strip() for p in answer.split(";") if p.strip()]
    for part in parts:
        kind, sep, span = part.partition(":")
        span = " ".join(span.split())
        if sep and kind.strip() in known and span:
            pairs.append(f"{known[kind.strip()]}: {span}")
    return list(dict.fromkeys(pairs)), bool(pairs)


def entity_pairs(tokens: list[str], tags: list[str]) -> list[str]:
    """The `TYPE: text` pairs of a tagged sentence (seqeval's entity reading of IOB tags), in order, once each."""
    from seqeval.metrics.sequence_labeling import get_entities
    pairs = [f"{kind}: {' '.join(tokens[start:end + 1])}" for kind, start, end in get_entities(list(tags))]
    return list(dict.fromkeys(pairs))


def span_scores(gold: list[list[str]], pred: list[list[str]]) -> dict:
    tp = sum(len(set(g) & set(p)) for g, p in zip(gold, pred))
    n_pred, n_gold = sum(len(set(p)) for p in pred), sum(len(set(g)) for g in gold)
    precision = tp / n_pred if n_pred else 0.0
    recall = tp / n_gold if n_gold else 0.0
    f1 = 2 * tp / (n_pred + n_gold) if n_pred + n_gold else 0.0
    return {"span_f1": f1, "span_precision": precision, "span_recall": recall}


@dataclass
class CausalLMTask(Task):
    kind = "causal-lm"
    text_column: str | None = None  # class answers: the text and its class
    tokens_column: str | None = None  # entity answers: the words and their IOB tags
    tags_column: str | None = None
    prompt: str = "{text}\n"  # {text} (class answers) or {sentence} (entity answers: the words joined)
    answer: str = " {answer}"  # {answer}: the class's word, or the entity list
    answers: dict = field(default_factory=dict)  # class name -> answer word (default: the class name)
    chat_template: bool = False  # wrap the prompt in the tokenizer's chat template as a user turn
    max_new_tokens: int = 8
    forgetting: dict = field(default_factory=dict)  # general text: {hub, config, local, split, column, examples}
    latency_prompt_tokens: int = 64  # batch-1 time to first token is timed on a prompt this long
    latency_new_tokens: int = 16  # ... and time per output token over this many cached decode steps
    peft_task_type: str = "CAUSAL_LM"

    # --- what the data is --------------------------------------------------------------------------------------
    @property
    def entities(self) -> bool:
        return bool(self.tags_column)

    @property
    def per_word(self) -> bool:  # noqa: D401 - the base class reads it as an attribute
        return self.entities

    def class_column(self) -> str:
        return self.tags_column if self.entities else self.label_column

    def required_columns(self) -> list[str]:
        return [self.tokens_column, self.tags_column] if self.entities else [self.text_column, self.label_column]

    def check_split(self, split, where: str) -> None:
        if self.entities:
            checks.word_lists(split, self.tokens_column, self.tags_column, where)
        else:
            checks.text(split, self.text_column, where)

    def answer_words(self, label_names: list[str]) -> list[str]:
        return [str(self.answers.get(n, n)) for n in label_names]

    def entity_types(self, label_names: list[str]) -> list[str]:
        return list(dict.fromkeys(n.split("-", 1)[1] for n in label_names if "-" in n))

    # --- model and encoding -----------------------------------------------------------------------------------
    def head_config(self, label_names):
        return {}

    def load_model(self, path: str, label_names: list[str], **load_kwargs) -> LoadedModel:
        from transformers import AutoModelForCausalLM, AutoTokenizer
        model = AutoModelForCausalLM.from_pretrained(path, **load_kwargs)
        tokenizer = AutoTokenizer.from_pretrained(path)
        if tokenizer.pad_token_id is None:  # pads are masked out; the end-of-sequence token serves
            tokenizer.pad_token = tokenizer.eos_token
        model.generation_config.pad_token_id = tokenizer.pad_token_id
        self._tokenizer = tokenizer  # evaluation decodes with it (predict receives the model alone)
        return LoadedModel(model, tokenizer)

    def texts(self, row: dict, label_names: list[str]) -> tuple[str, str, object]:
        """(prompt, answer, gold) of one row: gold is the class index or the entity pairs."""
        if self.entities:
            tags = [label_names[t] for t in row[self.tags_column]]
            pairs = entity_pairs(row[self.tokens_column], tags)
            sentence = detokenise(row[self.tokens_column])
            answer = "; ".join(pairs) if pairs else NONE_ANSWER
            gold = parse_spans(answer, self.entity_types(label_names))[0]  # as an answer is read: normalised
            return self.prompt.format(sentence=sentence, text=sentence), self.answer.format(answer=answer), gold
        word = self.answer_words(label_names)[row[self.label_column]]
        return self.prompt.format(text=row[self.text_column]), self.answer.format(answer=word), row[self.label_column]

    def prompt_ids(self, tokenizer, prompt: str) -> list[int]:
        if not self.chat_template:
            return tokenizer(prompt, add_special_tokens=False)["input_ids"]
        ids = tokenizer.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True,
                                            tokenize=True)
        return list(ids["input_ids"] if isinstance(ids, dict) or hasattr(ids, "keys") else ids)

    def encode(self, ds, tokenizer, budget: Budget, train: bool, eval_max_length: int | None = None) -> list[dict]:
        from bench.core.cache import cached
        label_names = self.names_of(ds)

        def build() -> list[dict]:
            out = []
            for row in ds:
                prompt, answer, gold = self.texts(row, label_names)
                ids = self.prompt_ids(tokenizer, prompt)
                if not train:  # the prompt's end (the cue to answer) is kept when it must be cut
                    out.append({"input_ids": ids[-budget.max_length:], "gold": gold})
                    continue
                target = tokenizer(answer, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
                ids = ids[-max(1, budget.max_length - len(target)):]
                out.append({"input_ids": ids + target, "labels": [IGNORE] * len(ids) + target})
            return out
        params = {"encode": "causal-lm-v1", "columns": self.required_columns(), "max_length": budget.max_length,
                  "train": train, "prompt": self.prompt, "answer": self.answer, "answers": self.answers,
                  "chat_template": self.chat_template}
        return cached(ds, tokenizer, params, build, f"{len(ds)} {'train' if train else 'eval'} prompts")

    def names_of(self, ds) -> list[str]:
        feature = ds.features[self.class_column()]
        return list((feature.feature if self.entities else feature).names)

    # --- batches ----------------------------------------------------------------------------------------------
    def collate(self, examples: list[dict], tokenizer, left: bool = False) -> Batch:
        """Pad to the longest: training on the right (labels -100 there), evaluation on the left (generation
        continues from the last position of every row)."""
        import torch
        width = max(len(e["input_ids"]) for e in examples)
        pad = tokenizer.pad_token_id
        ids, mask, labels = [], [], []
        for e in examples:
            n = width - len(e["input_ids"])
            fill = (lambda row, v: [v] * n + row) if left else (lambda row, v: row + [v] * n)
            ids.append(fill(list(e["input_ids"]), pad))
            mask.append(fill([1] * len(e["input_ids"]), 0))
            if "labels" in e:
                labels.append(fill(list(e["labels"]), IGNORE))
        batch = {"input_ids": torch.tensor(ids), "attention_mask": torch.tensor(mask)}
        if labels:
            batch["labels"] = torch.tensor(labels)
        return batch

    def eval_batches(self, examples: list[dict], tokenizer, batch_size: int) -> list[Batch]:
        order = self.eval_order(examples)
        batches = []
        for s in range(0, len(order), batch_size):
            chunk = [examples[i] for i in order[s:s + batch_size]]
            batch = EvalBatch(self.collate(chunk, tokenizer, left=True))
            batch.gold = [e["gold"] for e in chunk]
            batches.append(batch)
        return batches

    def loss(self, logits, labels):
        """Cross-entropy of each next token on the answer positions (labels shifted by one; -100 elsewhere)."""
        import torch.nn.functional as F
        logits = token_logits(logits, labels)  # an input prompt's virtual positions come first
        return F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]).float(), labels[:, 1:].reshape(-1),
                               ignore_index=IGNORE)

    # --- evaluation -------------------------------------------------------------------------------------------
    def predict(self, model, batches: list[Batch], device, label_names: list[str]) -> tuple[dict, dict]:
        """Greedy generation per batch; the answers parsed back. Class answers are also scored by the label words'
        log-likelihood after the prompt (one forward pass, timed as the evaluation's forward throughput)."""
        import torch
        tokenizer = self.tokenizer_of(model)
        golds, preds, texts, ll = [], [], [], []
        words = self.answer_words(label_names)
        first_ids = [tokenizer(self.answer.format(answer=w), add_special_tokens=False)["input_ids"][0] for w in words]
        types = self.entity_types(label_names)
        with torch.inference_mode():
            for batch in batches:
                inputs = to_device({k: v for k, v in batch.items()}, device)
                if not self.entities:
                    last = model(**inputs).logits[:, -1, :].float()
                    ll += last[:, first_ids].argmax(-1).tolist()
                out = model.generate(**inputs, max_new_tokens=self.max_new_tokens, do_sample=False,
                                     pad_token_id=tokenizer.pad_token_id)
                new = out[:, inputs["input_ids"].shape[1]:]
                for row, gold in zip(new, batch.gold):
                    text = tokenizer.decode(row, skip_special_tokens=True)
                    texts.append(text)
                    golds.append(gold)
                    preds.append(parse_spans(text, types)[0] if self.entities else parse_label(text, words))
        predictions = {"gold": golds, "pred": preds, "text": texts}
        if ll:
            predictions["ll_pred"] = ll
        return predictions, {}

    def tokenizer_of(self, model):
        """The tokenizer evaluation decodes with: the one `load_model` loaded."""
        return self._tokenizer

    def score(self, predictions: dict) -> dict:
        import numpy as np
        if self.entities:
            gold, pred = predictions["gold"], predictions["pred"]
            valid = [bool(p) or normalise(t) == NONE_ANSWER for p, t in zip(pred, predictions["text"])]
            return {**span_scores([list(g) for g in gold], [list(p) for p in pred]),
                    "invalid_rate": 1 - sum(valid) / len(valid) if valid else 0.0}
        gold, pred = np.asarray(predictions["gold"]), np.asarray(predictions["pred"])
        out = {"accuracy": float((pred == gold).mean()), "invalid_rate": float((pred < 0).mean()),
               "majority_rate": float(np.bincount(gold).max() / len(gold))}
        if "ll_pred" in predictions:
            out["ll_accuracy"] = float((np.asarray(predictions["ll_pred"]) == gold).mean())
        return out

    # --- forgetting -------------------------------------------------------------------------------------------
    def general_texts(self, data_dir) -> list[str]:
        """The fixed sample of general text whose loss `forgetting` compares (the first `examples` rows of the
        declared split, detokenised when they are word lists)."""
        if not self.forgetting:
            return []
        from bench.core import resolve
        f = self.forgetting
        column, split = f["column"], f.get("split", "train")
        ds = resolve.load_splits(data_dir if f.get("local") else None, f.get("local", ""), [split], f.get("hub", ""),
                                 f.get("config"), columns=(column,),
                                 **{k: f[k] for k in ("revision", "data_dir") if f.get(k)})[split]
        rows = ds.select(range(min(int(f.get("examples", 200)), len(ds))))[column]
        return [detokenise(r) if isinstance(r, list) else str(r) for r in rows]

    def general_loss(self, model, tokenizer, texts: list[str], device, batch_size: int = 16) -> float:
        """Mean causal-LM loss in nats per predicted token over `texts` (each text alone, right-padded)."""
        import torch
        import torch.nn.functional as F
        total, count = 0.0, 0
        with torch.inference_mode():
            for s in range(0, len(texts), batch_size):
                enc = [{"input_ids": tokenizer(t, add_special_tokens=False)["input_ids"][:256]}
                       for t in texts[s:s + batch_size]]
                enc = [{**e, "labels": e["input_ids"]} for e in enc if len(e["input_ids"]) > 1]
                if not enc:
                    continue
                batch = to_device(self.collate(enc, tokenizer), device)
                logits = token_logits(model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits,
                                      batch["labels"]).float()
                labels = batch["labels"][:, 1:]
                loss = F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), labels.reshape(-1),
                                       ignore_index=IGNORE, reduction="sum")
                total += float(loss)
                count += int((labels != IGNORE).sum())
        return total / count if count else float("nan")


PUNCTUATION = re.compile(r" ([.,;:!?%)\]}'])|([(\[{$]) ")


def detokenise(words: list[str]) -> str:
    """Pre-split words back into running text: no space before closing punctuation or after opening brackets."""
    return PUNCTUATION.sub(lambda m: m.group(1) or m.group(2), " ".join(words))
