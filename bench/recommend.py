"""`bench recommend`: which method to use under given constraints, from measured runs.

Per task, methods are averaged over their successful runs of one condition (budget, model, device: the
newest run's unless given), filtered by the constraints, ranked by the chosen priority, and the
Pareto-optimal set over (task metric up, memory down, training speed up) is shown. Methods whose accuracy
is near chance rank last: their cost figures describe a fine-tune that did not work.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import pandas as pd

from bench.errors import UnknownName
from bench.metrics import metric_info
from bench.store import latest_runs
from bench.units import format_mb
from reports.pareto import pareto_mask
from reports.tables import near_chance

PRIORITIES = ["metric", "memory", "speed"]
SPEED = "train_examples_per_s"


HEADLINE, MEMORY = "<headline>", "<memory>"  # placeholders for the task's metric and the device's memory


@dataclass
class Constraint:
    metric: str  # a metric name, HEADLINE or MEMORY
    bound: float
    upper: bool  # True: value <= bound; False: value >= bound

    @property
    def label(self) -> str:
        return f"{_name(self.metric)} {'<=' if self.upper else '>='} {_show(self.metric, self.bound)}"

    def ok(self, value: float) -> bool:
        return not math.isnan(value) and (value <= self.bound if self.upper else value >= self.bound)


@dataclass
class Result:
    title: str
    table: pd.DataFrame  # one row per method: figures, eligible, reason, pareto, rank
    headline: str
    memory: str
    constraints: list[Constraint]
    top: str | None = None
    why: str = ""
    notes: list[str] = field(default_factory=list)


def headline_metric(suite: str, task: str, records: list[dict]) -> str:
    recorded = next((r["info"]["task"]["metric"] for r in reversed(records) if (r.get("info") or {}).get("task")),
                    None)
    if recorded:
        return recorded
    from suites import SUITES  # records from before runs recorded their headline metric
    for t in SUITES.get(suite, []):
        if t.name == task:
            return t.metric
    # A task no longer registered: its first metric with a declared "higher is better" task direction.
    for r in records:
        for name in r.get("metrics", {}):
            info = metric_info(name)
            if info.kind == "task" and info.higher_is_better:
                return name
    raise UnknownName(f"task {task!r} records no task metric")


def memory_metric(device: str, records: list[dict]) -> str:
    """GPU memory on CUDA runs (what limits a GPU), the process's peak RSS otherwise."""
    if str(device).startswith("cuda") and any("cuda_max_allocated_mb" in r["metrics"] for r in records):
        return "cuda_max_allocated_mb"
    return "peak_rss_mb"


def select_condition(records: list[dict], budget=None, model=None, device=None) -> tuple[dict, list[dict]]:
    """Keep one measured condition: numbers from different budgets, models or devices never share a mean."""
    wanted = {"budget": budget, "model": model, "device": device}
    newest = max(records, key=lambda r: r.get("finished_at") or "")
    condition = {k: v if v is not None else newest.get(k) for k, v in wanted.items()}
    kept = [r for r in records if all(r.get(k) == v for k, v in condition.items())]
    return condition, kept


def method_table(records: list[dict], metrics: list[str]) -> pd.DataFrame:
    rows = []
    for method in dict.fromkeys(r["method"] for r in records):
        runs = [r["metrics"] for r in records if r["method"] == method]
        row = {"method": method, "n": len(runs)}
        for m in metrics:
            values = pd.Series([x.get(m, math.nan) for x in runs], dtype=float).dropna()
            row[m] = values.mean() if len(values) else math.nan
            row[f"{m}_std"] = values.std() if len(values) > 1 else math.nan
        rows.append(row)
    return pd.DataFrame(rows)


