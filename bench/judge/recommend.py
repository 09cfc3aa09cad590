"""`bench recommend`: which method to use under given constraints, from measured runs.

Per task, methods are averaged over their successful runs of one condition (budget, model, device: the
newest selected run's unless given; the runs selected: --commit's, --since's, else the newest invocation's), filtered by the constraints, ranked by the chosen priority, and the
Pareto-optimal set over (task metric up, memory down, training speed up) is shown. Methods whose accuracy
is near chance rank last: their cost figures describe a fine-tune that did not work.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field, replace

import pandas as pd

from bench.core.errors import UsageError
from bench.core.metrics import chance_level, headline_metric, mean_std, metric_info, near_chance
from bench.core.units import format_mb
from bench.judge import ties
from bench.judge.pareto import pareto_mask
from bench.results.store import latest_runs

PRIORITIES = ["metric", "memory", "speed", "size"]
SPEED = "train_examples_per_s"
SIZE = "adapter_tensor_mb"


HEADLINE, MEMORY = "<headline>", "<memory>"  # placeholders for the task's metric and the device's memory
FORGETTING = "forgetting"  # causal-LM tasks: loss on general text after training minus before, nats per token
# --max-overhead bounds the adapter's generation overhead: the larger of its TTFT and TPOT overheads over the base
# model with the adapter switched off (each a mean over seeds, in %; bench/meters/generation.py), so a prompt method
# that slows the prefill and a LoRA that slows every decode step are both held to it. Figures of the unmerged
# adapter (merging removes a LoRA's overhead; the report shows merged TTFT/TPOT). A method that records neither
# (full fine-tuning, zero-shot, methods that change the base in place: no adapter to switch off) counts as 0.
OVERHEAD = "inference_overhead_pct"
OVERHEAD_OF = ("ttft_overhead_pct", "tpot_overhead_pct")


@dataclass
class Constraint:
    metric: str  # a metric name, HEADLINE, MEMORY or OVERHEAD
    bound: float
    upper: bool  # True: value <= bound; False: value >= bound
    missing_ok: bool = False  # a method without the figure passes (--max-forgetting; the output says which)

    @property
    def label(self) -> str:
        return f"{_name(self.metric)} {'<=' if self.upper else '>='} {_show(self.metric, self.bound)}"

    def ok(self, value: float) -> bool:
        if math.isnan(value):
            return self.missing_ok
        return value <= self.bound if self.upper else value >= self.bound


_NUMBER = re.compile(r"\s*([-+]?(?:\d+\.?\d*|\.\d+)(?:e[-+]?\d+)?)\s*(%|nats?)?\s*", re.IGNORECASE)


def parse_forgetting(text: str) -> float:
    """--max-forgetting: nats per token ('0.05', '0.05nats'); negative bounds (the loss must fall) are allowed."""
    match = _NUMBER.fullmatch(str(text))
    if match is None or (match.group(2) or "nats").lower() not in ("nat", "nats"):
        raise UsageError(f"bad --max-forgetting {text!r} (expected nats per token of general text, e.g. 0.05)")
    return float(match.group(1))


def parse_overhead(text: str) -> float:
    """--max-overhead: percent of the base model's latency ('10%' or '10' -> 10.0), 0 or more (above 100 allowed)."""
    match = _NUMBER.fullmatch(str(text))
    if match is None or (match.group(2) or "%") != "%" or float(match.group(1)) < 0:
        raise UsageError(f"bad --max-overhead {text!r} (expected a percentage of the base model's latency, "
                         f"0 or more, e.g. 10% or 25)")
    return float(match.group(1))


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



def memory_metric(device: str, records: list[dict]) -> str:
    """GPU memory on CUDA runs (what limits a GPU), the process's peak RSS in training otherwise."""
    if str(device).startswith("cuda") and any("cuda_max_allocated_mb" in r["metrics"] for r in records):
        return "cuda_max_allocated_mb"
    return "peak_train_mb"


def select_condition(records: list[dict], budget=None, model=None, device=None) -> tuple[dict, list[dict]]:
    """Keep one measured condition: numbers from different budgets, models or devices never share a mean. What is
    not given is the newest of `records`' (pass the runs selected to rank: `select_runs`)."""
    wanted = {"budget": budget, "model": model, "device": device}
    newest = max(records, key=lambda r: r.get("finished_at") or "")
    condition = {k: v if v is not None else newest.get(k) for k, v in wanted.items()}
    kept = [r for r in records if all(r.get(k) == v for k, v in condition.items())]
    return condition, kept


