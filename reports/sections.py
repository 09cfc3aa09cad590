"""What a report shows, independent of its format: one section per measured condition, one row per method.

A section is a (suite, task, budget, model, device) combination, so numbers measured under different
conditions never share a mean, a table or a plot. The HTML and Markdown reports both render these.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

from bench.core.metrics import (
    CONTENDED_ABOVE,
    best_first,
    contended,
    headline_metric,
    mean_std,
    metric_info,
    recorded_task_info,
    reference_spread,
)

# A parameter count has no declared direction in bench/core/metrics.py (it is a size, not a goal), but in a
# comparison of fine-tuning methods fewer trainable parameters is the point, as for `trainable_pct`.
DIRECTION_OF = {"trainable_params": "trainable_pct"}

# Summary columns after the headline metric: metric name -> column label.
COST_COLUMNS = {
    "trainable_params": "trainable params",
    "trainable_pct": "trainable share",
    "peak_train_mb": "peak RSS",
    "cuda_max_allocated_mb": "peak GPU memory",
    "train_examples_per_s": "train throughput",
    "train_mfu": "MFU",  # of the device's measured peak at the run's precision
    "energy_j": "train energy",  # where NVML or RAPL report it (the column is dropped when no run has it)
    "latency_p50_ms": "latency p50",
    "latency_p95_ms": "latency p95",
    "latency_merged_p50_ms": "latency p50 merged",
    "adapter_tensor_mb": "adapter size",
}
# A decoder LM's section (`causal_lm`): what a generator's user weighs instead. The headline (generated accuracy or
# span F1) comes first and, where the section has a zero-shot row, its gain over that row; memory is GPU memory
# (allocated) on CUDA runs, the process's peak RSS otherwise; columns no run recorded (ll_accuracy on NER) are dropped.
LLM_COLUMNS = {
    "invalid_rate": "invalid rate",
    "ll_accuracy": "ll accuracy",  # the label words' likelihood ranking (classification tasks)
    "forgetting": "forgetting",
    "trainable_params": "trainable params",
    "peak_train_mb": "peak train RSS",
    "cuda_peak_train_allocated_mb": "peak train GPU memory",
    "peak_infer_mb": "peak inference RSS",
    "cuda_peak_infer_allocated_mb": "peak inference GPU memory",
    "train_tokens_per_s": "train throughput",
    "ttft_ms_p50": "TTFT p50",
    "ttft_merged_ms_p50": "TTFT p50 merged",
    "tpot_ms_p50": "TPOT p50",
    "tpot_merged_ms_p50": "TPOT p50 merged",
    "ttft_overhead_pct": "TTFT overhead",
    "tpot_overhead_pct": "TPOT overhead",
}
RSS_COLUMNS = {"peak_train_mb": "cuda_peak_train_allocated_mb", "peak_infer_mb": "cuda_peak_infer_allocated_mb"}
# What only a generator records: how records without `info.task.kind` (older ones) are told apart.
GENERATION_FIGURES = ("ttft_ms_p50", "tpot_ms_p50", "generated_tokens_per_s", "invalid_rate", "forgetting")
SECTION_KEYS = ("suite", "task", "budget", "model", "device")


def is_causal_lm(records: list[dict]) -> bool:
    """Runs of a decoder LM's task (suites/causal_lm.py): their `info.task.kind` (bench/execute/worker.py) says
    `causal-lm`; records without a kind, by the generation figures they hold. Never by the suite's name."""
    kind = recorded_task_info(records).get("kind")
    if kind:
        return kind == "causal-lm"
    return any(name in (r.get("metrics") or {}) for r in records for name in GENERATION_FIGURES)


def is_zero_shot(record: dict) -> bool:
    """A run that trained nothing (method kind `none`: the untouched model), by its recorded configuration; the
    method's name where the record has none."""
    method = (record.get("config") or {}).get("method")
    if isinstance(method, dict) and method.get("kind"):
        return method["kind"] == "none"
    return record.get("method") == "zero-shot"


