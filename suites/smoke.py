"""The `smoke` suite: seconds-long tasks for tests, with generated data and a tiny config-built BERT.

Nothing is downloaded: the sentences come from word lists below and the model is a 2-layer BERT built
from a config with random weights, saved once to a cache folder so that every method loads it through
`from_pretrained` exactly like a real checkpoint (int8 loading needs that).
"""
from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

from bench.core.cache import built_once
from suites.base import Budget
from suites.text_classification import TextClassificationTask

TINY_BERT = "smoke:tiny-bert"
SUBJECTS = ["the movie", "this film", "the plot", "the acting", "the script", "the ending", "the cast",
            "the music", "the story", "the director"]
POSITIVE = ["great", "wonderful", "moving", "brilliant", "funny", "charming", "superb", "delightful"]
NEGATIVE = ["boring", "awful", "dull", "terrible", "clumsy", "tedious", "bland", "painful"]
FILLERS = ["really", "truly", "quite", "so", "very", "rather"]
SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def vocabulary() -> list[str]:
    words = {w for phrase in SUBJECTS for w in phrase.split()} | set(POSITIVE + NEGATIVE + FILLERS)
    words |= {"was", "is", "and", "but", "."}
    return SPECIALS + sorted(words)


def sentiment_data(n: int, seed: int):
    import datasets
    rng = random.Random(seed)
    sentences, labels = [], []
    for _ in range(n):
        label = rng.randint(0, 1)
        adjective = rng.choice(POSITIVE if label else NEGATIVE)
        filler = " ".join(rng.sample(FILLERS, rng.randint(0, 2)))
        sentences.append(f"{rng.choice(SUBJECTS)} was {filler} {adjective} .".replace("  ", " "))
        labels.append(label)
    features = datasets.Features({"sentence": datasets.Value("string"),
                                  "label": datasets.ClassLabel(names=["negative", "positive"])})
    return datasets.Dataset.from_dict({"sentence": sentences, "label": labels}, features=features)


def tiny_bert_dir() -> Path:
    """Build (once) and return a folder holding a tiny random BERT and its word-level tokenizer."""
    return build_tiny_bert("tiny-bert-v2", vocabulary())  # v1 was built with an all-[UNK] tokenizer


def build_tiny_bert(name: str, vocab: list[str]) -> Path:
    """Build (once) a tiny random BERT with this vocabulary in the cache folder `name`; shared by smoke tasks."""
    def build(folder: Path) -> None:
        import torch
        from transformers import BertConfig, BertModel, BertTokenizerFast
        (folder / "vocab.txt").write_text("\n".join(vocab) + "\n")
        # transformers 5 ignores `vocab_file=` here (every word became [UNK]); pass the vocabulary itself.
        BertTokenizerFast(vocab={w: i for i, w in enumerate(vocab)}, do_lower_case=True).save_pretrained(folder)
        config = BertConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                            intermediate_size=64, max_position_embeddings=64)
        torch.manual_seed(0)
        BertModel(config).save_pretrained(folder)
    return built_once(name, build)


@dataclass
class SmokeSentimentTask(TextClassificationTask):
    def resolve_model(self, ref, model_dir):
        return str(tiny_bert_dir()) if ref == TINY_BERT else super().resolve_model(ref, model_dir)

    def model_identity(self, ref, model_dir):
        return {"ref": ref, "built": "tiny-bert-v2"} if ref == TINY_BERT else super().model_identity(ref, model_dir)

    def data_identity(self, data_dir, score_on="eval"):
        return {"generated": "sentiment_data(256, seed=1) / test (64, seed=2) / dev (64, seed=3)"}

    def raw_splits(self, data_dir, splits=None):
        import datasets
        made = {"train": lambda: sentiment_data(256, seed=1), "test": lambda: sentiment_data(64, seed=2),
                "dev": lambda: sentiment_data(64, seed=3)}
        return datasets.DatasetDict({s: made[s]() for s in splits or self.splits()})


SMOKE_BUDGET = Budget(batch_size=16, epochs=2, max_length=32, eval_batch_size=32, latency_samples=5,
                      untimed_steps=2, log_every=2)

SENTIMENT = SmokeSentimentTask(
    name="sentiment", suite="smoke", metric="accuracy", default_model=TINY_BERT, eval_split="test", dev_split="dev",
    budgets={"smoke": SMOKE_BUDGET, "quick": SMOKE_BUDGET, "full": SMOKE_BUDGET},
    lr_overrides={"full": 1e-2},  # the random tiny BERT learns the task in 32 steps only at this rate
)

TASKS = [SENTIMENT]