def select_runs(records: list[dict], since: str | None, commit: str | None,
                folders: bool = False) -> tuple[list[dict], str]:
    """The runs to rank: those of one git commit (prefix), those finished since a date, or by default the newest
    invocation's, never an average over the whole history (old commits and hosts included). Results folders
    given by name are ranked whole: each is an invocation, and a user naming several wants them all."""
    if commit:
        kept = [r for r in records if str(r.get("git_commit") or (r.get("env") or {}).get("git_commit") or "")
                .startswith(commit)]
        what = f"commit {commit}"
    elif since:
        kept = [r for r in records if str(r.get("finished_at") or "") >= since]
        what = f"finished since {since}"
    elif folders:
        return records, "the results folders given"
    else:
        newest = max(records, key=lambda r: r.get("finished_at") or "").get("invocation")
        return [r for r in records if r.get("invocation") == newest], f"invocation {newest}"
    if not kept:
        raise UsageError(f"no successful runs of {what} (drop --commit/--since to use the newest invocation)")
    return kept, what


def method_table(records: list[dict], metrics: list[str]) -> pd.DataFrame:
    rows = []
    for method in dict.fromkeys(r["method"] for r in records):
        runs = [r["metrics"] for r in records if r["method"] == method]
        row = {"method": method, "n": len(runs)}
        for m in metrics:
            row[m], row[f"{m}_std"], _ = mean_std(x.get(m) for x in runs)
        rows.append(row)
    return pd.DataFrame(rows)


def recommend(records: list[dict], suite: str, task: str, constraints: list[Constraint], priority: str = "metric",
              budget=None, model=None, device=None, since: str | None = None, commit: str | None = None,
              folders: bool = False) -> Result:
    """`folders`: the records are results folders' (each run once, a re-run replacing it), not the history's."""
    if priority not in PRIORITIES:
        raise UsageError(f"unknown priority {priority!r} (valid: {', '.join(PRIORITIES)})")
    # a re-run replaces its earlier record, never adds a seed; the history keeps each night's run
    records = latest_runs(records) if folders else latest_runs(records, per=("invocation",))
    ok = [r for r in records if r.get("suite") == suite and r.get("task") == task and r.get("status") == "ok"]
    if not ok:
        raise UsageError(f"no successful runs of {suite}/{task} to recommend from")
    # The runs to rank first (a commit, a date, the newest invocation: of the condition asked for, if any), then the
    # condition not asked for from the newest of those: never from the newest run of the whole history.
    given = {k: v for k, v in (("budget", budget), ("model", model), ("device", device)) if v is not None}
    ok = [r for r in ok if all(r.get(k) == v for k, v in given.items())]
    if not ok:
        raise UsageError(f"no successful runs of {suite}/{task} with "
                         + ", ".join(f"{k} {v}" for k, v in given.items()))
    ok, selection = select_runs(ok, since, commit, folders)
    condition, ok = select_condition(ok, budget, model, device)
    head, memory = headline_metric(ok), memory_metric(condition["device"], ok)
    if head is None:
        raise UsageError(f"task {task!r} records no task metric")
    placeholders = {HEADLINE: head, MEMORY: memory}
    constraints = [replace(c, metric=placeholders.get(c.metric, c.metric)) for c in constraints]
    overhead = any(c.metric == OVERHEAD for c in constraints)
    wanted = list(dict.fromkeys([head, memory, SPEED, "trainable_pct", SIZE, "latency_p50_ms",
                                 "majority_rate", "majority_macro_f1"] + [c.metric for c in constraints]
                                + (list(OVERHEAD_OF) if overhead else [])))
    table = method_table(ok, wanted)
    notes = []
    if overhead:  # the worse of TTFT's and TPOT's; no figure: no adapter switched off, so none
        measured = table[list(OVERHEAD_OF)].max(axis=1, skipna=True)
        table[OVERHEAD], table[f"{OVERHEAD}_std"] = measured.fillna(0.0), math.nan
        notes.append(_missing_note(table, measured.isna(), "--max-overhead counts {} as 0%",
                                   "an adapter overhead figure (ttft/tpot_overhead_pct)",
                                   "no adapter switched off at inference"))
    for c in constraints:
        if c.missing_ok:
            notes.append(_missing_note(table, table[c.metric].isna(), "--max-forgetting keeps {}",
                                       "a forgetting figure", "not excluded by it"))
    table["near_chance"] = [near_chance(a, chance_level(head, m, f)) for a, m, f
                            in zip(table[head], table["majority_rate"], table["majority_macro_f1"])]
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
    # Adapter size breaks ties only when asked for (--priority size): a few kB should not outrank accuracy.
    order = {"metric": [(head, False), (memory, True), (SPEED, False)],
             "memory": [(memory, True), (head, False), (SPEED, False)],
             "speed": [(SPEED, False), (head, False), (memory, True)],
             "size": [(SIZE, True), (head, False), (memory, True), (SPEED, False)]}[priority]
    by_method = {m: [r for r in ok if r["method"] == m] for m in table.method}
    eligible = table[table.eligible]
    ranked, decisions = [], {}
    for chance in (False, True):  # near-chance methods rank after every working one
        pool = list(eligible.method[eligible.near_chance == chance])
        while pool:
            winner, decisions[winner] = pick(pool, table.set_index("method"), by_method, order, head)
            ranked.append(winner)
            pool.remove(winner)
    table["rank"] = table.method.map({m: i + 1 for i, m in enumerate(ranked)})
    table = table.sort_values(["rank", "method"], na_position="last").reset_index(drop=True)
    title = (f"{suite}/{task}: budget {condition['budget']}, model {condition['model']}, device {condition['device']} "
             f"({len(ok)} runs{', ' + selection if selection else ''})")
    result = Result(title, table, head, memory, constraints, notes=[n for n in notes if n])
    if not ranked:
        result.notes.append(nothing_satisfies(table, constraints))
        return result
    result.top = ranked[0]
    result.why = explain(table, result.top, priority, head, memory, decisions[result.top], order)
    if table[table.eligible].n.max() == 1:
        result.notes.append("evidence: one seed per method, so the seed-to-seed variance is unknown; run --seeds 0,1,2 "
                            "before relying on a close call")
    if table.set_index("method").loc[result.top, "near_chance"]:
        result.notes.append(f"warning: every eligible method scored near chance on {head}; "
                            "train longer (a larger --budget) before trusting this choice")
    return result


