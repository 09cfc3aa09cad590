"""What a grid runs: each (task, method) configuration with its settings, learning rate and config id; one spec
per seed; and which of them a results folder still lacks (resume, --rerun, --rerun-failed).

Torch-free, like the CLI that calls it: nothing here loads a model or data.
"""
from __future__ import annotations

import dataclasses
import datetime as dt
import errno
import fcntl
import hashlib
import json
import os
import random
import time
from dataclasses import dataclass
from pathlib import Path

from bench.core.errors import UsageError
from bench.judge import tuning
from bench.meters import cpu_matmul, precision
from bench.results import predictions
from bench.results.identity import config_id, run_config, run_key
from bench.results.store import ResultStore, in_plan_order, latest_folder, latest_runs

DEFAULT_OUT = Path("runs")
MODES = ("resume", "rerun", "rerun-failed")
ORDERS = ("random", "fixed")  # the order a grid's runs go in (--order)
DONE = ("ok", "skipped")  # a resumed grid runs these no more: a skip is decided by the configuration, not by chance
LOCK_FILE = ".grid.lock"  # held by the grid that runs into the folder (GridLock)


@dataclass(frozen=True)
class GridSettings:
    """What every configuration of a grid shares, besides its task and method."""

    budget: str
    device: str = "auto"
    model: str | None = None  # None: each task's default model
    data_dir: Path | None = None
    model_dir: Path | None = None
    precision: str = "fp32"
    tf32: str = "off"
    cpu_matmul: str = "default"
    cpu_threads: int | None = None  # torch threads of a CPU run given a share of the cores (the executor's); None: all
    early_stopping: int | None = None  # patience; None: off, so every method trains the same budget
    eval_every: int | None = None
    tuned_dir: Path | None = None  # where tuned rates are read (None: each task's own folder, judge/tuning.py)


def configure(task, method, settings: GridSettings, lrs: dict[str, float] | None = None,
              score_on: str = "eval") -> dict:
    """One (task, method) configuration: its settings, its learning rate and where that came from
    (bench/judge/tuning.py `learning_rate`), its config id. `lrs` holds the --lr rates (method label or name,
    or "*" for every method); `score_on="dev"` makes a tuning trial."""
    lr, source = tuning.learning_rate(task, method, settings.budget, lrs or {}, score_on, settings.model,
                                      settings.precision, settings.tuned_dir)
    precision.check(settings.precision, settings.tf32)
    cpu_matmul.check(settings.cpu_matmul)
    config = run_config(task, method, lr, settings.budget, settings.model, settings.model_dir, settings.data_dir,
                        settings.device, score_on, settings.precision, settings.tf32, settings.cpu_matmul,
                        settings.cpu_threads)
    stopping, every = settings.early_stopping, settings.eval_every
    if stopping is not None and score_on == "eval":  # off by default, so every method trains the same budget
        if stopping < 1 or (every is not None and every < 1):
            raise UsageError(f"bad --early-stopping {stopping} / --eval-every {every} (expected >= 1)")
        config["early_stopping"] = {"patience": stopping, "eval_every": every}
    data_dir, model_dir = settings.data_dir, settings.model_dir
    return dict(suite=task.suite, task=task.name, task_file=task.source or None, method=method.label,
                method_spec=dataclasses.asdict(method),
                lr=lr, lr_source=source, budget=settings.budget, model=settings.model, device=settings.device,
                default_model=task.default_model, data_dir=str(data_dir) if data_dir else None,
                model_dir=str(model_dir) if model_dir else None, config=config, config_id=config_id(config),
                score_on=score_on, precision=settings.precision, tf32=settings.tf32, cpu_matmul=settings.cpu_matmul,
                early_stopping=config.get("early_stopping"))


def check_tuning_grid(points: int, span: float) -> None:
    if points < 2 or span <= 1:
        raise UsageError(f"bad grid: --points {points} --span {span:g} (expected >= 2 points, span > 1)")


