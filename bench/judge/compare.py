"""`bench compare`: did a candidate set of runs regress against a baseline?

Exit codes: 0 no regression, 1 regression (or nothing could be checked: every configuration changed),
2 usage error (a bad flag or value, a reference that does not exist), 3 nothing to compare yet (the first
night: the history holds no earlier run of these configurations). A nightly job accepts 3 and nothing else.

Each side is a set of run records (a results folder, or an invocation found in the history by commit, id,
`latest` or `previous`), matched by (suite, task, method, budget) and averaged over seeds. Only a few
declared metrics are gated (verdicts.DEFAULT_GATE: the headline metric, peak training memory, adapter size,
training speed); `--metrics` names others. A metric regresses when it gets worse by more than its threshold
(task metrics: an absolute floor; the others: a share of the baseline) and, where its noise can be estimated,
the change is significant after Holm's correction across every tested comparison of the night (family-wise
error 0.01): with the seed variance of the configuration pooled over the history's invocations (t-test), or
for the headline metric with one seed a night, the paired bootstrap of the saved predictions. With neither,
the threshold alone decides.

A configuration whose candidate runs all failed is a regression, and so is a drop in the share of runs that
succeeded; a gated metric the baseline recorded and the candidate no longer does is `vanished`. Speed is
`ungated` on other hardware (host, CPU or GPU names differ) and where a run was contended (other processes
took a share of its CPU or used its GPU during its timed steps). A configuration that changed (config ids
differ) is `reconfigured`: reported with what changed and its headline metric across the change, gated only
with `--gate-reconfigured`; a night where every configuration changed is NOT CHECKED (exit 1), never clean.
MFU and achieved FLOP/s are `ungated` where their references differ (bench/core/metrics.py reference_spread).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from bench.core.errors import NothingToCompare, UsageError
from bench.core.metrics import contended, headline_metric, metric_info, reference_spread
from bench.judge import ties
from bench.judge.verdicts import (ALPHA, DEFAULT_GATE, HEADLINE, KINDS, Thresholds, allowed_change,  # noqa: F401
                                  gated_metrics, holm, parse_thresholds, seed_noise, verdict, worse_p)
from bench.results import history
from bench.results.identity import differences
from bench.results.store import latest_runs

MATCH_KEYS = ["suite", "task", "method", "budget"]
GATING = {"regressed", "failed", "vanished"}
HARDWARE = ("hostname", "cpu_model", "gpu_name")  # speed is gated only where these match


def _selected(metric: str, wanted: list[str], headline: str | None) -> bool:
    info = metric_info(metric)
    if info.higher_is_better is None:
        return False
    return metric in wanted or info.kind in wanted or (metric == headline and HEADLINE in wanted)


def compare(baseline: list[dict], candidate: list[dict], thresholds: Thresholds | None = None,
            metrics: list[str] | None = None, alpha: float = ALPHA, noise: dict | None = None,
            gate_reconfigured: bool = False) -> pd.DataFrame:
    """One row per (suite, task, method, budget, gated metric): baseline, candidate, change, allowed, p, verdict.
    `noise`: seed variances per (config id, metric) (verdicts.seed_noise over the history); default: the two
    sides' own seeds. The rule that decided is in `table.attrs["rule"]`."""
    thresholds = thresholds or Thresholds()
    wanted = list(metrics or DEFAULT_GATE)
    baseline, candidate = latest_runs(baseline), latest_runs(candidate)
    noise = seed_noise(baseline + candidate) if noise is None else noise
    base_stats, cand_stats = (_by_metric(history.stats(side, MATCH_KEYS)) for side in (baseline, candidate))
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
        b, c = base_stats.get(key, {}), cand_stats.get(key, {})
        head = headline_metric(c_ok)
        changed = _config_changes(b_ok, c_ok)
        if changed is not None and not gate_reconfigured:  # reported with its headline change, never gated
            across = (f"; {head} {_fmt(b[head]['mean'])} -> {_fmt(c[head]['mean'])} across the reconfiguration"
                      if head in b and head in c else "")
            rows.append({**ident, "metric": "(runs)", "verdict": "reconfigured", "note": changed + across})
            continue
        b_share, c_share = len(b_ok) / len(b_runs), len(c_ok) / len(c_runs)
        if c_share < b_share:
            rows.append({**ident, "metric": "(runs)", "verdict": "regressed",
                         "note": f"{len(c_ok)} of {len(c_runs)} candidate runs succeeded, baseline {len(b_ok)} of "
                                 f"{len(b_runs)}: " + "; ".join(sorted({str(r.get('error'))[:80] for r in c_runs
                                                                        if r['status'] != 'ok'}))})
        for metric in [m for m in b if m not in c and _selected(m, wanted, head)]:
            rows.append({**ident, "metric": metric, "verdict": "vanished",
                         "note": f"{metric} was recorded by the baseline, not by the candidate"})
        blocked = _speed_blockers(b_ok, c_ok)
        for metric in [m for m in b if m in c and _selected(m, wanted, head)]:
            row = _measured(ident, metric, b[metric], c[metric], thresholds)
            row["note"] = f"across a reconfiguration: {changed}" if changed else None
            if row["verdict"] is None:
                spread = reference_spread(metric, b_ok + c_ok)
                if blocked and metric_info(metric).kind == "speed":
                    row["verdict"], row["note"] = "ungated", blocked
                elif spread:
                    row["verdict"], row["note"] = "ungated", f"not comparable: {spread} among these runs"
                else:
                    row["p"], row["basis"] = _p_value(metric, head, b[metric], c[metric], b_ok, c_ok, noise)
                    if math.isnan(row["p"]) and metric_info(metric).kind == "speed":  # timings need a noise estimate
                        row["verdict"], row["note"] = "ungated", "one seed and no history: its noise is unknown"
            rows.append(row)
    columns = MATCH_KEYS + ["metric", "unit", "baseline", "baseline_std", "baseline_n", "candidate", "candidate_std",
                            "candidate_n", "change", "change_pct", "allowed", "p", "basis", "verdict", "note"]
    table = pd.DataFrame(rows, columns=columns)
    _decide(table, alpha)
    tested = int(table.p.notna().sum())
    table.attrs["rule"] = (f"a change counts when it passes its threshold and, where its noise can be estimated, "
                           f"a one-sided test that survives Holm's correction across the {tested} tested comparisons "
                           f"(family-wise error {alpha:g}); gated: {', '.join(wanted)}")
    return table


