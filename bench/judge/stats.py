"""Uncertainty of a score: bootstrap confidence intervals over evaluation examples and seeds, paired differences.

Every headline metric is a function of per-example means, so one resampling scheme serves them all: accuracy
is mean(correct); entity F1 is 2·TP / (predicted + gold entities), with the three counts kept per sentence, so
F1 is resampled by sentence (an entity never straddles two); macro F1 keeps the same three counts per class, one-hot
per example. One run: scipy's percentile bootstrap over examples (paired, the same resampled examples for both
runs, when two are compared). Several seeds: a hierarchical bootstrap (seeds, then examples within them), so the
interval carries seed variance too. Without saved predictions, a t interval over the seeds' scores.
"""
from __future__ import annotations

import numpy as np
from scipy.stats import bootstrap, t

KNOWN = ("accuracy", "entity_f1", "macro_f1", "span_f1")  # metrics with per-example statistics
RESAMPLES = 1000
BATCH = 100  # resamples scipy draws at a time: bounds the memory of a 3,453-sentence pairing
# ... and at most this many statistics per sample in one batch (100 x 3,453 x 3, or 100 x 10,000 accuracies): macro F1
# keeps 3 per class, 30 for CIFAR-10's 10,000 images, which takes fewer resamples at a time (scipy draws the same
# resamples whatever the batch)
BATCH_CELLS = 1_050_000
LEVEL = 0.95


def example_stats(metric: str, gold: list, pred: list) -> np.ndarray:
    """[n, k] per-example counts whose column sums give `metric` (see `value`). Macro F1: [n, 3K], one-hot per
    example, blocks of K columns (true positives, predicted, gold) for the classes 0..max of integer labels (else
    the sorted union of gold and pred); a class found in neither counts nowhere (see `value`), so the width only
    has to cover the classes seen."""
    if metric == "accuracy":
        return (np.asarray(gold) == np.asarray(pred)).astype(float)[:, None]
    if metric == "macro_f1":
        gold, pred = np.asarray(gold), np.asarray(pred)
        both = np.concatenate([gold, pred])
        if len(both) and np.issubdtype(both.dtype, np.integer) and both.min() >= 0:
            classes = np.arange(int(both.max()) + 1)
        else:
            classes = np.unique(both)
        is_gold, is_pred = gold[:, None] == classes, pred[:, None] == classes  # [n, K]
        return np.concatenate([is_gold & is_pred, is_pred, is_gold], axis=1).astype(float)
    if metric == "entity_f1":
        from seqeval.metrics.sequence_labeling import get_entities
        rows = []
        for g, p in zip(gold, pred):
            ge, pe = set(get_entities(list(g))), set(get_entities(list(p)))
            rows.append((len(ge & pe), len(pe), len(ge)))
        return np.asarray(rows, dtype=float).reshape(-1, 3)
    if metric == "span_f1":  # generated entity lists (suites/causal_lm.py): (type, text) pairs per sentence
        rows = [(len(set(g) & set(p)), len(set(p)), len(set(g))) for g, p in zip(gold, pred)]
        return np.asarray(rows, dtype=float).reshape(-1, 3)
    raise ValueError(f"no per-example statistics for metric {metric!r} (known: {', '.join(KNOWN)})")


def value(metric: str, sums: np.ndarray) -> np.ndarray:
    """The metric from column sums (or means: every metric is a ratio of them) ([..., k]); works on a batch of
    resamples. Macro F1: the mean over classes of 2·TP / (predicted + gold), over the classes found in gold or
    predictions (sklearn's labels), so a class a resample drew no example of counts nowhere, as it would in sklearn;
    0 with no class at all."""
    if metric == "accuracy":
        return sums[..., 0]
    if metric == "macro_f1":
        tp, predicted, gold = np.split(np.asarray(sums, dtype=float), 3, axis=-1)
        total = predicted + gold
        f1 = np.divide(2 * tp, total, out=np.zeros_like(tp), where=total > 0)
        present = (total > 0).sum(axis=-1)
        return np.divide(f1.sum(axis=-1), present, out=np.zeros(present.shape), where=present > 0)
    tp, predicted, gold = sums[..., 0], sums[..., 1], sums[..., 2]
    total = predicted + gold
    return np.divide(2 * tp, total, out=np.zeros_like(tp, dtype=float), where=total > 0)