def recommend(records: list[dict], suite: str, task: str, constraints: list[Constraint], priority: str = "metric",
              budget=None, model=None, device=None) -> Result:
    if priority not in PRIORITIES:
        raise UnknownName(f"unknown priority {priority!r} (valid: {', '.join(PRIORITIES)})")
    records = latest_runs(records, per=("invocation",))  # a re-run replaces its earlier record, never adds a seed
    ok = [r for r in records if r.get("suite") == suite and r.get("task") == task and r.get("status") == "ok"]
    if not ok:
        raise UnknownName(f"no successful runs of {suite}/{task} to recommend from")
    condition, ok = select_condition(ok, budget, model, device)
    if not ok:
        raise UnknownName(f"no successful runs of {suite}/{task} with budget {condition['budget']}, model "
                          f"{condition['model']}, device {condition['device']}")
    head, memory = headline_metric(suite, task, ok), memory_metric(condition["device"], ok)
    placeholders = {HEADLINE: head, MEMORY: memory}
    constraints = [Constraint(placeholders.get(c.metric, c.metric), c.bound, c.upper) for c in constraints]
    wanted = list(dict.fromkeys([head, memory, SPEED, "trainable_pct", "adapter_size_mb", "latency_p50_ms",
                                 "majority_rate"] + [c.metric for c in constraints]))
    table = method_table(ok, wanted)
    table["near_chance"] = [head == "accuracy" and near_chance(a, m)
                            for a, m in zip(table[head], table["majority_rate"])]
    reasons = []
    for row in table.itertuples(index=False):
        failed = [f"{c.label} ({_show(c.metric, getattr(row, c.metric))})" for c in constraints
                  if not c.ok(getattr(row, c.metric))]
        reasons.append("fails " + ", ".join(failed) if failed else "")
    table["eligible"] = [not r for r in reasons]
    table["reason"] = reasons
    eligible = table[table.eligible].copy()
    objectives = [(head, True), (memory, False), (SPEED, True)]
    table["pareto"] = False
    # A near-chance run is a failed fine-tune, not a trade-off: it joins the front only if all are.
    front = eligible[~eligible.near_chance] if (~eligible.near_chance).any() else eligible
    if len(front):
        mask = pareto_mask(front[[m for m, _ in objectives]].values.tolist(), [up for _, up in objectives])
        table.loc[front.index, "pareto"] = mask
    order = {"metric": [(head, False), (memory, True), (SPEED, False)],
             "memory": [(memory, True), (head, False), (SPEED, False)],
             "speed": [(SPEED, False), (head, False), (memory, True)]}[priority]
    eligible = table[table.eligible].sort_values(["near_chance"] + [m for m, _ in order],
                                                 ascending=[True] + [a for _, a in order], na_position="last")
    table["rank"] = pd.Series(range(1, len(eligible) + 1), index=eligible.index)
    table = table.sort_values(["rank", "method"], na_position="last").reset_index(drop=True)
    title = (f"{suite}/{task}: budget {condition['budget']}, model {condition['model']}, device {condition['device']} "
             f"({len(ok)} runs)")
    result = Result(title, table, head, memory, constraints)
    if eligible.empty:
        result.notes.append(nothing_satisfies(table, constraints))
        return result
    result.top = eligible.iloc[0].method
    result.why = explain(table, result.top, priority, head, memory)
    if eligible.iloc[0].near_chance:
        result.notes.append(f"warning: every eligible method scored near chance on {head}; "
                            "train longer (a larger --budget) before trusting this choice")
    return result


def nothing_satisfies(table: pd.DataFrame, constraints: list[Constraint]) -> str:
    """Say which constraint excludes what, and the best value any method reached for it."""
    parts = []
    for c in constraints:
        values = table[c.metric].dropna()
        if values.empty:
            parts.append(f"{c.label}: no method recorded {c.metric}")
            continue
        best = values.idxmin() if c.upper else values.idxmax()
        passing = int(sum(c.ok(v) for v in table[c.metric]))
        parts.append(f"{c.label}: {passing} of {len(table)} methods pass (best: {table.method[best]} at "
                     f"{_show(c.metric, values[best])})")
    return "no method satisfies all the constraints. " + "; ".join(parts) + ". Relax one of them."