def _measured(ident: dict, metric: str, b: dict, c: dict, thresholds: Thresholds) -> dict:
    base, cand = b["mean"], c["mean"]
    undecided = None if not (math.isnan(base) or math.isnan(cand)) else "n/a"
    return {**ident, "metric": metric, "unit": metric_info(metric).unit,
            "baseline": base, "baseline_std": b["std"], "baseline_n": b["n"],
            "candidate": cand, "candidate_std": c["std"], "candidate_n": c["n"], "change": cand - base,
            "change_pct": (cand - base) / abs(base) * 100 if base else math.nan,
            "allowed": allowed_change(metric, base, thresholds), "p": math.nan, "basis": "",
            "verdict": undecided}


def _speed_blockers(b_ok: list[dict], c_ok: list[dict]) -> str | None:
    """Why speed cannot be gated between these runs: other hardware, or a run that shared its CPU/GPU."""
    other = [f"{h}: {_distinct(b_ok, h, 'env')} vs {_distinct(c_ok, h, 'env')}" for h in HARDWARE
             if _distinct(b_ok, h, "env") != _distinct(c_ok, h, "env")]
    if other:
        return "other hardware: " + "; ".join(other)
    busy = sorted({why for r in b_ok + c_ok if (why := contended(r))})
    return ("contended: " + "; ".join(busy)) if busy else None