def _missing_note(table: pd.DataFrame, missing: pd.Series, does: str, what: str, why: str) -> str:
    """Which methods a constraint could not judge by a figure and what it did with them (`does` holds a {} for
    them), e.g. `note: --max-forgetting keeps ia3 (recorded no forgetting figure: not excluded by it)`; '' when every
    method has the figure."""
    methods = list(table.method[missing.values])
    if not methods:
        return ""
    if len(methods) == len(table):
        return (f"note: {does.format('every method')}: none recorded {what} (causal-LM tasks record it), so it "
                f"excludes none")
    return f"note: {does.format(', '.join(methods))} (recorded no {what.split(' ', 1)[1]}: {why})"


def same_within_noise(metric: str, head: str, rows, by_method: dict, a: str, b: str) -> tuple[bool, str]:
    """(a ties b on `metric`, how that was judged). The headline metric: the paired test (bench/judge/ties.py);
    cost metrics: `bench compare`'s noise thresholds (a 2 MB gap is not a trade)."""
    if metric == head:
        c = ties.compare(head, by_method[a], by_method[b])
        return c.tied, (f"{a} - {b}: 95% interval [{c.low:+.4f}, {c.high:+.4f}] by {c.basis}"
                        if c.basis != "none" else "one seed, no saved predictions: no interval")
    x, y = rows.loc[a], rows.loc[b]
    if math.isnan(x[metric]) or math.isnan(y[metric]):
        return False, "not measured"
    worse = _clearly_worse(metric, x[metric], x[f"{metric}_std"], y[metric], y[f"{metric}_std"]) or \
        _clearly_worse(metric, y[metric], y[f"{metric}_std"], x[metric], x[f"{metric}_std"])
    return not worse, "noise thresholds of bench compare"


def pick(pool: list[str], rows, by_method: dict, order: list[tuple[str, bool]], head: str) -> tuple[str, list]:
    """The next method in the ranking: criteria in order, each keeping only the methods tied (within noise)
    with the best on it, until one is left. Returns it and the steps that decided: [(metric, best, [(rival,
    how judged)] tied with the best and carried to the next criterion, [rivals dropped here])]."""
    steps, cands = [], list(pool)
    for metric, ascending in order:
        valued = [m for m in cands if not math.isnan(rows.loc[m, metric])]
        if not valued:
            continue
        best = sorted(valued, key=lambda m: rows.loc[m, metric], reverse=not ascending)[0]
        judged = {m: same_within_noise(metric, head, rows, by_method, m, best) for m in cands if m != best}
        keep = [best] + [m for m in cands if m != best and judged[m][0]]
        steps.append((metric, best, [(m, judged[m][1]) for m in keep[1:]],
                      [(m, judged[m][1]) for m in cands if m not in keep]))
        cands = keep
        if len(cands) == 1:
            return cands[0], steps
    # Still tied on every criterion: the best point estimate of the priority metric decides.
    metric, ascending = order[0]
    valued = [m for m in cands if not math.isnan(rows.loc[m, metric])] or cands
    return sorted(valued, key=lambda m: rows.loc[m, metric], reverse=not ascending)[0], steps


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
    from bench.judge.compare import Thresholds, verdict
    return verdict(metric, other, other_std, mine, mine_std, Thresholds())[0] == "regressed"


