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
import shlex
from dataclasses import dataclass
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


def learning_rate(task, method, budget: str, lrs: dict[str, float], score_on: str = "eval") -> tuple[float, str]:
    """A configuration's learning rate and where it came from.

    --lr (`lrs`: by method label, else name, else "*" for all), else --set METHOD.lr (a grid point when tuning),
    else the task's tuned file, else a rate the task itself needs (the smoke tasks' random models), else the
    method file's. Tuning trials (`score_on="dev"`) never read a tuned file."""
    tuned = tuned_lr(task.name, budget, method) if score_on == "eval" else None  # a broken file fails every run
    if method.label in lrs or method.name in lrs or "*" in lrs:
        return lrs.get(method.label, lrs.get(method.name, lrs.get("*"))), "override"
    if "lr" in method.overrides:
        return method.lr, "grid" if score_on == "dev" else "override"
    if tuned is not None:
        return tuned, "tuned"
    if method.name in task.lr_overrides:
        return task.lr_overrides[method.name], "task"
    return method.lr, "default"


def choose(scores: dict[float, list[float]]) -> float | None:
    """The rate with the best mean dev score (a failed trial scores nothing); the smaller rate on a tie."""
    means = {lr: sum(v) / len(v) for lr, v in scores.items() if v and all(math.isfinite(x) for x in v)}
    return max(sorted(means), key=lambda lr: means[lr]) if means else None


@dataclass(frozen=True)
class Choice:
    """One method's tuning on one task: the dev score of every trial, per rate of its grid, and the rate chosen."""

    method: object  # the MethodSpec as declared, without the trials' rate
    scores: dict[float, list[float]]  # rate -> one dev score per seed (nan: the trial did not finish ok)
    best: float | None  # None: no trial succeeded

    @property
    def at_grid_edge(self) -> bool:
        """The best rate is the grid's lowest or highest: a wider span may find a better one."""
        return self.best is not None and self.best in (min(self.scores), max(self.scores))

    def entry(self) -> dict:
        """What the tuned file keeps for the method (`write` adds the seeds, date, commit and command)."""
        return {"lr": self.best, "grid": list(self.scores), "method_digest": method_digest(self.method),
                "dev_scores": {lr: [round(x, 5) for x in v] for lr, v in self.scores.items()},
                "at_grid_edge": self.at_grid_edge}


def choices(records: list[dict], task: str, metric: str, methods: list,
            trials: dict[tuple[str, str], dict[str, float]]) -> list[Choice]:
    """Each method's choice on `task` from the tuning grid's records; `metric` is the dev metric (dev_accuracy),
    `trials` maps (task, method label) to {trial label: rate} (bench/execute/plan.py `tuning_runs`)."""
    by_label = {}
    for r in records:
        by_label.setdefault((r["task"], r["method"]), []).append(r)
    out = []
    for m in methods:
        scores = {}
        for label, lr in trials[(task, m.label)].items():
            rs = by_label.get((task, label), [])
            scores[lr] = [r["metrics"].get(metric, float("nan")) if r["status"] == "ok" else float("nan")
                          for r in rs]
        out.append(Choice(m, scores, choose(scores)))
    return out


PATH_OPTIONS = ("--out", "--data-dir", "--model-dir", "--db")


def command_line(argv: list[str], cwd: Path | None = None) -> str:
    """`python -m bench ARGV` as a tuned file records it, the same from any checkout: a folder inside the
    repository is written relative to it; an option naming a folder outside it is left out (it names a place on
    the machine that ran the tuning, nowhere else)."""
    out, rest = [], list(argv)
    while rest:
        item = rest.pop(0)
        name, eq, value = item.partition("=")
        if name not in PATH_OPTIONS:
            out.append(item)
            continue
        if not eq:
            value = rest.pop(0) if rest else ""
        inside = in_project(value, cwd)
        if inside is not None:
            out += [name, inside]
    return shlex.join(["python", "-m", "bench", *out])


def in_project(value: str, cwd: Path | None = None) -> str | None:
    """`value` (a path, relative to `cwd`) relative to the repository, or None for a path outside it."""
    if not value:
        return None
    try:
        return (Path(cwd or Path.cwd()) / value).resolve().relative_to(PROJECT).as_posix()
    except ValueError:
        return None


def write(task, budget: str, metric: str, results: dict, seeds: list[int], points: int, span: float,
          argv: list[str], folder: Path | None = None) -> Path:
    """Merge `results` ({label: {"lr", "grid", "dev_scores", "method_digest", ...}}) into the task's file, with the
    command that made them (`argv`: the arguments of `python -m bench`, its folders made repository-relative)."""
    command = command_line(argv)
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

