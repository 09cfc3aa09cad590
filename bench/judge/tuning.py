"""One learning-rate protocol for every method: a log-spaced grid, scored on the dev split, chosen by the best
mean dev score over seeds, written to a versioned file per task and budget that `bench run` then reads for the
model and precision the rates were tuned at.

Stage 1 is `points` rates spaced evenly in log scale across `span` (the highest / the lowest), centred on the rate
in the method's file: a method family shifts the centre, but every method gets the same number of trials, the
same budget and the same seeds. A method whose best stage-1 rate is at an edge of its grid gets up to
`EDGE_POINTS` more rates past that edge, one grid step at a time, while the newest point stays the best. Stage 2
then tries `STAGE2_OFFSETS` around every method's best (half a grid step either side: the same number of extra
trials for every method), and the best of all the points wins. Tuning runs score only the dev split
(`Task.splits("dev")`); the evaluation split is opened by `bench run` alone. Torch-free: the CLI imports it before
any run.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import json
import math
import os
import shlex
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from bench.core.errors import UsageError
from bench.meters.environment import git_commit
from bench.results.identity import family_of

PROJECT = Path(__file__).resolve().parents[2]
DEFAULT_DIR = PROJECT / "suites" / "tuned"
POINTS, SPAN = 5, 100.0


def tuned_dir() -> Path:
    return Path(os.environ.get("BENCH_TUNED_DIR") or DEFAULT_DIR)


EDGE_POINTS = 2  # at most this many rates past the edge a stage-1 best sits at
STAGE2_OFFSETS = (-0.5, 0.5)  # stage 2: these fractions of a grid step from each method's best
EDGE, STAGE2 = "edge_extension", "stage2"
LATER_STAGES = (EDGE,) * EDGE_POINTS + (STAGE2,)  # the rounds after stage 1, in order
TITLES = {EDGE: "edge extension: one grid step past a best at the edge of its grid",
          STAGE2: "stage 2: half a grid step either side of each method's best"}


def rate(centre: float, points: int, span: float, index: float) -> float:
    """Rung `index` of the log-spaced ladder whose rungs 0 .. points-1 are the stage-1 grid (3 significant
    digits); rungs below 0 or above points-1 continue it past its edges, fractional ones lie between rungs."""
    return float(f"{centre * span ** (-0.5 + index / (points - 1)):.3g}")


def grid(centre: float, points: int = POINTS, span: float = SPAN) -> list[float]:
    """`points` log-spaced rates from centre/sqrt(span) to centre*sqrt(span), 3 significant digits."""
    if points < 2 or span <= 1:
        raise UsageError(f"bad grid: {points} points over a span of {span:g} (expected >= 2 points, span > 1)")
    return [rate(centre, points, span, i) for i in range(points)]


def rung(lr: float, centre: float, points: int, span: float) -> int:
    """The ladder rung of a (rounded) grid rate: its nearest whole rung."""
    return round((math.log(lr / centre) / math.log(span) + 0.5) * (points - 1))


def method_digest(method, family: str | None = None) -> str:
    """What a tuned rate belongs to: the method as declared (with `family`'s entries), but for its rate (a changed
    method is re-tuned)."""
    declared = {k: v for k, v in method.declared(family=family).items() if k != "lr"}
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


def folder_of(task, override: Path | None = None) -> Path:
    """Where a task's tuned rates live: --tuned-dir, else beside a user's task file (<its folder>/tuned/), else
    $BENCH_TUNED_DIR or suites/tuned/."""
    return Path(override) if override else Path(task.tuned_folder) if getattr(task, "tuned_folder", "") else tuned_dir()


def tuned_entry(task: str, budget: str, method, folder: Path | None = None, family: str | None = None) -> dict | None:
    """The tuned file's entry for `method` (a MethodSpec) on a task and budget, if it holds one for the method as
    declared now (None otherwise)."""
    entry = load(task, budget, folder).get("methods", {}).get(method.label)
    return entry if entry and entry.get("method_digest") == method_digest(method, family) else None


def tuned_for(model: str | None, precision: str | None) -> str:
    """`model, precision` as an lr_source and the retune hint name them."""
    return f"{model}, {precision}" if model and precision else "an unrecorded model and precision"


def learning_rate(task, method, budget: str, lrs: dict[str, float], score_on: str = "eval", model: str | None = None,
                  precision: str = "fp32", folder: Path | None = None) -> tuple[float, str]:
    """A configuration's learning rate and where it came from.

    --lr (`lrs`: by method label, else name, else "*" for all), else --set METHOD.lr (a grid point when tuning),
    else the task's tuned file where its entry was tuned for this run's model (`model`, None: the task's default)
    and precision, else a rate the task itself needs (the smoke tasks' random models), else the method file's
    ("default"; "experiment" for a peft experiment folder's training_params.json rate, methods/spec.py). A tuned
    rate for another model or precision is not used: the source says so ("method file (tuned for M, P; this run:
    M2, P2)"). Tuning trials (`score_on="dev"`) never read a tuned file."""
    entry = tuned_entry(task.name, budget, method, folder_of(task, folder), family_of(task)) \
        if score_on == "eval" else None  # a broken file fails every run
    if method.label in lrs or method.name in lrs or "*" in lrs:
        return lrs.get(method.label, lrs.get(method.name, lrs.get("*"))), "override"
    if "lr" in method.overrides:
        return method.lr, "grid" if score_on == "dev" else "override"
    here = (model or task.default_model, precision)
    if entry is not None and (entry.get("model"), entry.get("precision")) == here:
        return float(entry["lr"]), "tuned"
    own = "experiment" if getattr(method, "lr_from", "") == "experiment" else "default"  # a peft experiment's rate
    lr, source = (task.lr_overrides[method.name], "task") if method.name in task.lr_overrides else (method.lr, own)
    if entry is not None:
        source = "method file" if source == "default" else source
        source += f" (tuned for {tuned_for(entry.get('model'), entry.get('precision'))}; this run: {tuned_for(*here)})"
    return lr, source


def tuned_elsewhere(lr_source: str) -> bool:
    """Whether a configuration's rate is not the tuned one because its tuned rate is for another model or
    precision (`learning_rate`'s source)."""
    return "(tuned for " in lr_source


def retune_command(suite: str | None, tasks: list[str], methods: list[str], budget: str, model: str | None,
                   precision: str, sets: list[str] | None = None, seeds: list[int] | None = None) -> str:
    """The `python -m bench tune` that tunes `methods` on `tasks` (names, or task files) for this model and
    precision."""
    argv = ["python", "-m", "bench", "tune"] + (["--suite", suite] if suite else []) + [
        "--tasks", ",".join(tasks), "--budget", budget, "--methods", ",".join(methods)]
    argv += ["--model", model] if model else []
    argv += ["--precision", precision] if precision != "fp32" else []
    for item in sets or []:
        if not item.partition("=")[0].endswith(".lr"):  # the grid is the tuning's own
            argv += ["--set", item]
    argv += ["--seeds", ",".join(map(str, seeds))] if seeds and list(seeds) != [0] else []
    return shlex.join(argv)


def retune_hint(runs: list[dict], suite: str | None, budget: str, model: str | None, precision: str,
                sets: list[str] | None = None, seeds: list[int] | None = None) -> str | None:
    """One line for `bench run` when some configurations have a tuned rate only for another model or precision:
    which, and the command that tunes them for this run (None when there are none)."""
    off = [r for r in runs if tuned_elsewhere(r.get("lr_source") or "")]
    if not off:
        return None
    tasks = list(dict.fromkeys(in_project(r["task_file"]) or r["task_file"] if r.get("task_file") and not suite
                               else r["task"] for r in off))
    names = list(dict.fromkeys(r["method_spec"]["name"] for r in off))
    return (f"{len(off)} configuration(s) ({', '.join(dict.fromkeys(r['method'] for r in off))}) have tuned rates "
            f"only for another model or precision and use their method file's rate; tune them for this run with: "
            + retune_command(suite, tasks, names, budget, model, precision, sets, seeds))


def choose(scores: dict[float, list[float]]) -> float | None:
    """The rate with the best mean dev score (a failed trial scores nothing); the smaller rate on a tie."""
    means = {lr: sum(v) / len(v) for lr, v in scores.items() if v and all(math.isfinite(x) for x in v)}
    return max(sorted(means), key=lambda lr: means[lr]) if means else None


@dataclass(frozen=True)
class Choice:
    """One method's tuning on one task: the dev score of every trial, per rate, the rates of each stage and the
    rate chosen among all of them."""

    method: object  # the MethodSpec as declared, without the trials' rate
    scores: dict[float, list[float]]  # rate -> one dev score per seed (nan: the trial did not finish ok)
    best: float | None  # None: no trial succeeded
    stages: dict[str, list[float]] = field(default_factory=dict)  # "grid", EDGE, STAGE2 -> their rates, in order
    family: str | None = None  # the task's extra method family (`family_of`): part of the method's digest

    @property
    def at_grid_edge(self) -> bool:
        """The best rate is the lowest or highest tried: a wider span may find a better one."""
        return self.best is not None and self.best in (min(self.scores), max(self.scores))

    def stage_scores(self, *stages: str) -> dict[float, list[float]]:
        return {lr: self.scores[lr] for stage in stages for lr in self.stages.get(stage, []) if lr in self.scores}

    @property
    def stage1_best(self) -> float | None:
        """The best of the grid and its edge extension: what stage 2 refines around."""
        return choose(self.stage_scores("grid", EDGE))

    def next_rates(self, stage: str, points: int, span: float) -> list[float]:
        """The rates this method tries in the next round of `stage` (none: it has nothing more to try there).

        EDGE: one rung past the edge of the ladder the best sits at, while the best is at that edge and fewer
        than EDGE_POINTS rungs were added; STAGE2: STAGE2_OFFSETS of a rung around the stage-1 best (the same
        number for every method that has one)."""
        best = self.stage1_best
        if best is None:
            return []
        centre, tried = self.method.lr, self.stage_scores("grid", EDGE)
        at = rung(best, centre, points, span)
        if stage == EDGE:
            means = {round(sum(v) / len(v), 9) for v in tried.values() if v and all(math.isfinite(x) for x in v)}
            flat = len(means) <= 1  # every rate scored the same: the edge is the tie-break's, not a slope to follow
            if len(self.stages.get(EDGE, [])) >= EDGE_POINTS or best not in (min(tried), max(tried)) or flat:
                return []
            return [rate(centre, points, span, at + (1 if best == max(tried) else -1))]
        if stage == STAGE2:
            return [] if self.stages.get(STAGE2) else [rate(centre, points, span, at + d) for d in STAGE2_OFFSETS]
        raise ValueError(f"unknown tuning stage {stage!r}")

    def entry(self) -> dict:
        """What the tuned file keeps for the method (`write` adds the model, precision, seeds, date, commit and
        command): the chosen rate; stage 1's grid and dev scores; the edge extension's and stage 2's, when run."""
        def scores(rates):
            return {lr: [round(x, 5) for x in self.scores.get(lr, [])] for lr in rates}
        grid_rates = self.stages.get("grid", list(self.scores))
        out = {"lr": self.best, "grid": grid_rates, "method_digest": method_digest(self.method, self.family),
               "dev_scores": scores(grid_rates)}
        for stage in (EDGE, STAGE2):
            if self.stages.get(stage):
                out[stage] = {"grid": self.stages[stage], "dev_scores": scores(self.stages[stage])}
        if self.stages.get(STAGE2):
            out["stage1_lr"] = self.stage1_best
        out["at_grid_edge"] = self.at_grid_edge
        return out


def choices(records: list[dict], task: str, metric: str, methods: list,
            trials: dict[tuple[str, str], dict[str, float]],
            stages: dict[tuple[str, str], dict[str, list[float]]] | None = None,
            family: str | None = None) -> list[Choice]:
    """Each method's choice on `task` from the tuning grid's records; `metric` is the dev metric (dev_accuracy),
    `trials` maps (task, method label) to {trial label: rate} (bench/execute/plan.py `tuning_runs`), every stage's
    trials together; `stages` maps (task, method label) to {stage: its rates} (default: all in stage 1)."""
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
        laid_out = (stages or {}).get((task, m.label)) or {"grid": list(scores)}
        out.append(Choice(m, scores, choose(scores), {k: list(v) for k, v in laid_out.items()}, family))
    return out


def next_round(chosen: dict[str, list[Choice]], stage: str, points: int, span: float
               ) -> dict[tuple[str, str], list[float]]:
    """{(task, method label): rates} of the next round of `stage` for every method with something to try there."""
    out = {}
    for task, cs in chosen.items():
        for c in cs:
            rates = [lr for lr in c.next_rates(stage, points, span) if lr not in c.scores]
            if rates:
                out[(task, c.method.label)] = rates
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
          argv: list[str], folder: Path | None = None, model: str | None = None, precision: str = "fp32") -> Path:
    """Merge `results` ({label: {"lr", "grid", "dev_scores", "method_digest", ...}}) into the task's file, with the
    model (None: the task's default) and precision the trials ran at, which `bench run` must match to use the rates,
    and the command that made them (`argv`: the arguments of `python -m bench`, its folders made
    repository-relative)."""
    command = command_line(argv)
    p = path(task.name, budget, folder)
    data = load(task.name, budget, folder) or {"task": task.name, "suite": task.suite, "budget": budget}
    data.update(metric=f"dev_{metric}", dev=task.dev_description(),
                protocol={"points": points, "span": span, "centre": "the rate in the method's file",
                          EDGE: f"a stage-1 best at an edge of its grid: up to {EDGE_POINTS} more rates past that "
                                f"edge, one grid step each, while the newest is the best",
                          STAGE2: f"{len(STAGE2_OFFSETS)} rates around each method's best, "
                                  f"{', '.join(f'{d:+g}' for d in STAGE2_OFFSETS)} grid steps from it",
                          "choice": "best mean dev score over seeds among every rate tried"})
    methods = data.setdefault("methods", {})
    for label, entry in results.items():
        methods[label] = {"lr": entry["lr"], "model": model or task.default_model, "precision": precision, **entry,
                          "seeds": list(seeds), "date": dt.date.today().isoformat(), "commit": git_commit(),
                          "command": command}
    p.parent.mkdir(parents=True, exist_ok=True)
    header = "# Written by `python -m bench tune`; `bench run` reads the rates. Re-run the command to change them.\n"
    p.write_text(header + yaml.safe_dump(data, sort_keys=False, width=110, default_flow_style=None))
    return p