def higher_is_better(metric: str) -> bool | None:
    return metric_info(DIRECTION_OF.get(metric, metric)).higher_is_better


@dataclass
class Stat:
    mean: float
    std: float  # sample standard deviation over seeds; NaN with one run
    n: int


def stat(values: list[float]) -> Stat:
    return Stat(*mean_std(values))


@dataclass
class Column:
    metric: str
    label: str
    headline: bool = False

    @property
    def unit(self) -> str:
        unit = metric_info(self.metric).unit
        return "" if unit in ("ratio", "count", "1", "bool") else unit

    @property
    def higher_is_better(self) -> bool | None:
        return higher_is_better(self.metric)

    @property
    def speed(self) -> bool:
        return is_speed(self.metric)


@dataclass
class MethodRow:
    method: str
    runs: list[dict]
    stats: dict[str, Stat] = field(default_factory=dict)

    @property
    def ok_runs(self) -> list[dict]:
        return [r for r in self.runs if r.get("status") == "ok"]

    @property
    def status(self) -> str:
        counts: dict[str, int] = {}
        for r in self.runs:
            counts[r.get("status") or "unknown"] = counts.get(r.get("status") or "unknown", 0) + 1
        if len(counts) == 1 and len(self.runs) == 1:
            return next(iter(counts))
        return ", ".join(f"{k} {v}" for k, v in counts.items())

    @property
    def all_ok(self) -> bool:
        return all(r.get("status") == "ok" for r in self.runs)

    @property
    def reasons(self) -> list[str]:
        """Why the runs that are not ok did not finish: distinct errors, each with its seeds."""
        by_error: dict[str, list[str]] = {}
        for r in self.runs:
            if r.get("status") != "ok":
                text = f"{r.get('status')}: {r.get('error') or 'no reason recorded'}"
                by_error.setdefault(text, []).append(str(r.get("seed")))
        return [f"{text} (seed {', '.join(seeds)})" for text, seeds in by_error.items()]

    def mean(self, metric: str) -> float:
        return self.stats[metric].mean if metric in self.stats else math.nan

    @property
    def contended(self) -> str | None:
        """`contended: <why> (seed s)` where other processes took a share of the machine during timed steps
        (bench/core/metrics.py, `contended`); its speed figures are marked."""
        return contention_note(self.ok_runs)


def contention_note(runs: list[dict]) -> str | None:
    """`contended: <why> (seed s); ...` for the runs that were contended, or None."""
    reasons = [f"{why} (seed {r.get('seed')})" for r in runs if (why := contended(r))]
    return "contended: " + "; ".join(reasons) if reasons else None


def is_speed(metric: str) -> bool:
    """A speed figure: what a contended run's row marks."""
    return metric_info(metric).kind == "speed"


CONTENDED_MARK = "*"


