"""A metric's series over past invocations, each point judged against the one before it by `bench compare`'s
rule. For the HTML report and `bench history`."""
from __future__ import annotations

import os

import pandas as pd

from bench.judge.verdicts import Thresholds, verdict
from bench.results import history


def trends(path: str | os.PathLike, suite=None, task=None, method=None, metric=None) -> pd.DataFrame:
    """Metric over time per configuration: one row per (configuration, metric, invocation), oldest first.

    Columns: the history.CONFIG_KEYS, metric, invocation, git_commit, date (when the invocation's last run ended),
    mean, std, n, and `regressed`: whether this point regressed against the previous point of its series,
    by the same thresholds as `bench compare` (False for a series' first point). For the HTML report and
    `bench history`.
    """
    recs = history.records(path, **{k: v for k, v in dict(suite=suite, task=task, method=method).items() if v})
    frame = history.stats(recs, history.CONFIG_KEYS + ["invocation"])
    columns = history.CONFIG_KEYS + ["metric", "invocation", "git_commit", "date", "mean", "std", "n", "regressed"]
    if metric is not None:
        wanted = [metric] if isinstance(metric, str) else list(metric)
        frame = frame[frame.metric.isin(wanted)]
    if frame.empty:
        return pd.DataFrame(columns=columns)
    meta = pd.DataFrame([{"invocation": r["invocation"], "finished_at": r.get("finished_at"),
                          "git_commit": r.get("git_commit")} for r in recs])
    meta = meta.groupby("invocation").agg(date=("finished_at", "max"),
                                          git_commit=("git_commit", lambda s: ",".join(sorted(set(s.dropna())))))
    frame = frame.join(meta, on="invocation").sort_values("date", kind="stable")
    thresholds = Thresholds()
    regressed = []
    for _, series in frame.groupby(history.CONFIG_KEYS + ["metric"], sort=False, dropna=False):
        prev = None
        for idx, row in series.iterrows():
            flag = False
            if prev is not None:
                flag = verdict(row.metric, prev["mean"], prev["std"], row["mean"], row["std"], thresholds)[0] == "regressed"
            regressed.append((idx, flag))
            prev = row
    frame["regressed"] = pd.Series(dict(regressed))
    return frame[columns].reset_index(drop=True)