def _percentile(values: np.ndarray, level: float) -> tuple[float, float]:
    lo, hi = np.quantile(values, [(1 - level) / 2, (1 + level) / 2])
    return float(lo), float(hi)


def _statistic(metric: str):
    """scipy's statistic: the metric of a sample's example means (entity F1 is a ratio of sums, so means give it
    too); for two samples, the difference."""
    def statistic(*samples, axis=-1):
        values = [value(metric, np.moveaxis(np.mean(s, axis=axis), 0, -1)) for s in samples]  # statistics last
        return values[0] if len(values) == 1 else values[0] - values[1]
    return statistic


def _batch(*samples: np.ndarray) -> int:
    """Resamples per scipy batch: BATCH, fewer where a sample's statistics would exceed BATCH_CELLS."""
    return max(1, min(BATCH, BATCH_CELLS // max(s.size for s in samples)))


# scipy takes axis 0 of an [n, k] array as the observations and hands the statistic the resamples with the
# observations last: hence means along -1, then the k statistics moved last for `value`.
def bootstrap_ci(metric: str, stats: np.ndarray, resamples: int = RESAMPLES, seed: int = 0,
                 level: float = LEVEL) -> tuple[float, float]:
    """Percentile interval of one run's metric over bootstrap resamples of its examples (scipy)."""
    res = bootstrap((stats,), _statistic(metric), vectorized=True, n_resamples=resamples,
                    confidence_level=level, method="percentile", batch=_batch(stats),
                    rng=np.random.default_rng(seed))
    return float(res.confidence_interval.low), float(res.confidence_interval.high)


def paired_difference(metric: str, a: np.ndarray, b: np.ndarray, resamples: int = RESAMPLES, seed: int = 0,
                      level: float = LEVEL) -> tuple[float, float, float]:
    """(a - b, low, high): two runs on the same examples, their difference and its paired bootstrap interval
    (scipy, the same resampled examples for both)."""
    if len(a) != len(b):
        raise ValueError(f"paired comparison needs the same examples ({len(a)} vs {len(b)})")
    res = bootstrap((a, b), _statistic(metric), paired=True, vectorized=True,
                    n_resamples=resamples, confidence_level=level, method="percentile", batch=_batch(a, b),
                    rng=np.random.default_rng(seed))
    diff = float(value(metric, a.mean(0)) - value(metric, b.mean(0)))
    return diff, float(res.confidence_interval.low), float(res.confidence_interval.high)


def _seed_means(metric: str, runs: np.ndarray, weights: np.ndarray, rng) -> np.ndarray:
    """Per resample: the mean over a resample of the seeds of each seed's metric on the resampled examples."""
    per_seed = np.stack([value(metric, weights @ r) for r in runs], axis=1)  # [resamples, seeds]
    pick = rng.integers(0, len(runs), size=per_seed.shape)
    return np.take_along_axis(per_seed, pick, axis=1).mean(axis=1)


def hierarchical(metric: str, a: np.ndarray, b: np.ndarray | None = None, resamples: int = RESAMPLES,
                 seed: int = 0, level: float = LEVEL) -> tuple[float, float, float]:
    """(estimate, low, high) over several seeds: each resample draws the seeds with replacement and, within
    them, the examples, so the interval carries the seed-to-seed variance as well as the test set's. `a` and
    `b` are [seeds, examples, k]; with `b`, the estimate is mean(a) - mean(b) over seeds, its examples drawn
    the same for both (paired). Hand-written: scipy's bootstrap resamples one level only."""
    rng = np.random.default_rng(seed)
    n = a.shape[1]
    weights = rng.multinomial(n, np.full(n, 1 / n), size=resamples) / n  # [resamples, examples]
    boot = _seed_means(metric, a, weights, rng)
    estimate = float(np.mean([value(metric, r.mean(0)) for r in a]))
    if b is not None:
        if b.shape[1] != n:
            raise ValueError(f"paired comparison needs the same examples ({n} vs {b.shape[1]})")
        boot = boot - _seed_means(metric, b, weights, rng)
        estimate -= float(np.mean([value(metric, r.mean(0)) for r in b]))
    return (estimate, *_percentile(boot, level))


def t_interval(diff: float, se: float, seeds: int, level: float = LEVEL) -> tuple[float, float]:
    """diff ± t·se with Student's t for `seeds` runs (df = seeds - 1): 12.7 for two seeds, 4.3 for three."""
    half = float(t.ppf((1 + level) / 2, max(seeds - 1, 1))) * se
    return diff - half, diff + half