def _p_value(metric: str, head: str | None, b: dict, c: dict, b_ok: list[dict], c_ok: list[dict],
             noise: dict) -> tuple[float, str]:
    """(one-sided p-value that the candidate is worse, how it was tested): a t-test on the seeds with the
    configuration's seed variance pooled over the history; for the headline metric without one, the paired
    bootstrap of the saved predictions; else NaN (one seed, no noise estimate: the threshold alone decides)."""
    worse = (b["mean"] - c["mean"]) * (1 if metric_info(metric).higher_is_better else -1)
    variance, df = noise.get((c_ok[-1].get("config_id"), metric), (math.nan, 0))
    if df < 2 and b["n"] > 1 and c["n"] > 1:  # no history (or records without config ids): the two sides' seeds
        df = int(b["n"] + c["n"] - 2)
        variance = ((b["n"] - 1) * b["std"] ** 2 + (c["n"] - 1) * c["std"] ** 2) / df
    if df >= 2:
        se = math.sqrt(variance * (1 / b["n"] + 1 / c["n"]))
        return worse_p(worse, se, df), f"t-test on seeds, variance df={df}"
    if metric == head:
        paired = ties.compare(metric, c_ok, b_ok)
        if paired.paired:  # a 95% interval of cand - base; its normal-approximation standard error
            return worse_p(worse, (paired.high - paired.low) / (2 * 1.959964)), paired.basis
    return math.nan, "threshold only (no noise estimate)"


def _decide(table: pd.DataFrame, alpha: float) -> None:
    """Verdicts of the measured rows: beyond the threshold and, where tested, significant after Holm's
    correction (regressions and improvements each a family). A metric that cannot vary (no seed variance) and
    did not change tests nothing and stays out of the family."""
    undecided = table.verdict.isna() & (table.metric != "(runs)")
    tested = undecided & table.p.notna() & ~((table.p == 0.5) & (table.change == 0))
    idx = list(table.index[tested])
    worse = dict(zip(idx, holm(table.p[tested].tolist(), alpha)))
    better = dict(zip(idx, holm((1 - table.p[tested]).tolist(), alpha)))
    verdicts, notes = table.verdict.tolist(), table.note.tolist()
    for pos, (i, row) in enumerate(zip(table.index, table.itertuples(index=False))):
        if not undecided[i]:
            continue
        change = row.change if metric_info(row.metric).higher_is_better is False else -row.change  # > 0: worse
        real = worse.get(i, i not in worse) if change > 0 else better.get(i, i not in better)
        beyond = abs(change) > row.allowed
        verdicts[pos] = ("regressed" if change > 0 else "improved") if beyond and real else "unchanged"
        if beyond and not real:
            notes[pos] = f"within noise (p={min(row.p, 1 - row.p):.2g}, {row.basis})"
    table["verdict"], table["note"] = verdicts, notes


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


def _by_metric(stats: pd.DataFrame) -> dict[tuple, dict[str, dict]]:
    """(suite, task, method, budget) -> metric -> mean, std, n."""
    out: dict[tuple, dict[str, dict]] = {}
    for row in stats.itertuples(index=False):
        out.setdefault(tuple(getattr(row, k) for k in MATCH_KEYS), {})[row.metric] = \
            {"mean": row.mean, "std": row.std, "n": row.n}
    return out


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
            raise NothingToCompare(f"reference 'previous' needs two invocations in the history, found {len(inv)}")
        return inv.iloc[-2]
    ours = {r.get("invocation") for r in before.records}
    configs = {tuple(str(r.get(k)) for k in MATCH_KEYS) for r in before.records}
    newest = max((r.get("finished_at") or "" for r in before.records), default="")
    older = inv[~inv.invocation.isin(ours) & (inv.finished_at.fillna("") <= newest)]
    older = older[older.configs.map(lambda cs: bool(cs & configs))]
    if older.empty:  # the first night of these configurations
        raise NothingToCompare("reference 'previous': the history holds no earlier run of the candidate's "
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
            "p": f"{r.p:.2g}" if measured and not math.isnan(r.p) else "",
            "verdict": (f"{r.verdict} ({r.note})" if isinstance(r.note, str) else r.verdict) if measured
            else f"{r.verdict}: {r.note}",
        })
    return pd.DataFrame(rows)


