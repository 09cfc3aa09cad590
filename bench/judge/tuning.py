"""One learning-rate protocol for every method: a log-spaced grid, scored on the dev split, chosen by the best
mean dev score over seeds, written to a versioned file per task and budget that `bench run` then reads.

The grid is `points` rates spaced evenly in log scale across `span` (the highest / the lowest), centred on
the rate in the method's file: a method family shifts the centre, but every method gets the same number of
trials, the same budget and the same seeds. Tuning runs score only the dev split (`Task.splits("dev")`); the
evaluation split is opened by `bench run` alone. Torch-free: the CLI imports it before any run.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import json
import math
import os
from pathlib import Path

import yaml

from bench.core.errors import UsageError
from bench.meters.environment import git_commit

PROJECT = Path(__file__).resolve().parents[2]
DEFAULT_DIR = PROJECT / "suites" / "tuned"
POINTS, SPAN = 5, 100.0


def tuned_dir() -> Path:
    return Path(os.environ.get("BENCH_TUNED_DIR") or DEFAULT_DIR)


def grid(centre: float, points: int = POINTS, span: float = SPAN) -> list[float]:
    """`points` log-spaced rates from centre/sqrt(span) to centre*sqrt(span), 3 significant digits."""
    if points < 2 or span <= 1:
        raise UsageError(f"bad grid: {points} points over a span of {span:g} (expected >= 2 points, span > 1)")
    exps = [-0.5 + i / (points - 1) for i in range(points)]
    return [float(f"{centre * span ** e:.3g}") for e in exps]


def method_digest(method) -> str:
    """What a tuned rate belongs to: the method as declared, but for its rate (a changed method is re-tuned)."""
    declared = {k: v for k, v in method.declared().items() if k != "lr"}
    return hashlib.sha256(json.dumps(declared, sort_keys=True, default=str).encode()).hexdigest()[:12]


def path(task: str, budget: str, folder: Path | None = None) -> Path:
    return (folder or tuned_dir()) / f"{task}.{budget}.yaml"


def load(task: str, budget: str, folder: Path | None = None) -> dict:
    """The tuned file of a task and budget ({} when none was written)."""
    p = path(task, budget, folder)
    if not p.is_file():
        return {}
    data = yaml.safe_load(p.read_text()) or {}
    if not isinstance(data.get("methods"), dict):
        raise UsageError(f"{p}: not a tuning file (no `methods` mapping); re-run `python -m bench tune`")
    return data


def tuned_lr(task: str, budget: str, method) -> float | None:
    """The tuned rate of `method` (a MethodSpec) on a task and budget, if its file holds one for the method as
    declared now."""
    entry = load(task, budget).get("methods", {}).get(method.label)
    if entry and entry.get("method_digest") == method_digest(method):
        return float(entry["lr"])
    return None


def choose(scores: dict[float, list[float]]) -> float | None:
    """The rate with the best mean dev score (a failed trial scores nothing); the smaller rate on a tie."""
    means = {lr: sum(v) / len(v) for lr, v in scores.items() if v and all(math.isfinite(x) for x in v)}
    return max(sorted(means), key=lambda lr: means[lr]) if means else None


def write(task, budget: str, metric: str, results: dict, seeds: list[int], points: int, span: float,
          command: str, folder: Path | None = None) -> Path:
    """Merge `results` ({label: {"lr", "grid", "dev_scores", "method_digest", ...}}) into the task's file."""
    p = path(task.name, budget, folder)
    data = load(task.name, budget, folder) or {"task": task.name, "suite": task.suite, "budget": budget}
    data.update(metric=f"dev_{metric}", dev=task.dev_description(),
                protocol={"points": points, "span": span, "centre": "the rate in the method's file",
                          "choice": "best mean dev score over seeds"})
    methods = data.setdefault("methods", {})
    for label, entry in results.items():
        methods[label] = {**entry, "seeds": list(seeds), "date": dt.date.today().isoformat(), "commit": git_commit(),
                          "command": command}
    p.parent.mkdir(parents=True, exist_ok=True)
    header = "# Written by `python -m bench tune`; `bench run` reads the rates. Re-run the command to change them.\n"
    p.write_text(header + yaml.safe_dump(data, sort_keys=False, width=110, default_flow_style=None))
    return p

