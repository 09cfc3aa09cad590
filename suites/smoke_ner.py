"""The smoke NER task: generated newswire-like sentences tagged in CoNLL's IOB2 scheme, tiny random BERT.

Some names split into several word pieces (`martinez` -> `martin ##ez`) so alignment is exercised, and
a few test sentences are longer than the tiny model's 64 positions so truncation accounting is too.
"""
from __future__ import annotations

import random
from dataclasses import dataclass

from suites.base import Budget
from suites.smoke import SPECIALS, build_tiny_bert
from suites.token_classification import TokenClassificationTask

TINY_NER_BERT = "smoke:tiny-ner-bert"
TAGS = ["O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC", "B-MISC", "I-MISC"]  # CoNLL's order
FIRST_NAMES = ["john", "maria", "ahmed", "olga", "pedro", "martin", "li"]
LAST_NAMES = ["smith", "garcia", "martinez", "kowalski", "chen", "novak"]
ORGS = ["acme corp", "globex", "united nations", "reuters", "the world bank"]
LOCATIONS = ["paris", "berlin", "new york", "tokyo", "lagos", "stockholm"]
MISC = ["german", "olympic", "french", "nobel"]
# Words the tiny vocabulary holds only as pieces, so the tokenizer splits them.
PIECES = {"martinez": ["martin", "##ez"], "kowalski": ["kowal", "##ski"], "stockholm": ["stock", "##holm"]}
TEMPLATES = [
    "{PER} visited {LOC} .",
    "{PER} joined {ORG} in {LOC} .",
    "{ORG} said {PER} won the {MISC} prize .",
    "officials in {LOC} met {PER} on monday .",
    "the {MISC} team beat {ORG} in {LOC} .",
    "shares of {ORG} fell after {PER} left .",
]
LONG_EVERY = 16  # one test sentence in this many is too long for the tiny model


def entity(kind: str, rng: random.Random) -> list[tuple[str, str]]:
    if kind == "PER":
        words = [rng.choice(FIRST_NAMES)] + ([rng.choice(LAST_NAMES)] if rng.random() < 0.7 else [])
    else:
        words = rng.choice({"ORG": ORGS, "LOC": LOCATIONS, "MISC": MISC}[kind]).split()
    if kind == "ORG" and words[0] == "the":  # "the" is not part of the name
        return [("the", "O")] + [(w, ("B-" if i == 0 else "I-") + kind) for i, w in enumerate(words[1:])]
    return [(w, ("B-" if i == 0 else "I-") + kind) for i, w in enumerate(words)]


def sentence(template: str, rng: random.Random) -> list[tuple[str, str]]:
    out = []
    for part in template.split():
        out += entity(part[1:-1], rng) if part.startswith("{") else [(part, "O")]
    return out


def long_sentence(rng: random.Random) -> list[tuple[str, str]]:
    out = entity("PER", rng) + [("toured", "O")]
    for _ in range(30):
        out += entity("LOC", rng) + [(",", "O")]
    return out[:-1] + [(".", "O")]


def ner_data(n: int, seed: int, with_long: bool):
    import datasets
    rng = random.Random(seed)
    rows = [long_sentence(rng) if with_long and i % LONG_EVERY == 0 else sentence(rng.choice(TEMPLATES), rng)
            for i in range(n)]
    features = datasets.Features({"tokens": datasets.List(datasets.Value("string")),
                                  "ner_tags": datasets.List(datasets.ClassLabel(names=TAGS))})
    return datasets.Dataset.from_dict({"tokens": [[w for w, _ in r] for r in rows],
                                       "ner_tags": [[TAGS.index(t) for _, t in r] for r in rows]}, features=features)


def vocabulary() -> list[str]:
    words = set(FIRST_NAMES + LAST_NAMES + MISC + [w for p in ORGS + LOCATIONS for w in p.split()])
    words |= {w for t in TEMPLATES for w in t.split() if not w.startswith("{")} | {"toured", ","}
    for word, pieces in PIECES.items():
        words.discard(word)
        words |= set(pieces)
    return SPECIALS + sorted(words)


@dataclass
class SmokeNerTask(TokenClassificationTask):
    def resolve_model(self, ref, model_dir):
        return str(build_tiny_bert("tiny-ner-bert-v1", vocabulary())) if ref == TINY_NER_BERT \
            else super().resolve_model(ref, model_dir)

    def model_identity(self, ref, model_dir):
        return {"ref": ref, "built": "tiny-ner-bert-v1"} if ref == TINY_NER_BERT \
            else super().model_identity(ref, model_dir)

    def data_identity(self, data_dir, score_on="eval"):
        return {"generated": "ner_data(256, seed=1) / test (64, seed=2, with_long=True) / dev (seed=3)"}

    def raw_splits(self, data_dir, splits=None):
        import datasets
        made = {"train": lambda: ner_data(256, seed=1, with_long=False),
                "test": lambda: ner_data(64, seed=2, with_long=True), "dev": lambda: ner_data(64, seed=3, with_long=True)}
        return datasets.DatasetDict({s: made[s]() for s in splits or self.splits()})


SMOKE_NER_BUDGET = Budget(batch_size=16, epochs=3, max_length=32, eval_batch_size=32, latency_samples=5,
                          untimed_steps=2, log_every=4)

TASK = SmokeNerTask(
    name="ner", suite="smoke", metric="entity_f1", default_model=TINY_NER_BERT, eval_split="test", dev_split="dev",
    budgets={"smoke": SMOKE_NER_BUDGET, "quick": SMOKE_NER_BUDGET, "full": SMOKE_NER_BUDGET},
    lr_overrides={"full": 1e-2},  # as for the smoke sentiment task: the random tiny BERT needs a high rate
)
