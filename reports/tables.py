"""Tidy tables from run records: long (one row per run x metric, with units) and wide (one row per run)."""
from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from bench.core.files import replaced_atomically
from bench.core.metrics import best_first, chance_level, mean_std, metric_info, near_chance, reference_spread
from reports.sections import CONTENDED_MARK, contention_note, is_causal_lm, is_speed

ID_COLUMNS = ["suite", "task", "method", "seed", "status", "budget", "model", "device", "config_id", "run_id", "invocation",
              "started_at", "finished_at", "error"]
SUMMARY_COLUMNS = {  # column in the printed summary <- metric
    "invalid": "invalid_rate",  # causal-LM tasks only (as are forgetting and TTFT)
    "forgetting": "forgetting",
    "trainable %": "trainable_pct",
    "peak RSS MB": "peak_train_mb",
    "GPU MB": "cuda_max_allocated_mb",  # GPU runs only (dropped when no run has it)
    "train ex/s": "train_examples_per_s",
    "MFU": "train_mfu",
    "train tok/s": "train_tokens_per_s",
    "TTFT ms": "ttft_ms_p50",  # a generator's batch-1 time to first token, in place of the forward's p50
    "p50 ms": "latency_p50_ms",
    "p95 ms": "latency_p95_ms",
    "merged p50 ms": "latency_merged_p50_ms",
    "size MB": "adapter_tensor_mb",
    "wall s": "wall_time_s",
}
OPTIONAL_COLUMNS = ["GPU MB", "invalid", "forgetting", "TTFT ms"]
# A causal-LM task's row leaves these out: the batch-1 forward is not what a generator's user waits for (TTFT is).
FORWARD_LATENCY = ["p50 ms", "p95 ms", "merged p50 ms"]
def long_table(records: list[dict]) -> pd.DataFrame:
    rows = []
    for r in records:
        ident = {c: r.get(c) for c in ID_COLUMNS if c != "error"}
        for name, value in r.get("metrics", {}).items():
            rows.append({**ident, "metric": name, "value": float(value), "unit": metric_info(name).unit})
    return pd.DataFrame(rows, columns=[c for c in ID_COLUMNS if c != "error"] + ["metric", "value", "unit"])


def wide_table(records: list[dict]) -> pd.DataFrame:
    rows = [{**{c: r.get(c) for c in ID_COLUMNS}, **r.get("metrics", {})} for r in records]
    return pd.DataFrame(rows, columns=None if rows else ID_COLUMNS)


def write_tables(records: list[dict], folder: Path) -> dict[str, Path]:
    """The long and wide tables as CSV and Parquet, each replaced atomically (readers never see half a file).
    Pass `store.latest_runs(...)` records: one row per run, never a re-run counted twice."""
    paths = {}
    for name, frame in (("results_long", long_table(records)), ("results_wide", wide_table(records))):
        for ext in ("csv", "parquet"):
            path = folder / f"{name}.{ext}"
            with replaced_atomically(path) as tmp:
                frame.to_csv(tmp, index=False) if ext == "csv" else frame.to_parquet(tmp, index=False)
            paths[f"{name}.{ext}"] = path
    return paths


def summary(records: list[dict], metric_of: dict[str, str]) -> pd.DataFrame:
    """Per task and method: the headline metric (mean, sample std, n) and the cost columns, mean over seeds.

    `metric_of` maps task name -> headline metric name. `note` flags near-chance accuracy, figures left out as not
    comparable (MFU resting on peaks or FLOP counts 10% apart, or on an int8 base), and contended runs, whose speed
    columns format_summary marks (hidden column `contended`).
    """
    wide = wide_table(records)
    causal = {t for t in dict.fromkeys(r.get("task") for r in records)
              if is_causal_lm([r for r in records if r.get("task") == t])}
    rows = []
    for (task, method), g in wide.groupby(["task", "method"], sort=False):
        ok = g[g.status == "ok"]
        metric = metric_of.get(task, "")
        row = {"task": task, "method": method, "status": _status(g), "n": len(ok),
               "metric": metric}
        row["value"], row["std"], _ = mean_std(ok[metric] if metric in ok else [])
        runs = [{"seed": r.get("seed"), "metrics": r} for r in ok.to_dict("records")]
        notes = []
        for col, name in SUMMARY_COLUMNS.items():
            spread = reference_spread(name, runs)  # not comparable: not averaged (bench/core/metrics.py)
            row[col] = math.nan if spread else mean_std(ok[name] if name in ok else [])[0]
            if spread:
                notes.append(f"{col} left out: {spread}")
        for col in FORWARD_LATENCY if task in causal else ():
            row[col] = math.nan
        if not len(ok):
            notes.append(str(g.error.iloc[-1])[:70])
        elif near_chance(row["value"], chance := chance_level(
                metric, *(ok[m].mean() if m in ok else float("nan") for m in ("majority_rate", "majority_macro_f1")))):
            notes.append(f"near chance (majority class {chance:.3f})" if metric in ("accuracy", "macro_f1") else
                         f"near chance ({metric} {chance:g} without learning)")
        row["contended"] = contention_note(runs)
        if row["contended"]:
            notes.append(row["contended"])
        if notes:
            row["note"] = "; ".join(notes)
        rows.append(row)
    frame = pd.DataFrame(rows)
    if len(frame):  # tasks in run order; within a task best first by its headline metric, unscored rows last
        order = {t: i for i, t in enumerate(dict.fromkeys(frame.task))}
        rows = sorted(range(len(frame)), key=lambda i: (order[frame.task[i]],
                                                        best_first(frame.metric[i], frame.value[i])))
        frame = frame.iloc[rows].reset_index(drop=True)
    optional = OPTIONAL_COLUMNS + (FORWARD_LATENCY if causal else [])  # an encoder grid's table is unchanged
    return frame.drop(columns=[c for c in optional if c in frame and frame[c].isna().all()])


def _status(g: pd.DataFrame) -> str:
    counts = g.status.value_counts()
    return counts.index[0] if len(counts) == 1 else ", ".join(f"{k}:{v}" for k, v in counts.items())


def format_summary(frame: pd.DataFrame) -> str:
    frame = frame.copy()
    if "std" in frame:  # one column "mean ± std" (std only with two or more seeds)
        frame["value"] = [f"{v:.4g}" + (f" ± {s:.2g}" if pd.notna(s) else "") if pd.notna(v) else "-"
                          for v, s in zip(frame["value"], frame.pop("std"))]
    contended = frame.pop("contended") if "contended" in frame else pd.Series([None] * len(frame), index=frame.index)
    if contended.notna().any():  # a contended row's speed figures carry the mark (its note says why)
        for col in [c for c, name in SUMMARY_COLUMNS.items() if c in frame and is_speed(name)]:
            frame[col] = [f"{v:.4g}" + (CONTENDED_MARK if pd.notna(why) else "") if pd.notna(v) else "-"
                          for v, why in zip(frame[col], contended)]
    return frame.to_string(index=False, float_format=lambda v: f"{v:.4g}", na_rep="-")
