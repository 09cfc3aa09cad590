"""`bench compare`: did a candidate set of runs regress against a baseline? Exit 0 no, 1 yes, 2 usage error.

Each side is a set of run records (a results folder, or an invocation found in the history by commit,
id, `latest` or `previous`). Runs are matched by (suite, task, method, budget) and averaged over seeds;
every metric with a declared direction (bench/core/metrics.py) gets a verdict:

- task metrics (accuracy, F1, loss) regress when they get worse by more than
  max(absolute floor, k x seed std); the std pools both sides' sample std over seeds, when a side has
  more than one seed;
- memory, speed and size metrics regress when they get worse by more than max(relative threshold x
  baseline, k x seed std) (memory: never less than 10 MB): timings on shared machines move by tens of
  percent between identical runs.

A configuration whose candidate runs all failed is a regression too, and so is a drop in the share of
runs that succeeded (2 of 3 seeds crashing); a metric the baseline recorded and the candidate no longer does
is `vanished` (gated). A configuration missing from the candidate is reported, not gated (a subset run is a
legitimate candidate). Speed is gated only where host, CPU and GPU names match the baseline's: on shared
or different hardware its verdict is `ungated`. A re-run counts once (`store.latest_runs`). Runs of the same
name under another configuration (config ids differ: a changed method default, budget, model or data) are
`reconfigured`, with what changed named, and never gated against each other. MFU and achieved FLOP/s are `ungated`
where the runs' measured peaks or FLOP counts differ by more than 10% (bench/core/metrics.py, reference_spread).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from bench.core.errors import UsageError
from bench.core.metrics import headline_metric, metric_info, reference_spread
from bench.judge import ties
from bench.judge.verdicts import KINDS, Thresholds, gated_metrics, parse_thresholds, verdict  # noqa: F401 (re-exported)
from bench.results import history
from bench.results.identity import differences
from bench.results.store import latest_runs

MATCH_KEYS = ["suite", "task", "method", "budget"]
GATING = {"regressed", "failed", "vanished"}
HARDWARE = ("hostname", "cpu_model", "gpu_name")  # speed is gated only where these match


def _metric_selected(metric: str, wanted: list[str] | None) -> bool:
    info = metric_info(metric)
    if info.higher_is_better is None:
        return False
    return not wanted or metric in wanted or info.kind in wanted


def compare(baseline: list[dict], candidate: list[dict], thresholds: Thresholds | None = None,
            metrics: list[str] | None = None) -> pd.DataFrame:
    """One row per (suite, task, method, budget, metric): baseline, candidate, change, allowed, verdict."""
    thresholds = thresholds or Thresholds()
    baseline, candidate = latest_runs(baseline), latest_runs(candidate)
    base_stats, cand_stats = history.stats(baseline, MATCH_KEYS), history.stats(candidate, MATCH_KEYS)
    rows = []
    keys = _keys(baseline) + [k for k in _keys(candidate) if k not in _keys(baseline)]
    for key in keys:
        ident = dict(zip(MATCH_KEYS, key))
        b_runs, c_runs = _runs_of(baseline, key), _runs_of(candidate, key)
        b_ok, c_ok = [r for r in b_runs if r["status"] == "ok"], [r for r in c_runs if r["status"] == "ok"]
        if not b_ok:
            if c_ok:
                rows.append({**ident, "metric": "(runs)", "verdict": "new",
                             "note": "no successful baseline run" if b_runs else "not in the baseline"})
            continue
        if not c_runs:
            rows.append({**ident, "metric": "(runs)", "verdict": "missing", "note": "not in the candidate"})
            continue
        if not c_ok:
            errors = "; ".join(sorted({str(r.get("error"))[:80] for r in c_runs}))
            rows.append({**ident, "metric": "(runs)", "verdict": "failed", "note": f"every candidate run failed: {errors}"})
            continue
        mismatch = [f"{c}: {_distinct(b_ok, c)} vs {_distinct(c_ok, c)}" for c in ("model", "device")
                    if _distinct(b_ok, c) != _distinct(c_ok, c)]
        if mismatch:
            rows.append({**ident, "metric": "(runs)", "verdict": "incomparable", "note": "; ".join(mismatch)})
            continue
        changed = _config_changes(b_ok, c_ok)
        if changed is not None:  # another configuration under the same name: report it, never gate on it
            rows.append({**ident, "metric": "(runs)", "verdict": "reconfigured", "note": changed})
            continue
        b_share, c_share = len(b_ok) / len(b_runs), len(c_ok) / len(c_runs)
        if c_share < b_share:
            rows.append({**ident, "metric": "(runs)", "verdict": "regressed",
                         "note": f"{len(c_ok)} of {len(c_runs)} candidate runs succeeded, baseline {len(b_ok)} of "
                                 f"{len(b_runs)}: " + "; ".join(sorted({str(r.get('error'))[:80] for r in c_runs
                                                                        if r['status'] != 'ok'}))})
        b = _by_metric(base_stats, key)
        c = _by_metric(cand_stats, key)
        for metric in [m for m in b if m not in c and _metric_selected(m, metrics)]:
            rows.append({**ident, "metric": metric, "verdict": "vanished",
                         "note": f"{metric} was recorded by the baseline, not by the candidate"})
        other_hardware = [f"{h}: {_distinct(b_ok, h, 'env')} vs {_distinct(c_ok, h, 'env')}" for h in HARDWARE
                          if _distinct(b_ok, h, "env") != _distinct(c_ok, h, "env")]
        for metric in [m for m in b if m in c and _metric_selected(m, metrics)]:
            v, allowed = verdict(metric, b[metric]["mean"], b[metric]["std"], c[metric]["mean"], c[metric]["std"],
                                 thresholds)
            note = None
            spread = reference_spread(metric, b_ok + c_ok)
            if other_hardware and metric_info(metric).kind == "speed" and v != "n/a":
                v, note = "ungated", "other hardware: " + "; ".join(other_hardware)
            elif spread and v != "n/a":
                v, note = "ungated", f"not comparable: {spread} among these runs; speed is gated as train_examples_per_s"
            if metric == headline_metric(c_ok) and v != "n/a":  # same examples on both sides: the paired test
                paired = ties.compare(metric, c_ok, b_ok)
                if paired.paired:
                    note = ("tied within noise: " if paired.tied else "") + \
                        f"{paired.basis} 95% interval of the change [{paired.low:+.4f}, {paired.high:+.4f}]"
                    if paired.tied and v in ("regressed", "improved"):
                        v = "unchanged"
            base_mean, cand_mean = b[metric]["mean"], c[metric]["mean"]
            rows.append({**ident, "metric": metric, "unit": metric_info(metric).unit,
                         "baseline": base_mean, "baseline_std": b[metric]["std"], "baseline_n": b[metric]["n"],
                         "candidate": cand_mean, "candidate_std": c[metric]["std"], "candidate_n": c[metric]["n"],
                         "change": cand_mean - base_mean,
                         "change_pct": (cand_mean - base_mean) / abs(base_mean) * 100 if base_mean else math.nan,
                         "allowed": allowed, "verdict": v, "note": note})
    columns = MATCH_KEYS + ["metric", "unit", "baseline", "baseline_std", "baseline_n", "candidate", "candidate_std",
                            "candidate_n", "change", "change_pct", "allowed", "verdict", "note"]
    return pd.DataFrame(rows, columns=columns)



def _keys(records: list[dict]) -> list[tuple]:
    seen = {}
    for r in records:
        seen.setdefault(tuple(r.get(k) for k in MATCH_KEYS), None)
    return list(seen)


def _runs_of(records: list[dict], key: tuple) -> list[dict]:
    return [r for r in records if tuple(r.get(k) for k in MATCH_KEYS) == key]


def _config_changes(baseline: list[dict], candidate: list[dict]) -> str | None:
    """None when both sides ran one and the same configuration (or a side predates config ids); else what changed."""
    b_ids, c_ids = {r.get("config_id") for r in baseline}, {r.get("config_id") for r in candidate}
    if None in b_ids | c_ids or b_ids == c_ids:
        return None
    b, c = baseline[-1].get("config") or {}, candidate[-1].get("config") or {}
    diff = differences(b, c) if b and c else []
    return (f"config {','.join(sorted(b_ids))} -> {','.join(sorted(c_ids))}: "
            + ("; ".join(diff[:6]) + (f"; {len(diff) - 6} more" if len(diff) > 6 else "") if diff
               else "the recorded configurations differ"))


def _distinct(records: list[dict], column: str, within: str | None = None) -> str:
    """The distinct values of a record field (or of a field of `within`, e.g. env), joined."""
    return ",".join(sorted({str(((r.get(within) or {}) if within else r).get(column)) for r in records}))


def _by_metric(stats: pd.DataFrame, key: tuple) -> dict[str, dict]:
    mask = pd.Series(True, index=stats.index)
    for column, value in zip(MATCH_KEYS, key):
        mask &= stats[column] == value
    return {row.metric: {"mean": row.mean, "std": row.std, "n": row.n} for row in stats[mask].itertuples()}


def regressions(table: pd.DataFrame) -> pd.DataFrame:
    return table[table.verdict.isin(GATING)]


# --- references ----------------------------------------------------------------------------------------

@dataclass
class Side:
    label: str
    records: list[dict]


def resolve(ref: str, db: Path, suite: str | None = None, before: Side | None = None) -> Side:
    """A results folder, `latest`, `previous` (the history's invocation before `before`), an invocation id
    or a git commit (prefix) from the history."""
    path = Path(ref)
    if path.is_dir() or path.name == "results.jsonl":
        from bench.results.store import ResultStore
        folder = path.parent if path.name == "results.jsonl" else path
        records = [r for r in ResultStore(folder).records() if suite is None or r.get("suite") == suite]
        if not records:
            raise UsageError(f"no results{f' for suite {suite}' if suite else ''} in folder {str(folder)!r}")
        return Side(str(folder), records)
    inv = history.invocations(db, **({"suite": suite} if suite else {}))
    if inv.empty:
        raise UsageError(f"reference {ref!r} needs the history, but {str(db)!r} holds no runs"
                          f"{f' of suite {suite}' if suite else ''}")
    if ref == "latest":
        chosen = inv.iloc[-1]
    elif ref == "previous":
        chosen = _previous(inv, before)
    else:
        by_id = inv[inv.invocation.astype(str).str.startswith(ref)]
        by_commit = inv[inv.git_commit.fillna("").str.split(",").map(lambda cs: any(c.startswith(ref) for c in cs))] \
            if len(ref) >= 4 else inv.iloc[:0]
        found = by_id if len(by_id) else by_commit
        if found.empty:
            raise UsageError(f"unknown reference {ref!r} (valid: a results folder, latest, previous, an invocation "
                              f"id or a git commit in the history; latest is {inv.iloc[-1].invocation})")
        chosen = found.iloc[-1]  # the newest invocation at that commit
    records = history.records(db, invocation=chosen.invocation)
    return Side(f"{ref} = {chosen.invocation} (commit {chosen.git_commit or 'unknown'}, {chosen.finished_at})",
                [r for r in records if suite is None or r.get("suite") == suite])


def _previous(inv: pd.DataFrame, before: Side | None):
    """The newest invocation older than the candidate that shares a configuration with it."""
    if before is None:
        if len(inv) < 2:
            raise UsageError("reference 'previous' needs two invocations in the history, found "
                              f"{len(inv)}")
        return inv.iloc[-2]
    ours = {r.get("invocation") for r in before.records}
    configs = {tuple(str(r.get(k)) for k in MATCH_KEYS) for r in before.records}
    newest = max((r.get("finished_at") or "" for r in before.records), default="")
    older = inv[~inv.invocation.isin(ours) & (inv.finished_at.fillna("") <= newest)]
    older = older[older.configs.map(lambda cs: bool(cs & configs))]
    if older.empty:
        raise UsageError("reference 'previous': the history holds no earlier run of the candidate's "
                          "configurations (suite, task, method, budget)")
    return older.iloc[-1]


def comparable_invocations(db: Path, side: Side) -> int:
    """How many invocations in the history ran any of this side's configurations (this side's own included)."""
    if not Path(db).is_file():
        return 0
    configs = {tuple(str(r.get(k)) for k in MATCH_KEYS) for r in side.records}
    inv = history.invocations(db)
    return int(inv.configs.map(lambda cs: bool(cs & configs)).sum()) if len(inv) else 0


# --- output --------------------------------------------------------------------------------------------

def _fmt(value: float, std: float = math.nan, n: int | float = 1) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    text = f"{value:.4g}"
    if n and n > 1 and not math.isnan(std):
        text += f" ± {std:.2g} (n={int(n)})"
    return text


def _display(table: pd.DataFrame) -> pd.DataFrame:
    rows = []
    for r in table.itertuples():
        measured = isinstance(r.unit, str)
        rows.append({
            "task": r.task, "method": r.method, "budget": r.budget, "metric": r.metric,
            "unit": r.unit if measured else "",
            "baseline": _fmt(r.baseline, r.baseline_std, r.baseline_n) if measured else "",
            "candidate": _fmt(r.candidate, r.candidate_std, r.candidate_n) if measured else "",
            "change": (f"{r.change:+.4g}" + (f" ({r.change_pct:+.1f}%)" if not math.isnan(r.change_pct) else ""))
            if measured else "",
            "allowed": f"{r.allowed:.3g}" if measured and not math.isnan(r.allowed) else "",
            "verdict": (f"{r.verdict} ({r.note})" if isinstance(r.note, str) else r.verdict) if measured
            else f"{r.verdict}: {r.note}",
        })
    return pd.DataFrame(rows)


def headline(table: pd.DataFrame) -> str:
    bad = regressions(table)
    counts = table.verdict.value_counts()
    parts = ", ".join(f"{counts.get(v, 0)} {v}" for v in ("regressed", "failed", "vanished", "improved", "unchanged",
                                                            "ungated", "reconfigured", "missing", "new",
                                                            "incomparable")
                      if counts.get(v, 0))
    if len(bad):
        where = ", ".join(f"{r.task}/{r.method} {r.metric}" for r in bad.itertuples())
        return f"REGRESSION: {where} ({parts})"
    return f"no regression ({parts})"


def format_text(table: pd.DataFrame, baseline: Side, candidate: Side) -> str:
    body = _display(table).to_string(index=False) if len(table) else "(nothing in common)"
    return f"baseline:  {baseline.label}\ncandidate: {candidate.label}\n\n{body}\n\n{headline(table)}"


def format_markdown(table: pd.DataFrame, baseline: Side, candidate: Side) -> str:
    shown = _display(table)
    icon = {"regressed": "❌ regressed", "failed": "❌ failed", "vanished": "❌ vanished", "improved": "✅ improved"}
    lines = ["## bench compare", "", f"- baseline: `{baseline.label}`", f"- candidate: `{candidate.label}`", "",
             f"**{headline(table)}**", ""]
    if len(shown):
        lines.append("| " + " | ".join(shown.columns) + " |")
        lines.append("|" + "|".join("---" for _ in shown.columns) + "|")
        for row in shown.itertuples(index=False):
            cells = [str(c).replace("|", "\\|") for c in row]
            cells[-1] = next((icon[k] + cells[-1][len(k):] for k in icon if cells[-1].startswith(k)), cells[-1])
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