@dataclass
class Section:
    suite: str
    task: str
    budget: str
    model: str
    device: str
    metric: str | None  # the task's headline metric; None when no quality metric was recorded
    rows: list[MethodRow]
    columns: list[Column]
    best: dict[str, set[str]]  # column metric -> methods holding the best value (headline: tied with the best)
    env: list[tuple[str, str]]
    plots: list[tuple[str, str, str]] = field(default_factory=list)  # (kind, caption, image), filled by a renderer
    note: str = ""  # the task's caveat, from the suite registry
    # Headline metric: each method against the best (bench/judge/ties.py) and its 95% interval over examples.
    ties: dict = field(default_factory=dict)
    intervals: dict = field(default_factory=dict)
    causal_lm: bool = False  # a decoder LM's task: the LLM_COLUMNS table
    # The zero-shot row (the untouched model) where the section has one with a score, and each method's headline
    # against it (bench/judge/ties.py compare: method minus zero-shot, paired where predictions were saved).
    baseline: str | None = None
    gains: dict = field(default_factory=dict)

    def versus_best(self, method: str) -> str:
        """`best`, `tied`, `-0.031 [-0.05, -0.01]`, or `-0.031 (no interval)` for the section's tables."""
        c = self.ties.get(method)
        if c is None:
            return "–"
        if c.basis == "itself":
            return "best"
        if c.basis == "none":
            return f"{c.diff:+.3f} (no interval: {c.note})" if c.note else f"{c.diff:+.3f} (no interval)"
        return ("tied " if c.tied else "") + f"{c.diff:+.3f} [{c.low:+.3f}, {c.high:+.3f}]"

    def versus_baseline(self, method: str) -> str:
        """`+0.125 [+0.06, +0.19]` (the gain over the zero-shot row), `tied +0.010 [...]` when its interval holds 0,
        `baseline` for the zero-shot row itself, `–` without a score."""
        if method == self.baseline:
            return "baseline"
        c = self.gains.get(method)
        if c is None:
            return "–"
        if c.basis == "none":
            return f"{c.diff:+.3f} (no interval: {c.note})" if c.note else f"{c.diff:+.3f} (no interval)"
        return ("tied " if c.tied else "") + f"{c.diff:+.3f} [{c.low:+.3f}, {c.high:+.3f}]"

    def interval(self, method: str) -> str:
        ci = self.intervals.get(method)
        if not ci:
            return "–"
        runs = next((row.ok_runs for row in self.rows if row.method == method), [])
        return f"[{ci[0]:.3f}, {ci[1]:.3f}]" + (" 1 seed" if len(runs) == 1 else "")  # seed variance unknown

    @property
    def title(self) -> str:
        return f"{self.suite} / {self.task}"

    @property
    def anchor(self) -> str:
        raw = "-".join(str(v) for v in (self.suite, self.task, self.budget, self.device, self.model))
        return "".join(c if c.isalnum() else "-" for c in raw).strip("-").lower()

    @property
    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for row in self.rows:
            for r in row.runs:
                out[r.get("status") or "unknown"] = out.get(r.get("status") or "unknown", 0) + 1
        return out





def build_sections(records: list[dict]) -> list[Section]:
    groups: dict[tuple, list[dict]] = {}
    for r in records:
        groups.setdefault(tuple(str(r.get(k)) for k in SECTION_KEYS), []).append(r)
    return [_section(dict(zip(SECTION_KEYS, key)), runs) for key, runs in groups.items()]


def _section(key: dict, records: list[dict]) -> Section:
    info = recorded_task_info(records)
    metric = headline_metric(records)
    by_method: dict[str, list[dict]] = {}
    configs: dict[str, set] = {}
    for r in records:
        configs.setdefault(str(r.get("method")), set()).add(r.get("config_id"))
    for r in records:  # one row per configuration: a method run under two configurations gets two rows
        label = str(r.get("method"))
        if len(configs[label]) > 1:
            label += f" (config {r.get('config_id') or 'unrecorded'})"
        by_method.setdefault(label, []).append(r)
    causal = is_causal_lm(records)
    columns = ([Column(metric, metric, headline=True)] if metric else []) + \
        [Column(m, label) for m, label in (LLM_COLUMNS if causal else COST_COLUMNS).items()]
    # A decoder LM's section still measures the encoder table's figures the plots draw (throughput, latency).
    hidden = [Column(m, label) for m, label in COST_COLUMNS.items() if causal and m not in LLM_COLUMNS]
    rows, unpooled = [], []
    for method, runs in by_method.items():
        row = MethodRow(method, runs)
        for col in columns + hidden:
            spread = reference_spread(col.metric, row.ok_runs)  # e.g. MFUs divided by different peaks: not averaged
            row.stats[col.metric] = stat([] if spread else [r["metrics"].get(col.metric, math.nan) for r in row.ok_runs])
            if spread and col not in hidden:
                unpooled.append(f"{col.label} of {method} ({spread})")
        rows.append(row)
    if metric:  # best first, as a reader scans the table; rows without a score (failed runs) last
        rows.sort(key=lambda row: best_first(metric, row.mean(metric)))
    # Keep the headline column even when every run failed (the table must say so); drop empty cost columns.
    columns = [c for c in columns if c.headline or any(row.stats[c.metric].n for row in rows)]
    if causal:  # on CUDA runs GPU memory, not the host process's RSS, is what limits
        shown = {c.metric for c in columns}
        columns = [c for c in columns if RSS_COLUMNS.get(c.metric) not in shown]
    best = best_methods(rows, columns)
    versus, intervals = {}, {}
    if metric:
        from bench.judge import ties
        runs = {row.method: row.ok_runs for row in rows if row.ok_runs}
        _, versus = ties.versus_best(metric, runs)
        intervals = {m: ties.method_interval(metric, rs) for m, rs in runs.items()}
        if versus:  # every method tied with the best is highlighted, not only the raw maximum
            best[metric] = {m for m, c in versus.items() if c.tied}
    baseline, gains = _zero_shot(metric, rows) if causal else (None, {})
    return Section(**key, metric=metric, rows=rows, columns=columns, best=best, env=environment(key, records),
                   note=" ".join(filter(None, [info.get("note"), _data_warnings(records), _unpooled_note(unpooled),
                                               _contended_note(rows), _generation_note(causal, metric, baseline)])),
                   ties=versus, intervals=intervals, causal_lm=causal, baseline=baseline, gains=gains)