def _clearly_worse(metric: str, mine, mine_std, other, other_std) -> bool:
    """Worse by more than `bench compare` would call noise (same thresholds, same seed-std rule)."""
    from bench.compare import Thresholds, verdict
    return verdict(metric, other, other_std, mine, mine_std, Thresholds())[0] == "regressed"


def explain(table: pd.DataFrame, top: str, priority: str, head: str, memory: str) -> str:
    """One sentence: why the top choice wins (against the runner-up) and what it trades away.

    Differences within `bench compare`'s noise thresholds count as ties, so a 2 MB gap is not a trade.
    """
    eligible = table[table.eligible]
    me = eligible[eligible.method == top].iloc[0]
    others = eligible[eligible.method != top]
    axes = {"metric": (head, True), "memory": (memory, False), "speed": (SPEED, True)}
    axis, up = axes[priority]
    if others.empty:
        return f"{top} is the only method that meets the constraints."
    runner = others.sort_values(axis, ascending=not up, na_position="last").iloc[0]
    versus = f"{_show(axis, me[axis])} vs {_show(axis, runner[axis])} for {runner.method}"
    if _clearly_worse(axis, runner[axis], runner[f"{axis}_std"], me[axis], me[f"{axis}_std"]):
        win = f"{top} has the best {_name(axis)} ({versus})"
    else:
        win = f"{top} ties on {_name(axis)} within noise ({versus}) and wins on the next criteria"
    trades = []
    for name, (metric, higher) in axes.items():
        if name == priority or others[metric].dropna().empty:
            continue
        best = others.loc[others[metric].idxmax() if higher else others[metric].idxmin()]
        if _clearly_worse(metric, me[metric], me[f"{metric}_std"], best[metric], best[f"{metric}_std"]):
            trades.append(f"{_name(metric)} ({_show(metric, me[metric])} vs {_show(metric, best[metric])} "
                          f"for {best.method})")
    trade = ("it trades away " + " and ".join(trades)) if trades else \
        "no other eligible method is clearly better on the other axes"
    return f"{win} among the methods that meet the constraints; {trade}."


def _name(metric: str) -> str:
    return {"peak_rss_mb": "peak memory", "cuda_max_allocated_mb": "peak GPU memory",
            SPEED: "training speed", "trainable_pct": "trainable share", "adapter_size_mb": "adapter size",
            "latency_p50_ms": "latency"}.get(metric, metric)


def _show(metric: str, value: float) -> str:
    if value is None or math.isnan(value):
        return "not measured"
    unit = metric_info(metric).unit
    if unit == "MB":
        return format_mb(value)
    if unit == "%":
        return f"{value:.3g}%"
    if unit == "examples/s":
        return f"{value:.3g} ex/s"
    if unit == "ms":
        return f"{value:.3g} ms"
    return f"{value:.4g}"


def format_result(result: Result, priority: str) -> str:
    lines = [result.title]
    if result.constraints:
        lines.append("constraints: " + ", ".join(c.label for c in result.constraints))
    t = result.table
    shown = pd.DataFrame({
        "rank": [str(int(r)) if pd.notna(r) else "-" for r in t["rank"]],
        "method": t.method,
        result.headline: [_show(result.headline, v) + (f" ± {s:.2g}" if pd.notna(s) else "") + (" (near chance)" if nc else "")
                          for v, s, nc in zip(t[result.headline], t[f"{result.headline}_std"], t.near_chance)],
        "memory": [_show(result.memory, v) for v in t[result.memory]],
        "train speed": [_show(SPEED, v) for v in t[SPEED]],
        "trainable": [_show("trainable_pct", v) for v in t.trainable_pct],
        "n": t.n,
        "pareto": ["yes" if p else "" for p in t.pareto],
        "excluded": t.reason,
    })
    lines += ["", shown.to_string(index=False), ""]
    pareto = list(t.method[t.pareto])
    if pareto:
        lines.append(f"Pareto-optimal ({result.headline} up, {_name(result.memory)} down, training speed up): "
                     + ", ".join(pareto))
    if result.top:
        lines.append(f"Recommendation (priority {priority}): {result.top}. {result.why}")
    lines += result.notes
    return "\n".join(lines)
