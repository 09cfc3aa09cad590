"""Whether one metric got worse beyond noise: the thresholds and the verdict rule `bench compare` applies,
also used by the history's trend series (bench/results/history.py). No I/O here.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

from bench.core.errors import UsageError
from bench.core.metrics import METRICS, metric_info
from bench.core.units import name_value, parse_fraction, parse_number
from bench.results.store import latest_runs

KINDS = ["task", "memory", "speed", "size"]
# Defaults, documented in the README: task metrics by an absolute amount in their own unit, the others
# relative to the baseline. Task metrics in other units than a ratio (loss in nats) get a wider floor.
DEFAULT_FLOOR = {"ratio": 0.01, "*": 0.1}
DEFAULT_RELATIVE = {"memory": 0.10, "speed": 0.25, "size": 0.05}
# Allocator jitter moves RSS by a few MB between identical runs; on small figures (peak_rss_increase_mb
# of a tiny model) 10% of the baseline is less than that.
MIN_ALLOWED = {"memory": 10.0}  # MB
DEFAULT_K = 2.0


@dataclass
class Thresholds:
    k: float = DEFAULT_K
    overrides: dict[str, float] = field(default_factory=dict)  # metric name or kind -> threshold

    def of(self, metric: str) -> tuple[str, float]:
        """('absolute', floor) for task metrics, ('relative', fraction) for the others."""
        info = metric_info(metric)
        mode = "absolute" if info.kind == "task" else "relative"
        if metric in self.overrides:
            return mode, self.overrides[metric]
        if info.kind in self.overrides:
            return mode, self.overrides[info.kind]
        if mode == "absolute":
            return mode, DEFAULT_FLOOR.get(info.unit, DEFAULT_FLOOR["*"])
        return mode, DEFAULT_RELATIVE.get(info.kind, DEFAULT_RELATIVE["speed"])


def parse_thresholds(items: list[str] | None, k: float = DEFAULT_K) -> Thresholds:
    """--threshold NAME=VALUE, NAME a metric or a kind; task metrics take an absolute amount (0.02, 2%),
    the others a fraction of the baseline (0.2, 20%)."""
    out = Thresholds(k=k)
    for item in items or []:
        name, value = name_value(item, "--threshold")
        if name is None:
            raise UsageError(f"bad --threshold {item!r} (expected NAME=VALUE, NAME a metric or one of "
                              f"{', '.join(KINDS)})")
        if name not in KINDS and (metric_info(name).higher_is_better is None):
            raise UsageError(f"unknown metric {name!r} in --threshold (valid: {', '.join(KINDS)} or a metric "
                              f"with a direction: {', '.join(gated_metrics())})")
        absolute = name == "task" or (name not in KINDS and metric_info(name).kind == "task")
        out.overrides[name] = parse_number(value) if absolute else parse_fraction(value)
    return out


def gated_metrics() -> list[str]:
    return [m for m, info in METRICS.items() if info.higher_is_better is not None]


def _pooled_std(*stds: float) -> float:
    values = [s for s in stds if s is not None and not math.isnan(s)]
    return math.sqrt(sum(s * s for s in values) / len(values)) if values else math.nan


def verdict(metric: str, base: float, base_std: float, cand: float, cand_std: float,
            thresholds: Thresholds) -> tuple[str, float]:
    """(verdict, allowed worsening) for one metric: regressed | improved | unchanged | n/a."""
    better_up = metric_info(metric).higher_is_better
    if better_up is None or base is None or cand is None or math.isnan(base) or math.isnan(cand):
        return "n/a", math.nan
    mode, value = thresholds.of(metric)
    allowed = value if mode == "absolute" else max(value * abs(base), MIN_ALLOWED.get(metric_info(metric).kind, 0.0))
    noise = thresholds.k * _pooled_std(base_std, cand_std)
    if not math.isnan(noise):
        allowed = max(allowed, noise)
    worse = (base - cand) if better_up else (cand - base)
    if worse > allowed:
        return "regressed", allowed
    if -worse > allowed:
        return "improved", allowed
    return "unchanged", allowed


# --- the nightly gate: few declared metrics, a noise test per comparison, Holm across them -----------------

# What `bench compare` gates by default: the task's headline metric, peak training memory (RSS on a CPU, the
# allocator's peak on a GPU), the size of what the method saves, and training speed (only where the hardware
# matches and no run was contended). `--metrics` names others (or kinds).
HEADLINE = "headline"
DEFAULT_GATE = (HEADLINE, "peak_train_mb", "cuda_peak_train_allocated_mb", "adapter_tensor_mb", "train_examples_per_s")
ALPHA = 0.01  # family-wise error rate of one comparison (a night): about one false alarm in 100 quiet nights


def allowed_change(metric: str, base: float, thresholds: Thresholds) -> float:
    """The practical threshold: how much worse (or better) a metric must get to matter at all."""
    mode, value = thresholds.of(metric)
    return value if mode == "absolute" else max(value * abs(base), MIN_ALLOWED.get(metric_info(metric).kind, 0.0))


def seed_noise(records: list[dict]) -> dict[tuple[str, str], tuple[float, int]]:
    """(config id, metric) -> (seed-to-seed variance, degrees of freedom), pooled over every invocation that
    ran the configuration with two or more seeds: a nightly history gives a far better noise estimate than
    one night's three seeds, and pooling within invocations is not fooled by real changes between them."""
    groups: dict[tuple, list[float]] = {}
    # One record per run and invocation: a run read twice (history and folder) or re-run is not another seed.
    for r in latest_runs(records, per=("invocation",)):
        if r.get("status") != "ok" or not r.get("config_id"):
            continue
        for name, value in (r.get("metrics") or {}).items():
            if isinstance(value, (int, float)) and not math.isnan(value):
                groups.setdefault((r["config_id"], name, r.get("invocation")), []).append(float(value))
    pooled: dict[tuple[str, str], list[float]] = {}
    for (config, name, _), values in groups.items():
        if len(values) > 1:
            mean = sum(values) / len(values)
            acc = pooled.setdefault((config, name), [0.0, 0])
            acc[0] += sum((v - mean) ** 2 for v in values)
            acc[1] += len(values) - 1
    return {key: (ss / df, int(df)) for key, (ss, df) in pooled.items()}


def worse_p(worse: float, se: float, df: float | None = None) -> float:
    """One-sided p-value that the candidate is really worse by `worse` (its standard error `se`): Student's t
    with `df` degrees of freedom, the normal distribution without. 1 - p is the p-value of an improvement."""
    from scipy.stats import norm, t
    if se == 0:
        return 0.0 if worse > 0 else 1.0 if worse < 0 else 0.5
    return float(t.sf(worse / se, df) if df else norm.sf(worse / se))


def holm(pvalues: list[float], alpha: float = ALPHA) -> list[bool]:
    """Holm's step-down rule: which of the comparisons are significant with a family-wise error of `alpha`."""
    order = sorted(range(len(pvalues)), key=lambda i: pvalues[i])
    significant = [False] * len(pvalues)
    for rank, i in enumerate(order):
        if pvalues[i] > alpha / (len(pvalues) - rank):
            break
        significant[i] = True
    return significant
