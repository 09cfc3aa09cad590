"""Token classification (NER) with a transformers encoder: CoNLL-2003 and the smoke NER task.

Words become word pieces; only the first piece of each word carries the word's label (the rest get
-100, which the loss ignores), and the prediction at that piece is the word's prediction.

Evaluation never drops a gold label: evaluation batches carry every word's gold tag, so a word whose
pieces were cut by truncation (or that the tokenizer turned into no piece at all) is scored as
predicted `O` and counted (`truncated_words`, `empty_words`). Evaluation inputs are only cut at the
model's own position limit; training inputs are cut at the budget's `max_length`.
"""
from __future__ import annotations

from dataclasses import dataclass

from suites import checks
from suites.base import Batch, Budget, LoadedModel, Task, to_device, token_logits

IGNORE = -100  # label of padding and of non-first word pieces (cross-entropy's ignore_index)
MODEL_INPUTS = ("input_ids", "attention_mask", "labels")


def entity_scores(gold: list[list[str]], pred: list[list[str]]) -> dict[str, float]:
    """Entity-level micro precision/recall/F1 and per-type F1, with seqeval's default (conlleval) rules.

    An entity counts only if its type and both boundaries match; an `I-X` that does not continue an
    `X` entity starts a new one, as in the CoNLL-2003 evaluation script.
    """
    from seqeval.metrics import classification_report
    report = classification_report(gold, pred, output_dict=True, zero_division=0)
    micro = report["micro avg"]
    scores = {"entity_f1": micro["f1-score"], "entity_precision": micro["precision"],
              "entity_recall": micro["recall"]}
    for name, row in report.items():
        if not name.endswith(" avg"):
            scores[f"f1_{name}"] = row["f1-score"]
    return {k: float(v) for k, v in scores.items()}


def encode_words(tokenizer, sentences: list[list[str]], tags: list[list[int]], max_length: int) -> list[dict]:
    """Tokenise pre-split sentences; label the first piece of each word, -100 elsewhere.

    Each example also keeps `word_tags` (every word's gold tag) and `word_index` (for each piece, the
    index of the word it starts, else -1), so evaluation can score words whose pieces were cut.
    """
    if not tokenizer.is_fast:
        raise ValueError(f"token classification needs a fast tokenizer (for word_ids); "
                         f"{type(tokenizer).__name__} is not one")
    enc = tokenizer(sentences, is_split_into_words=True, truncation=True, max_length=max_length)
    examples = []
    for i, word_tags in enumerate(tags):
        labels, word_index, previous = [], [], None
        for word in enc.word_ids(i):
            first = word is not None and word != previous
            labels.append(word_tags[word] if first else IGNORE)
            word_index.append(word if first else -1)
            previous = word
        examples.append({"input_ids": enc["input_ids"][i], "attention_mask": enc["attention_mask"][i],
                         "labels": labels, "word_index": word_index, "word_tags": list(word_tags)})
    return examples


def words_without_piece(word_index: list[int], n_words: int) -> tuple[int, int]:
    """(truncated, empty): words after the last encoded word, and words inside it that got no piece."""
    seen = {w for w in word_index if w >= 0}
    last = max(seen, default=-1)
    return n_words - 1 - last, last + 1 - len(seen)


