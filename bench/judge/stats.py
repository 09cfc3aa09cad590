"""Uncertainty of a score: bootstrap confidence intervals over evaluation examples, paired differences, ties.

Every headline metric is a function of per-example sums, so one resampling scheme serves them all:
accuracy is mean(correct); entity F1 is 2·TP / (predicted + gold entities), with the three counts kept per
sentence, so F1 is resampled by sentence (an entity never straddles two). A resample draws example weights
from a multinomial and sums `weights @ stats`; a paired comparison uses the same weights for both runs.
Predictions of several seeds of one configuration pool by averaging their per-example counts.
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np

KNOWN = ("accuracy", "entity_f1")  # metrics with per-example statistics
RESAMPLES = 1000
LEVEL = 0.95


def example_stats(metric: str, gold: list, pred: list) -> np.ndarray:
    """[n, k] per-example counts whose column sums give `metric` (see `value`)."""
    if metric == "accuracy":
        return (np.asarray(gold) == np.asarray(pred)).astype(float)[:, None]
    if metric == "entity_f1":
        from seqeval.metrics.sequence_labeling import get_entities
        rows = []
        for g, p in zip(gold, pred):
            ge, pe = set(get_entities(list(g))), set(get_entities(list(p)))
            rows.append((len(ge & pe), len(pe), len(ge)))
        return np.asarray(rows, dtype=float).reshape(-1, 3)
    raise ValueError(f"no per-example statistics for metric {metric!r} (known: accuracy, entity_f1)")


def value(metric: str, sums: np.ndarray) -> np.ndarray:
    """The metric from column sums ([..., k]); works on a batch of resamples."""
    if metric == "accuracy":
        return sums[..., 0]
    tp, predicted, gold = sums[..., 0], sums[..., 1], sums[..., 2]
    total = predicted + gold
    return np.divide(2 * tp, total, out=np.zeros_like(tp, dtype=float), where=total > 0)


@lru_cache(maxsize=4)
def _weights(n: int, resamples: int, seed: int) -> np.ndarray:
    """Resample weights, drawn once per (n, resamples, seed): a report pairs every method of a task on the same
    examples, and redrawing them for each pairing was most of a report's time."""
    w = np.random.default_rng(seed).multinomial(n, np.full(n, 1 / n), size=resamples).astype(float)
    w.flags.writeable = False  # shared by every caller
    return w


def _normalise(metric: str, stats: np.ndarray) -> np.ndarray:
    return stats / len(stats) if metric == "accuracy" else stats  # accuracy: sums of 1/n are means


def bootstrap_ci(metric: str, stats: np.ndarray, resamples: int = RESAMPLES, seed: int = 0,
                 level: float = LEVEL) -> tuple[float, float]:
    """Percentile interval of the metric over `resamples` bootstrap resamples of the examples."""
    stats = _normalise(metric, stats)
    boot = value(metric, _weights(len(stats), resamples, seed) @ stats)
    lo, hi = np.quantile(boot, [(1 - level) / 2, (1 + level) / 2])
    return float(lo), float(hi)


def paired_difference(metric: str, a: np.ndarray, b: np.ndarray, resamples: int = RESAMPLES, seed: int = 0,
                      level: float = LEVEL) -> tuple[float, float, float]:
    """(a - b, low, high): the difference on the same examples and its paired bootstrap interval."""
    if len(a) != len(b):
        raise ValueError(f"paired comparison needs the same examples ({len(a)} vs {len(b)})")
    a, b = _normalise(metric, a), _normalise(metric, b)
    w = _weights(len(a), resamples, seed)
    diff = value(metric, w @ a) - value(metric, w @ b)
    lo, hi = np.quantile(diff, [(1 - level) / 2, (1 + level) / 2])
    return float(value(metric, a.sum(0)) - value(metric, b.sum(0))), float(lo), float(hi)