def _zero_shot(metric: str | None, rows: list[MethodRow]) -> tuple[str | None, dict]:
    """(the zero-shot row's label, {method: its headline minus zero-shot's}); (None, {}) without a scored one."""
    if not metric:
        return None, {}
    base = next((row for row in rows if row.ok_runs and all(is_zero_shot(r) for r in row.runs)
                 and not math.isnan(row.mean(metric))), None)
    if base is None:
        return None, {}
    from bench.judge import ties
    return base.method, {row.method: ties.compare(metric, row.ok_runs, base.ok_runs) for row in rows
                         if row is not base and not math.isnan(row.mean(metric))}


def _generation_note(causal: bool, metric: str | None, baseline: str | None) -> str:
    if not causal:
        return ""
    return ("Generation: the headline is scored on the generated answers; invalid rate: answers that parse to no "
            "answer; ll accuracy: the class whose label words the model finds likeliest; forgetting: the causal-LM "
            "loss on general text after training minus the untouched model's (nats per token, negative: it fell); TTFT and TPOT: batch-1 greedy time to the first token and per "
            "further token (how: the environment's generation latency), with the adapter, and merged into the base "
            "where the method merges; overhead: the unmerged adapter's over the base with the adapter switched off, "
            "in % (– where nothing switches off: full fine-tuning, zero-shot, methods that change the base in "
            "place)." + (f" vs zero-shot: {metric} minus the zero-shot row's (the untouched model), with its 95% "
                         f"interval, drawn as for vs best." if baseline else
                         " No zero-shot row (`--methods ...,zero-shot`): the gain over the untouched model is not "
                         "shown."))


def _data_warnings(records: list[dict]) -> str:
    """What the runs warned of their training data (a class imbalance beyond 10:1, suites/checks.py), once each."""
    seen = dict.fromkeys(w for r in records for w in ((r.get("info") or {}).get("task") or {}).get("warnings", []))
    return " ".join(f"Data warning: {w}." for w in seen)


def _unpooled_note(methods: list[str]) -> str:
    return (f"Left out (–) where a method's figures are not comparable: its runs rest on measured peaks or FLOP "
            f"counts more than 10% apart (a reference re-measured or redefined, not a change in speed), or on an "
            f"int8 base, whose FLOPs are counted as float: {'; '.join(methods)}.") if methods else ""


def _contended_note(rows: list[MethodRow]) -> str:
    if not any(row.contended for row in rows):
        return ""
    return (f"Speed figures marked {CONTENDED_MARK} come from runs during which other processes took more than "
            f"{CONTENDED_ABOVE:.0%} of the CPU time, or used the GPU (status column: contended): the machine, not "
            f"only the method, set them.")