@dataclass
class TokenClassificationTask(Task):
    kind = "token-classification"
    tokens_column: str = "tokens"
    tags_column: str = "ner_tags"
    peft_task_type: str = "TOKEN_CLS"  # what peft's prompt-based methods need to know

    def required_columns(self) -> list[str]:
        return [self.tokens_column, self.tags_column]

    per_word = True  # the tag names (and so the tag scheme) come from the data, never a copy here

    def class_column(self) -> str:
        return self.tags_column

    def check_split(self, split, where: str) -> None:
        checks.word_lists(split, self.tokens_column, self.tags_column, where)

    def load_model(self, path: str, label_names: list[str], **load_kwargs) -> LoadedModel:
        from transformers import AutoModelForTokenClassification, AutoTokenizer
        model = AutoModelForTokenClassification.from_pretrained(path, **self.head_config(label_names), **load_kwargs)
        tokenizer = AutoTokenizer.from_pretrained(path)
        # Tokenizers without a limit report a huge model_max_length; the position table is the real one.
        limits = [tokenizer.model_max_length, getattr(model.config, "max_position_embeddings", None)]
        return LoadedModel(model, tokenizer, eval_max_length=min(n for n in limits if n))

    def encode(self, ds, tokenizer, budget: Budget, train: bool, eval_max_length: int | None = None) -> list[dict]:
        from bench.core.cache import cached
        if not train and not eval_max_length:
            raise ValueError("token classification cuts evaluation inputs at the model's position limit: pass "
                             "eval_max_length (LoadedModel.eval_max_length)")
        max_length = budget.max_length if train else eval_max_length
        params = {"encode": "words-v1", "columns": [self.tokens_column, self.tags_column], "max_length": max_length}
        return cached(ds, tokenizer, params, lambda: encode_words(tokenizer, list(ds[self.tokens_column]),
                                                                  list(ds[self.tags_column]), max_length),
                      f"{len(ds)} {'train' if train else 'eval'} sentences")

    def collate(self, examples: list[dict], tokenizer) -> Batch:
        from transformers import DataCollatorForTokenClassification
        pad = DataCollatorForTokenClassification(tokenizer, label_pad_token_id=IGNORE, return_tensors="pt")
        return dict(pad([{k: e[k] for k in MODEL_INPUTS} for e in examples]))

    def eval_batches(self, examples: list[dict], tokenizer, batch_size: int) -> list[Batch]:
        """Model inputs plus each sentence's full gold tags and piece -> word map (left out of the model's inputs
        by predict, which leaves the batches as they are: early stopping scores the same dev batches again)."""
        order = self.eval_order(examples)
        batches = []
        for s in range(0, len(order), batch_size):
            chunk = [examples[i] for i in order[s:s + batch_size]]
            batch = self.collate(chunk, tokenizer)
            # The piece -> word map lines up with input_ids, so it is padded on the tokenizer's side.
            batch["word_index"] = padded([e["word_index"] for e in chunk], batch["input_ids"].shape[1],
                                         left=tokenizer.padding_side == "left")
            batch["word_tags"] = padded([e["word_tags"] for e in chunk], max(len(e["word_tags"]) for e in chunk))
            batches.append(batch)
        return batches

    def predict(self, model, batches: list[Batch], device, label_names: list[str]) -> tuple[dict, dict]:
        """Per sentence, in batch order: gold and predicted tags of every word (named with `label_names`); words
        cut or lost, counted."""
        import torch
        names = label_names
        outside = names.index("O")
        gold, pred = [], []
        truncated = empty = 0
        with torch.inference_mode():
            for batch in batches:
                word_index, word_tags = batch["word_index"], batch["word_tags"]
                inputs = {k: v for k, v in batch.items() if k not in ("word_index", "word_tags", "labels")}
                logits = model(**to_device(inputs, device)).logits
                predicted = token_logits(logits, inputs["input_ids"]).argmax(-1).cpu()
                for row in range(len(word_tags)):
                    tags = word_tags[row][word_tags[row] != IGNORE].tolist()
                    words = [outside] * len(tags)  # words without a piece are predicted O, never dropped
                    first = word_index[row] >= 0
                    for w, p in zip(word_index[row][first].tolist(), predicted[row][first].tolist()):
                        words[w] = p
                    cut, blank = words_without_piece(word_index[row].tolist(), len(tags))
                    truncated, empty = truncated + cut, empty + blank
                    gold.append([names[i] for i in tags])
                    pred.append([names[i] for i in words])
        return {"gold": gold, "pred": pred}, {"truncated_words": truncated, "empty_words": empty}

    def score(self, predictions: dict) -> dict:
        return entity_scores(predictions["gold"], predictions["pred"])


def padded(rows: list[list[int]], width: int, left: bool = False):
    import torch
    pad = [[IGNORE] * (width - len(r)) for r in rows]
    return torch.tensor([p + r if left else r + p for r, p in zip(rows, pad)], dtype=torch.long)
