import pytest
import torch

from bench.core.errors import UsageError
from methods import METHODS, get_method
from methods.base import attention_pair, count_params, family, head_names
from suites import SUITES, get_suite, get_task
from suites.smoke import tiny_bert_dir

EXPECTED_METHODS = ["full", "head", "bitfit", "lora", "adalora", "int8-lora", "dora", "rslora", "pissa", "ia3", "loha",
                    "lokr", "vera", "oft", "boft", "fourierft", "ln-tuning", "prefix-tuning", "prompt-tuning",
                    "p-tuning", "int8-ia3"]


def test_registries_hold_the_promised_names():
    assert list(METHODS)[:4] == ["full", "head", "bitfit", "lora"]
    assert set(EXPECTED_METHODS) <= set(METHODS) and len(METHODS) >= 20
    assert {"nlp", "smoke"} <= set(SUITES)
    assert "sst2" in [t.name for t in get_suite("nlp")]


@pytest.mark.parametrize("call, bad", [(lambda: get_method("lorra"), "lorra"),
                                       (lambda: get_suite("nope"), "nope"),
                                       (lambda: get_task("nlp", "mnli"), "mnli"),
                                       (lambda: get_task("nlp", "sst2").budget("huge"), "huge")])
def test_unknown_names_list_the_valid_ones(call, bad):
    with pytest.raises(UsageError) as err:
        call()
    message = str(err.value)
    assert repr(bad) in message and "valid:" in message and "\n" not in message


def _tiny_model():
    from transformers import AutoModelForSequenceClassification
    torch.manual_seed(0)
    return AutoModelForSequenceClassification.from_pretrained(tiny_bert_dir(), num_labels=2)


def test_targets_family_and_head_are_found_from_the_model():
    model = _tiny_model()
    assert attention_pair(model) == ["query", "value"] and family(model) == "transformer"
    assert head_names(model) == ["classifier"]


def test_count_params_counts_trainable_and_head():
    model = _tiny_model()
    for p in model.parameters():
        p.requires_grad_(False)
    for p in model.classifier.parameters():
        p.requires_grad_(True)
    counts = count_params(model, ["classifier"])
    head = sum(p.numel() for p in model.classifier.parameters())
    assert counts["trainable_params"] == counts["head_params"] == head
    assert counts["total_params"] == sum(p.numel() for p in model.parameters())
    assert counts["trainable_pct"] == pytest.approx(100 * head / counts["total_params"])


def test_a_hub_dataset_that_cannot_load_says_how_to_use_a_local_copy(monkeypatch):
    """Offline (or a script dataset datasets>=4 refuses): one clear error naming the data dir to pass."""
    import datasets

    from bench.core import resolve

    def refuse(*args, **kwargs):
        assert kwargs == {"revision": "refs/convert/parquet", "data_dir": "conll2003"}  # the task's Hub recipe
        raise ConnectionError("Couldn't reach 'eriktks/conll2003' on the Hub (LocalEntryNotFoundError)\nmore")

    monkeypatch.setattr(datasets, "load_dataset", refuse)
    with pytest.raises(resolve.ResolveError) as err:
        get_task("nlp", "conll2003").raw_splits(None)
    message = str(err.value)
    assert "'eriktks/conll2003'" in message and "--data-dir" in message and "\n" not in message
    assert "conll2003/{train,test}.parquet" in message


def test_evaluation_batches_run_longest_first_and_keep_every_example_once():
    # Longest first: the first batch grows the heap to its largest and later ones reuse it (README, allocator).
    task = get_task("smoke", "sentiment")
    examples = [{"input_ids": [1] * n, "attention_mask": [1] * n, "labels": 0} for n in (2, 5, 3, 5, 1)]
    order = task.eval_order(examples)
    assert order == [1, 3, 2, 0, 4] and sorted(order) == list(range(len(examples)))