def best_methods(rows: list[MethodRow], columns: list[Column]) -> dict[str, set[str]]:
    """Per column with a direction: the methods whose mean is best (all of them on a tie)."""
    best = {}
    for col in columns:
        direction = col.higher_is_better
        values = {row.method: row.mean(col.metric) for row in rows if not math.isnan(row.mean(col.metric))}
        if direction is None or len(values) < 2:
            continue
        target = max(values.values()) if direction else min(values.values())
        best[col.metric] = {m for m, v in values.items() if v == target}
    return best


def _distinct(values) -> str:
    seen = []
    for v in values:
        if v not in (None, "", {}) and str(v) not in seen:
            seen.append(str(v))
    return " | ".join(seen)


def environment(key: dict, records: list[dict]) -> list[tuple[str, str]]:
    """The conditions of a section, as (label, value) pairs; differing values are all listed."""
    envs = [r.get("env") or {} for r in records]
    ok = [r for r in records if r.get("status") == "ok"]
    out = [
        ("device", _distinct(e.get("device") for e in envs) or key["device"]),
        ("GPU", _distinct(f"{e['gpu_name']} (CUDA {e.get('cuda')})" for e in envs if e.get("gpu_name"))),
        ("CPU", _distinct(f"{e['cpu_model']}, {e.get('cpu_count')} cores, {e.get('torch_threads')} torch threads"
                          for e in envs if e.get("cpu_model"))),
        ("host", _distinct(f"{e.get('hostname')} ({e.get('platform')}, Python {e.get('python')})"
                           for e in envs if e.get("hostname"))),
        ("git commit", _distinct(e.get("git_commit") for e in envs)),
        ("model", key["model"]),
        ("budget", key["budget"] + _budget_definition(key, records)),
        ("data used", _distinct(
            ", ".join(f"{n} {r['metrics'][n]:g}" for n in ("train_examples", "eval_examples", "steps")
                      if n in r["metrics"]) for r in ok)),
        ("weights", _distinct((r.get("info") or {}).get("weights") for r in ok)),  # e.g. dequantised from a GGUF
        ("generation latency", _distinct(
            f"{g.get('latency_method')}, batch 1, {g.get('prompt_tokens')}-token prompt, {g.get('new_tokens')} new "
            f"tokens" for r in ok if (g := (r.get("info") or {}).get("generation_latency")))),
        ("runs", _distinct(r.get("invocation") for r in records)),
        ("started", _span(sorted(r["started_at"] for r in records if r.get("started_at")))),
    ]
    packages: dict[str, list[str]] = {}
    for e in envs:
        for name, version in (e.get("packages") or {}).items():
            if version not in packages.setdefault(name, []):
                packages[name].append(version)
    if packages:
        out.append(("packages", ", ".join(f"{n} {' | '.join(v)}" for n, v in sorted(packages.items()))))
    return [(label, value) for label, value in out if value]


def _span(times: list[str]) -> str:
    if not times:
        return ""
    return times[0] if times[0] == times[-1] else f"{times[0]} to {times[-1]}"


def _budget_definition(key: dict, records: list[dict]) -> str:
    recorded = next((r["config"]["budget"] for r in reversed(records) if (r.get("config") or {}).get("budget")), None)
    if recorded:
        return " (" + ", ".join(f"{k}={v}" for k, v in recorded.items() if k != "name") + ")"
    return ""


# --- number formatting shared by the HTML and Markdown reports -----------------------------------------

def fmt_number(value: float, metric: str) -> str:
    if value is None or math.isnan(value):
        return "–"
    unit = metric_info(metric).unit
    if unit == "count":
        return _si(value)
    if unit == "ratio":
        return f"{value:.4f}"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:.3g}"


def _si(value: float) -> str:
    for factor, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= factor:
            return f"{value / factor:.3g}{suffix}"
    return f"{value:.0f}"


def fmt_stat(s: Stat, metric: str, with_n: bool = False) -> str:
    """`mean ± std (n=k)`; the spread only where there was more than one run."""
    if s.n == 0:
        return "–"
    text = fmt_number(s.mean, metric)
    if s.n > 1 and not math.isnan(s.std):
        text += f" ± {fmt_number(s.std, metric)}"
    return text + (f" (n={s.n})" if with_n else "")
