"""Whether one metric got worse beyond noise: the thresholds and the verdict rule `bench compare` applies,
also used by the history's trend series (bench/results/history.py). No I/O here.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

from bench.core.errors import UsageError
from bench.core.metrics import METRICS, metric_info
from bench.core.units import name_value, parse_fraction, parse_number

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