SHOWN = {"regressed", "failed", "vanished", "improved", "reconfigured", "ungated", "missing", "new", "incomparable"}
COMPARED = {"regressed", "improved", "unchanged", "ungated", "failed", "vanished"}


def unchecked(table: pd.DataFrame) -> bool:
    """Every configuration in common changed: nothing was gated, and the night must not pass as clean."""
    return bool(len(table)) and not table.verdict.isin(COMPARED).any() and (table.verdict == "reconfigured").any()


def exit_code(table: pd.DataFrame) -> int:
    return 1 if len(regressions(table)) or unchecked(table) else 0


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
    if unchecked(table):
        return (f"NOT CHECKED: every configuration changed ({parts}); nothing was gated. Read what changed below, "
                f"then compare with --gate-reconfigured to gate across the change")
    return f"no regression ({parts})"


def _summary(table: pd.DataFrame, everything: bool) -> tuple[pd.DataFrame, list[str]]:
    """What a person needs: the rows that regressed, improved, changed configuration or were not gated; a reason
    shared by more than three ungated rows (one seed a night: speed everywhere) is one line, not a row each."""
    if everything:
        return table, []
    shown = table[table.verdict.isin(SHOWN)]
    ungated = shown[shown.verdict == "ungated"]
    lines, grouped = [], []
    for (metric, note), rows in ungated.groupby(["metric", "note"], sort=False):
        if len(rows) > 3:
            lines.append(f"{metric} ungated in {len(rows)} configurations: {note}")
            grouped += list(rows.index)
    return shown.drop(index=grouped), lines


def format_text(table: pd.DataFrame, baseline: Side, candidate: Side, everything: bool = False) -> str:
    shown, grouped = _summary(table, everything)
    body = _display(shown).to_string(index=False) if len(shown) else \
        ("(nothing in common)" if not len(table) else "(nothing regressed, improved or changed: --all lists every row)")
    return (f"{headline(table)}\nrule: {table.attrs.get('rule', '')}\n" + "".join(f"{g}\n" for g in grouped)
            + f"\nbaseline:  {baseline.label}\ncandidate: {candidate.label}\n\n{body}")


def format_markdown(table: pd.DataFrame, baseline: Side, candidate: Side, everything: bool = False) -> str:
    rows, grouped = _summary(table, everything)
    shown = _display(rows)
    icon = {"regressed": "❌ regressed", "failed": "❌ failed", "vanished": "❌ vanished", "improved": "✅ improved"}
    lines = ["## bench compare", "", f"**{headline(table)}**", "", f"Rule: {table.attrs.get('rule', '')}.", "",
             *[f"- {g}" for g in grouped], *([""] if grouped else []),
             f"- baseline: `{baseline.label}`", f"- candidate: `{candidate.label}`", ""]
    if len(shown):
        lines.append("| " + " | ".join(shown.columns) + " |")
        lines.append("|" + "|".join("---" for _ in shown.columns) + "|")
        for row in shown.itertuples(index=False):
            cells = [str(c).replace("|", "\\|") for c in row]
            cells[-1] = next((icon[k] + cells[-1][len(k):] for k in icon if cells[-1].startswith(k)), cells[-1])
            lines.append("| " + " | ".join(cells) + " |")
    elif len(table):
        lines.append("Nothing regressed, improved or changed (`--all` lists every row).")
    return "\n".join(lines) + "\n"
