"""macro_f1, the classification headline for imbalanced data: the task's score against sklearn, the per-example
statistics behind its intervals, and its chance level (what always guessing the commonest class scores)."""
from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import f1_score, precision_recall_fscore_support

from bench.core.metrics import chance_level, metric_info
from bench.judge import stats
from suites.text_classification import TextClassificationTask

# Imbalanced, 3 classes: class 0 is 60% of gold, class 2 is never predicted.
GOLD = [0] * 12 + [1] * 5 + [2] * 3
PRED = [0] * 10 + [1] * 2 + [1] * 3 + [0] * 2 + [0] * 2 + [1]
TASK = TextClassificationTask(name="t", suite="t", metric="macro_f1", default_model="m", budgets={},
                              eval_split="validation")


def scored(gold=GOLD, pred=PRED, **extra) -> dict:
    return TASK.score({"gold": list(gold), "pred": list(pred), **extra})


def test_macro_f1_and_per_class_figures_equal_sklearn():
    s = scored()
    assert 2 not in PRED and s["macro_f1"] < s["accuracy"]  # the unpredicted class pulls macro F1 down
    assert s["macro_f1"] == pytest.approx(f1_score(GOLD, PRED, average="macro", zero_division=0))
    precision, recall, f1, _ = precision_recall_fscore_support(GOLD, PRED, labels=[0, 1, 2], zero_division=0)
    for c in range(3):
        assert (s[f"precision_{c}"], s[f"recall_{c}"], s[f"f1_{c}"]) == pytest.approx((precision[c], recall[c], f1[c]))
    assert s["f1_2"] == s["precision_2"] == s["recall_2"] == 0
    # Named where the predictions carry the class names; then no index-named figure.
    named = scored(classes=["neg", "neu", "pos"])
    assert named["f1_neu"] == pytest.approx(f1[1]) and named["recall_pos"] == 0 and "f1_1" not in named
    # A class only predicted (never gold) counts, as in sklearn.
    pred = [2 if i == 0 else p for i, p in enumerate(PRED)]
    assert scored(GOLD[:17], pred[:17])["macro_f1"] == pytest.approx(f1_score(GOLD[:17], pred[:17], average="macro"))


def test_accuracy_and_majority_rate_unchanged():
    s = scored()
    assert s["accuracy"] == pytest.approx(np.mean(np.asarray(GOLD) == np.asarray(PRED))) == pytest.approx(13 / 20)
    assert s["majority_rate"] == pytest.approx(12 / 20)


def test_per_class_names_have_a_direction():
    for name in ("macro_f1", "precision_neg", "recall_neg", "f1_neg", "precision_0"):
        info = metric_info(name)
        assert info.higher_is_better is True and info.kind == "task", name
    assert metric_info("majority_macro_f1").higher_is_better is None
    assert metric_info("dev_macro_f1").kind == "info" and metric_info("macro_f1_ci_low").kind == "info"


def test_example_stats_on_the_full_sample_give_the_score():
    per_example = stats.example_stats("macro_f1", GOLD, PRED)
    assert per_example.shape == (len(GOLD), 9)
    assert stats.value("macro_f1", per_example.sum(0)) == pytest.approx(scored()["macro_f1"])
    assert stats.value("macro_f1", per_example.mean(0)) == pytest.approx(scored()["macro_f1"])
    # A batch of resamples ([..., k]) gives one value each; each equals sklearn on that resample, where a class the
    # resample drew no example of counts nowhere.
    rng = np.random.default_rng(0)
    picks = [rng.integers(0, len(GOLD), len(GOLD)) for _ in range(5)] + [np.arange(12)]  # the last: class 0 only
    batch = np.stack([per_example[i].sum(0) for i in picks])
    expected = [f1_score(np.asarray(GOLD)[i], np.asarray(PRED)[i], average="macro", zero_division=0) for i in picks]
    assert stats.value("macro_f1", batch) == pytest.approx(expected)
    assert "macro_f1" in stats.KNOWN
    # String labels: the union of the classes seen.
    names = np.array(["a", "b", "c"])
    assert stats.value("macro_f1", stats.example_stats("macro_f1", names[GOLD], names[PRED]).sum(0)) == \
        pytest.approx(scored()["macro_f1"])


def test_bootstrap_interval_holds_the_estimate_and_narrows_with_more_examples():
    per_example = stats.example_stats("macro_f1", GOLD * 5, PRED * 5)
    point = stats.value("macro_f1", per_example.mean(0))
    low, high = stats.bootstrap_ci("macro_f1", per_example)
    assert low < point < high
    low20, high20 = stats.bootstrap_ci("macro_f1", stats.example_stats("macro_f1", GOLD * 20, PRED * 20))
    assert low20 < point < high20 and high20 - low20 < (high - low) * 0.7
    # Paired with itself: zero difference; against a constant predictor: clearly better.
    assert stats.paired_difference("macro_f1", per_example, per_example) == pytest.approx((0.0, 0.0, 0.0))
    constant = stats.example_stats("macro_f1", GOLD * 5, [0] * 100)
    diff, low, high = stats.paired_difference("macro_f1", per_example, constant)
    assert 0 < low < diff < high
    estimate, low, high = stats.hierarchical("macro_f1", np.stack([per_example, per_example]))
    assert estimate == pytest.approx(point) and low < point < high


def test_chance_level_is_the_constant_predictors_macro_f1():
    s = scored()
    constant = f1_score(GOLD, [0] * len(GOLD), average="macro", zero_division=0)
    assert s["majority_macro_f1"] == pytest.approx(constant)
    assert chance_level("macro_f1", s["majority_rate"], s["majority_macro_f1"]) == pytest.approx(constant)
    assert chance_level("accuracy", s["majority_rate"], s["majority_macro_f1"]) == s["majority_rate"]
    assert chance_level("entity_f1", 0.9) == 0.0 and np.isnan(chance_level("macro_f1", 0.6))