def explain(table: pd.DataFrame, top: str, priority: str, head: str, memory: str, steps: list,
            order: list[tuple[str, bool]]) -> str:
    """What decided, as the ranking rule applied it: the criteria on which rivals tied with the top choice
    within noise, the one that separated it, then what it trades away against the others."""
    rows = table[table.eligible].set_index("method")
    if len(rows) == 1:
        return f"{top} is the only method that meets the constraints."
    parts = []
    for i, (metric, best, tied, dropped) in enumerate(steps):
        if tied:  # the best on this criterion and those tied with it, less the top choice itself
            how_of = dict(tied)
            members = [best] + [m for m, _ in tied]
            rivals = ", ".join(f"{m} ({_show(metric, rows.loc[m, metric])}; {how_of.get(m if m != best else top)})"
                               for m in members if m != top)
            parts.append(f"{top} ties on {_name(metric)} within noise ({_show(metric, rows.loc[top, metric])}) with "
                         f"{rivals}")
        elif dropped and best == top:
            m, how = dropped[0] if len(dropped) == 1 else max(
                dropped, key=lambda d: rows.loc[d[0], metric] * (1 if metric in (head, SPEED) else -1))
            parts.append(f"{top} has the best {_name(metric)}" if i == 0 else f"{_name(metric)} decided")
            parts[-1] += (f": {_show(metric, rows.loc[top, metric])} vs {_show(metric, rows.loc[m, metric])} for {m}, "
                          f"the closest rival ({how})")
            break
    if steps and steps[-1][2]:  # tied on every criterion
        parts.append(f"tied within noise on every criterion, so the best point estimate of {_name(order[0][0])} decided")
    first, ascending = order[0]
    values = rows[first].dropna()
    leader = (values.idxmin() if ascending else values.idxmax()) if len(values) else top
    if leader != top:  # a rival has the better point estimate on what the user asked for: say what is accepted
        parts.append(f"it accepts {_name(first)} {_show(first, rows.loc[top, first])} against "
                     f"{_show(first, rows.loc[leader, first])} for {leader}, the best point estimate "
                     f"(a gap of {abs(rows.loc[top, first] - rows.loc[leader, first]):.4g}, within noise)")
    if not parts:  # it was alone in its group: every other eligible method scored near chance
        parts.append(f"{top} is the only eligible method not near chance on {head} "
                     f"({_show(head, rows.loc[top, head])}; the others learned nothing measurable)")
    axes = {"metric": (head, True), "memory": (memory, False), "speed": (SPEED, True)}
    others = rows.drop(index=top)
    trades = []
    for name, (metric, higher) in axes.items():
        if name == priority or others[metric].dropna().empty:
            continue
        best = others[metric].idxmax() if higher else others[metric].idxmin()
        me = rows.loc[top]
        if _clearly_worse(metric, me[metric], me[f"{metric}_std"], others.loc[best, metric], others.loc[best, f"{metric}_std"]):
            trades.append(f"{_name(metric)} ({_show(metric, me[metric])} vs {_show(metric, others.loc[best, metric])} "
                          f"for {best})")
    trade = ("it trades away " + " and ".join(trades)) if trades else \
        "no other eligible method is clearly better on the other axes"
    return "; ".join(parts) + f". Among the methods that meet the constraints, {trade}."


def _name(metric: str) -> str:
    return {"peak_train_mb": "peak memory", "cuda_max_allocated_mb": "peak GPU memory",
            SPEED: "training speed", "trainable_pct": "trainable share", SIZE: "adapter size",
            "latency_p50_ms": "latency", OVERHEAD: "adapter overhead (worse of TTFT, TPOT)"}.get(metric, metric)


def _show(metric: str, value: float) -> str:
    if value is None or math.isnan(value):
        return "not measured"
    unit = "%" if metric == OVERHEAD else metric_info(metric).unit
    if unit == "nats":
        return f"{value:.3g} nats"
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
        # the figures a --max-forgetting / --max-overhead bound judged, beside the others
        **{label: [_show(metric, v) for v in t[metric]] for metric, label in ((FORGETTING, "forgetting"),
                                                                               (OVERHEAD, "overhead"))
           if any(c.metric == metric for c in result.constraints)},
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
