"""Which methods are tied with the best, by one rule used by reports, `bench compare` and `bench recommend`.

Two methods evaluated on the same examples (their saved predictions hold the same example ids) are compared
by a bootstrap of the difference of their headline metric (bench/judge/stats.py): over examples with one
seed each, over seeds and then examples with several (so the interval carries the seed variance; with one
seed the comparison says that variance is unknown). They are tied within noise when its 95% interval holds 0.
Runs scored on different examples are never paired: the comparison says why. Without saved predictions
(older records) the seeds' scores decide, by a t interval; with one seed each and no predictions nothing can
be said (`basis` says which rule applied).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from bench.judge import stats
from bench.results import predictions

BOOTSTRAPS = ("paired bootstrap", "hierarchical bootstrap")
ONE_SEED = "one seed: seed variance unknown"


@dataclass
class Comparison:
    diff: float  # this method minus the other (the best), on the headline metric
    low: float = math.nan
    high: float = math.nan
    basis: str = "none"  # one of BOOTSTRAPS, "seed spread", "itself" or "none"
    note: str = ""  # why there is no interval, or what it leaves out

    @property
    def paired(self) -> bool:
        return self.basis in BOOTSTRAPS

    @property
    def tied(self) -> bool:
        return self.basis != "none" and self.low <= 0 <= self.high

    def describe(self, metric: str) -> str:
        if self.basis == "none":
            return f"{metric} {self.diff:+.4f} (no interval: {self.note or 'one seed and no saved predictions'})"
        verdict = "tied within noise" if self.tied else "different"
        note = f"; {self.note}" if self.note else ""
        return (f"{metric} {self.diff:+.4f}, 95% interval [{self.low:+.4f}, {self.high:+.4f}] ({self.basis}{note}): "
                f"{verdict}")


@dataclass
class Evaluated:
    """A method's runs on one task as saved predictions: example ids and per-seed statistics [seeds, n, k]."""
    ids: np.ndarray
    stats: np.ndarray


def evaluated(runs: list[dict], metric: str) -> Evaluated | str:
    """The runs' saved per-example statistics, aligned by example id; else why they cannot be used."""
    if metric not in stats.KNOWN:
        return f"no per-example statistics for {metric}"
    loaded = []
    for r in runs:
        folder = r.get("source")
        got = example_stats_of(r, Path(folder), metric) if folder else None
        if got is None:
            return "no saved predictions"
        loaded.append(got)
    if not loaded:
        return "no runs"
    ids = loaded[0][0]
    for other, _ in loaded[1:]:
        if (why := _differ(ids, other)):
            return f"its seeds were evaluated on different examples ({why})"
    return Evaluated(ids, np.stack([s for _, s in loaded]))


def _differ(a: np.ndarray, b: np.ndarray) -> str:
    """How two example-id lists differ ('' when they are the same)."""
    if len(a) != len(b):
        return f"{len(a)} vs {len(b)} examples"
    bad = np.flatnonzero(a != b)
    return f"example ids differ at {len(bad)} positions, first at {int(bad[0])}" if len(bad) else ""


def compare(metric: str, runs_a: list[dict], runs_b: list[dict]) -> Comparison:
    """Method a against method b (a - b) on the headline metric."""
    values = [[r["metrics"].get(metric, math.nan) for r in rs] for rs in (runs_a, runs_b)]
    mean_a, mean_b = (float(np.nanmean(v)) if v else math.nan for v in values)
    a, b = evaluated(runs_a, metric), evaluated(runs_b, metric)
    if isinstance(a, Evaluated) and isinstance(b, Evaluated):
        if why := _differ(a.ids, b.ids):
            return Comparison(mean_a - mean_b, basis="none", note=f"not paired: different examples ({why})")
        if len(a.stats) == len(b.stats) == 1:
            diff, low, high = stats.paired_difference(metric, a.stats[0], b.stats[0])
            return Comparison(diff, low, high, "paired bootstrap", ONE_SEED)
        diff, low, high = stats.hierarchical(metric, a.stats, b.stats)
        note = ONE_SEED.replace("one seed", "one side has one seed") if min(len(a.stats), len(b.stats)) == 1 else ""
        return Comparison(diff, low, high, "hierarchical bootstrap", note)
    seeds = min(len(v) for v in values)
    if seeds >= 2:
        se = math.sqrt(sum(float(np.nanvar(v, ddof=1)) / len(v) for v in values))
        low, high = stats.t_interval(mean_a - mean_b, se, seeds)
        return Comparison(mean_a - mean_b, low, high, "seed spread")
    why = next(x for x in (a, b) if isinstance(x, str))
    return Comparison(mean_a - mean_b, note=f"one seed and {why}")


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
    """95% interval of a method's mean metric: over seeds and examples (several seeds), over examples (one
    seed: seed variance unknown); a single run's recorded interval when predictions are missing."""
    got = evaluated(runs, metric)
    if isinstance(got, Evaluated):
        if len(got.stats) == 1:
            return stats.bootstrap_ci(metric, got.stats[0])
        return stats.hierarchical(metric, got.stats)[1:]
    if len(runs) == 1 and f"{metric}_ci_low" in runs[0]["metrics"]:
        m = runs[0]["metrics"]
        return m[f"{metric}_ci_low"], m[f"{metric}_ci_high"]
    return None


def example_stats_of(record: dict, folder: Path, metric: str) -> tuple[np.ndarray, np.ndarray] | None:
    """(example ids, per-example statistics) of a run's saved predictions, in example order; None if absent."""
    rel = (record.get("info") or {}).get("predictions")
    path = Path(folder) / rel if rel else None
    if path is None or not path.is_file():
        return None
    return _stats_of_file(str(path.resolve()), path.stat().st_mtime_ns, metric)


@lru_cache(maxsize=256)
def _stats_of_file(path: str, mtime_ns: int, metric: str) -> tuple[np.ndarray, np.ndarray]:
    """Once per file version: a report reads each run's statistics for every pairing and interval it draws,
    and entity extraction over a whole evaluation split is not free."""
    p = predictions.load(Path(path))
    ids = np.asarray(p["example"])
    out = stats.example_stats(metric, p["gold"], p["pred"])
    ids.flags.writeable = out.flags.writeable = False  # shared by every caller
    return ids, out