def tuning_runs(tasks, methods, settings: GridSettings, points: int, span: float,
                rates: dict[tuple[str, str], list[float]] | None = None
                ) -> tuple[list[dict], dict[tuple[str, str], dict[str, float]]]:
    """The tuning grid: every method at `points` rates over `span` (bench/judge/tuning.py `grid`), scored on the dev
    split; or, with `rates` ({(task, method label): rates}: a later stage's round, `tuning.next_round`), only those.
    Returns (configurations, {(task, method label): {trial label: rate}})."""
    check_tuning_grid(points, span)
    trials, runs = {}, []
    for task in tasks:
        for m in methods:
            todo = tuning.grid(m.lr, points, span) if rates is None else rates.get((task.name, m.label), [])
            for lr in todo:
                trial = m.with_overrides({"lr": lr})
                runs.append(configure(task, trial, settings, score_on="dev"))
                trials.setdefault((task.name, m.label), {})[trial.label] = lr
    return runs, trials


def results_folder(out: Path | None, resume: bool, suite: str | set[str], kind: str, default_out: Path = DEFAULT_OUT
                   ) -> tuple[Path, list[dict], str]:
    """(results folder, the newest earlier record of each of the suite's runs in it, invocation id). `suite`: the
    suite, or the suites of a grid's tasks; `kind` names a new folder (the suite, or tune-<suite>); --resume without
    a folder takes the newest one of that kind."""
    suites = {suite} if isinstance(suite, str) else set(suite)
    from bench.execute.runner import new_invocation_id
    if out is None and resume:
        out = latest_folder(default_out, suites, tuning=kind.startswith("tune-"))
        if out is None:
            raise UsageError(f"--resume: no results folder of suite {kind!r} under {str(default_out)!r} "
                             f"(pass --out FOLDER)")
    earlier = [r for r in latest_runs(ResultStore(out).records()) if r.get("suite") in suites] if out else []
    # A folder is one invocation: resuming it keeps its id, so history and `bench compare` see one grid.
    invocation = earlier[-1]["invocation"] if earlier and earlier[-1].get("invocation") else new_invocation_id()
    return Path(out or default_out / f"{invocation}-{kind}"), earlier, invocation


def select_runs(specs: list[dict], earlier: list[dict], mode: str) -> tuple[list[dict], dict[str, int]]:
    """Which planned runs to run, given the newest earlier record of each run in the folder.

    resume (the default): all but those whose newest record is `ok` or `skipped` (a skip is decided by the
    configuration id: run again it would be skipped again); rerun: all; rerun-failed: only those whose newest record
    is `failed` or `interrupted`. Returns (to run, {reason: count} of those not run)."""
    newest = {run_key(r): r for r in earlier}
    todo, skipped = [], {}
    for spec in specs:
        status = (newest.get((spec["config_id"], spec["seed"])) or {}).get("status")
        run = {"rerun": True, "resume": status not in DONE,
               "rerun-failed": status in ("failed", "interrupted")}[mode]
        if run:
            todo.append(spec)
        else:
            reason = f"already {status}" if status else "never run"
            skipped[reason] = skipped.get(reason, 0) + 1
    return todo, skipped


def skip_line(skipped: dict[str, int], mode: str) -> str:
    """What was left out of a grid, and how to run it after all."""
    hint = "--rerun-failed reruns only failed/interrupted runs" if mode == "rerun-failed" else \
        "--rerun runs them again"
    reasons = ", ".join(f"{skipped[why]} {why}" for why in sorted(skipped))  # the same line whatever the run order
    return f"{sum(skipped.values())} skipped ({reasons}; {hint})"


@dataclass(frozen=True)
class Plan:
    """A grid laid out in a results folder: every spec (configuration x seed), those still to run, and the count
    of those left out by reason."""

    specs: list[dict]
    todo: list[dict]
    skipped: dict[str, int]
    mode: str

    @property
    def keys(self) -> set[tuple]:
        """The (config id, seed) of every planned run, the grid's own among a folder's records."""
        return {(s["config_id"], s["seed"]) for s in self.specs}

    def own(self, records: list[dict]) -> list[dict]:
        keys = self.keys
        return [r for r in records if run_key(r) in keys]

    def skip_line(self) -> str:
        return skip_line(self.skipped, self.mode)


