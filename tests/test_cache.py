"""The on-disk cache of encoded data (bench/core/cache.py): a repeated encode reads what the first one stored, and
anything that changes the encoding (data, selection, tokenizer, length, train/eval) is a different entry."""
import pytest

from bench.core import cache
from suites.base import Budget


@pytest.fixture
def cache_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("BENCH_CACHE_DIR", str(tmp_path))
    monkeypatch.delenv("BENCH_ENCODE_CACHE", raising=False)
    return tmp_path / "encoded"


def tokenizer(extra=()):
    from transformers import BertTokenizerFast

    from suites.smoke import vocabulary
    return BertTokenizerFast(vocab={w: i for i, w in enumerate(vocabulary() + list(extra))})


def counting(tok):
    """The tokenizer, counting its calls (a cache hit makes none)."""
    calls = []

    class Counting(type(tok)):
        def __call__(self, *a, **k):
            calls.append(1)
            return super().__call__(*a, **k)
    tok.__class__ = Counting
    return tok, calls


def test_text_encoding_is_read_back_and_keyed_by_what_changes_it(cache_dir):
    from suites.smoke import SENTIMENT, sentiment_data
    data, budget = sentiment_data(40, seed=1), Budget(max_length=32)
    tok, calls = counting(tokenizer())
    first = SENTIMENT.encode(data, tok, budget, train=True)
    again = SENTIMENT.encode(data, tok, budget, train=True)
    assert again == first and len(calls) == 1 and len(list(cache_dir.glob("*.pt"))) == 1
    # Each of these changes the encoding, so each is a new entry (a call to the tokenizer).
    SENTIMENT.encode(data, tok, Budget(max_length=8), train=True)
    SENTIMENT.encode(data.select(range(20)), tok, budget, train=True)
    SENTIMENT.encode(sentiment_data(40, seed=2), tok, budget, train=True)
    other, other_calls = counting(tokenizer(extra=["zzz"]))
    SENTIMENT.encode(data, other, budget, train=True)
    assert len(calls) == 4 and len(other_calls) == 1 and len(list(cache_dir.glob("*.pt"))) == 5


def test_a_torn_entry_is_rebuilt_and_the_cache_can_be_switched_off(cache_dir, monkeypatch):
    from suites.smoke import SENTIMENT, sentiment_data
    data, budget = sentiment_data(16, seed=1), Budget(max_length=32)
    tok, calls = counting(tokenizer())
    first = SENTIMENT.encode(data, tok, budget, train=False)
    (entry,) = cache_dir.glob("*.pt")
    entry.write_bytes(entry.read_bytes()[:50])
    assert SENTIMENT.encode(data, tok, budget, train=False) == first and len(calls) == 2
    monkeypatch.setenv("BENCH_ENCODE_CACHE", "off")
    SENTIMENT.encode(data, tok, budget, train=False)
    assert len(calls) == 3


def test_decoded_images_are_read_back_per_split_and_resolution(cache_dir):
    import datasets
    import numpy as np
    import torch
    from PIL import Image

    from suites.image_classification import ImageClassificationTask, ImagePreprocessing
    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 255, (20, 24, 3), dtype=np.uint8)) for _ in range(6)]
    ds = datasets.Dataset.from_dict({"img": images, "label": [0, 1, 2, 0, 1, 2]},
                                    features=datasets.Features({"img": datasets.Image(),
                                                                "label": datasets.ClassLabel(names=list("abc"))}))
    task = ImageClassificationTask(name="t", suite="s", metric="accuracy", default_model="m", budgets={},
                                   eval_split="test", image_column="img")
    prep = ImagePreprocessing(crop_fraction=0.875)
    train = task.encode(ds, prep, Budget(max_length=14), train=True)
    again = task.encode(ds, prep, Budget(max_length=14), train=True)
    assert [e["labels"] for e in again] == [0, 1, 2, 0, 1, 2]
    assert all(torch.equal(a["pixel_values"], b["pixel_values"]) for a, b in zip(train, again))
    assert train[0]["pixel_values"].shape == (3, 16, 16)  # the training margin: 14 / 0.875
    assert task.encode(ds, prep, Budget(max_length=14), train=False)[0]["pixel_values"].shape == (3, 14, 14)
    task.encode(ds, ImagePreprocessing(crop_fraction=1.0), Budget(max_length=14), train=True)
    assert len(list(cache_dir.glob("*.pt"))) == 3


def test_unidentifiable_inputs_are_not_cached(cache_dir):
    assert cache.cached([1, 2], tokenizer(), {}, lambda: "built") == "built"
    assert cache.cached(type("DS", (), {"_fingerprint": "f", "__len__": lambda s: 1})(), object(), {},
                        lambda: "built") == "built"
    assert not cache_dir.exists()
