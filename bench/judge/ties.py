"""Which methods are tied with the best, by one rule used by reports, `bench compare` and `bench recommend`.

Two methods evaluated on the same examples are compared by a paired bootstrap of the difference of their
headline metric (bench/judge/stats.py; seeds pooled per method); they are tied within noise when its 95%
interval holds 0. Without saved predictions (older records) the seed spread decides: tied when the
difference is within two standard errors of it; with one seed each and no predictions nothing can be said
(`basis` says which rule applied).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from bench.judge import stats
from bench.results import predictions


@dataclass
class Comparison:
    diff: float  # this method minus the best, on the headline metric
    low: float = math.nan
    high: float = math.nan
    basis: str = "none"  # "paired bootstrap", "seed spread" or "none"

    @property
    def tied(self) -> bool:
        return self.basis != "none" and self.low <= 0 <= self.high

    def describe(self, metric: str) -> str:
        if self.basis == "none":
            return f"{metric} {self.diff:+.4f} (no interval: one seed and no saved predictions)"
        verdict = "tied within noise" if self.tied else "different"
        return f"{metric} {self.diff:+.4f}, 95% interval [{self.low:+.4f}, {self.high:+.4f}] ({self.basis}): {verdict}"


def pooled_stats(runs: list[dict], metric: str) -> np.ndarray | None:
    """Per-example statistics of a method's successful runs, averaged over seeds; None if any run lacks them."""
    if metric not in stats.KNOWN:
        return None
    arrays = []
    for r in runs:
        folder = r.get("source")
        a = example_stats_of(r, Path(folder), metric) if folder else None
        if a is None:
            return None
        arrays.append(a)
    if not arrays or len({a.shape for a in arrays}) != 1:
        return None
    return np.mean(arrays, axis=0)


def compare(metric: str, runs_a: list[dict], runs_b: list[dict]) -> Comparison:
    """Method a against method b (a - b) on the headline metric."""
    a_stats, b_stats = pooled_stats(runs_a, metric), pooled_stats(runs_b, metric)
    values = [[r["metrics"].get(metric, math.nan) for r in rs] for rs in (runs_a, runs_b)]
    mean_a, mean_b = (float(np.nanmean(v)) if v else math.nan for v in values)
    if a_stats is not None and b_stats is not None and a_stats.shape == b_stats.shape:
        diff, low, high = stats.paired_difference(metric, a_stats, b_stats)
        return Comparison(diff, low, high, "paired bootstrap")
    if min(len(v) for v in values) >= 2:
        se = math.sqrt(sum(float(np.nanvar(v, ddof=1)) / len(v) for v in values))
        return Comparison(mean_a - mean_b, mean_a - mean_b - 2 * se, mean_a - mean_b + 2 * se, "seed spread")
    return Comparison(mean_a - mean_b)


def versus_best(metric: str, by_method: dict[str, list[dict]]) -> tuple[str | None, dict[str, Comparison]]:
    """(the method with the best mean, {method: its comparison with the best}); the best is tied with itself."""
    means = {m: float(np.nanmean([r["metrics"].get(metric, math.nan) for r in rs]))
             for m, rs in by_method.items() if rs and any(metric in r["metrics"] for r in rs)}
    means = {m: v for m, v in means.items() if not math.isnan(v)}
    if not means:
        return None, {}
    best = max(means, key=means.get)
    out = {m: compare(metric, by_method[m], by_method[best]) for m in means if m != best}
    out[best] = Comparison(0.0, 0.0, 0.0, "itself")
    return best, out


def method_interval(metric: str, runs: list[dict]) -> tuple[float, float] | None:
    """95% bootstrap interval of a method's metric over evaluation examples (seeds pooled); a single run's
    recorded interval when predictions are missing."""
    pooled = pooled_stats(runs, metric)
    if pooled is not None:
        return stats.bootstrap_ci(metric, pooled)
    if len(runs) == 1 and f"{metric}_ci_low" in runs[0]["metrics"]:
        m = runs[0]["metrics"]
        return m[f"{metric}_ci_low"], m[f"{metric}_ci_high"]
    return None


def example_stats_of(record: dict, folder: Path, metric: str) -> np.ndarray | None:
    """Per-example statistics of a run's saved predictions, in example order; None if absent."""
    rel = (record.get("info") or {}).get("predictions")
    path = Path(folder) / rel if rel else None
    if path is None or not path.is_file():
        return None
    return _stats_of_file(str(path.resolve()), path.stat().st_mtime_ns, metric)


@lru_cache(maxsize=256)
def _stats_of_file(path: str, mtime_ns: int, metric: str) -> np.ndarray:
    """Once per file version: a report reads each run's statistics for every pairing and interval it draws,
    and entity extraction over a whole evaluation split is not free."""
    p = predictions.load(Path(path))
    out = stats.example_stats(metric, p["gold"], p["pred"])
    out.flags.writeable = False  # shared by every caller
    return out