def order_seed(invocation: str) -> int:
    """The seed of a grid's random run order: from its invocation id, which a resumed folder keeps."""
    return int(hashlib.sha256(invocation.encode()).hexdigest()[:8], 16)


def plan_grid(runs: list[dict], seeds: list[int], invocation: str, out: Path, earlier: list[dict],
              mode: str = "resume", order: str = "random") -> Plan:
    """One spec per configuration x seed (bench/execute/runner.py `plan`), each with the file its predictions go
    to, and which of them to run in `mode` (resume, rerun, rerun-failed).

    `order="random"` (the default) shuffles the runs, seeded by the invocation id (`order_seed`), so host drift and
    `--parallel` neighbours do not always fall on the same methods, and a resumed grid keeps its order;
    `"fixed"`: task, seed, method order. Each spec carries `order`: {mode, seed, position (in the order run),
    planned (in the fixed order)}, which the worker's record keeps under `info.order`."""
    from bench.execute.runner import plan
    if mode not in MODES:
        raise UsageError(f"unknown mode {mode!r} (valid: {', '.join(MODES)})")
    if order not in ORDERS:
        raise UsageError(f"unknown --order {order!r} (valid: {', '.join(ORDERS)})")
    specs = plan(runs, seeds, invocation)
    planned = list(range(len(specs)))
    seed = order_seed(invocation) if order == "random" else None
    if seed is not None:
        random.Random(seed).shuffle(planned)
    specs = [dict(specs[j], order={"mode": order, "seed": seed, "position": i, "planned": j})
             for i, j in enumerate(planned)]
    for spec in specs:
        spec["predictions_rel"] = predictions.relative_path(spec["run_id"])
        spec["predictions_path"] = str((out / spec["predictions_rel"]).resolve())
    todo, skipped = select_runs(specs, earlier, mode)
    return Plan(specs, todo, skipped, mode)


@dataclass(frozen=True)
class Ran:
    """A grid after running: what the executor returned, and the newest record of every run in the folder
    (which may hold earlier runs too)."""

    outcome: object  # bench/execute/runner.py Outcome: records, interrupted
    records: list[dict]
    wall_s: float


def run_plan(grid: Plan, out: Path, *, executor, verbose: bool = False, describe=None, history_db: Path | None = None,
             timeout: float | None = None) -> Ran:
    """Run what is left of a planned grid into `out` and read the folder back."""
    from bench.execute.runner import run_grid
    t0 = time.perf_counter()
    outcome = run_grid(grid.todo, out, verbose=verbose, describe=describe, history_db=history_db, timeout=timeout,
                       executor=executor)
    wall = time.perf_counter() - t0
    # tables and reports never depend on the order the runs went in
    return Ran(outcome, in_plan_order(latest_runs(ResultStore(out).records(warn=False))), wall)


class GridLock:
    """One grid at a time in a results folder: `<out>/.grid.lock`, held (fcntl.flock, exclusive) for the grid's
    lifetime and naming its holder (invocation id, pid, start time). A second grid into the folder is refused at
    once (UsageError: exit 2, nothing run) instead of running every run a second time beside the first. The
    kernel drops the lock when its process ends, however it ends, so a dead grid's lock file never blocks."""

    def __init__(self, out: Path, invocation: str):
        self.path, self.invocation, self.fd = Path(out) / LOCK_FILE, invocation, None

    def __enter__(self) -> "GridLock":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise
            raise UsageError(f"{self.path.parent} is in use by another grid ({self.holder()}); wait for it to "
                             f"end, or run into another --out folder") from None
        holder = {"invocation": self.invocation, "pid": os.getpid(),
                  "started_at": dt.datetime.now().astimezone().isoformat(timespec="seconds")}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(holder).encode(), 0)
        self.fd = fd
        return self

    def holder(self) -> str:
        try:
            held = json.loads(self.path.read_text())
            return f"invocation {held['invocation']}, pid {held['pid']}, started {held['started_at']}"
        except (OSError, ValueError, KeyError, TypeError):  # its holder is writing it this instant
            return "holder unknown"

    def __exit__(self, *exc) -> None:
        if self.fd is not None:
            os.close(self.fd)  # closing releases the lock; the file stays, naming the last grid
            self.fd = None
