"""Command line: `python -m bench {list,run,tune,report,history,compare,recommend}`. Bad names exit 2 with a
one-line message."""
from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from bench.core import resolve
from bench.core.errors import DataError, NothingToCompare, StorageFull, UsageError


def _csv(value: str) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()]


def _seeds(value: str) -> list[int]:
    try:
        return [int(v) for v in _csv(value)]
    except ValueError:
        raise argparse.ArgumentTypeError(f"seeds must be integers separated by commas, got {value!r}")


def _pick(requested: list[str] | None, valid: list[str], what: str) -> list[str]:
    if not requested:
        return valid
    for name in requested:
        if name not in valid:
            raise UsageError(f"unknown {what} {name!r} (valid: {', '.join(valid)})")
    return requested


def _lrs(values: list[str] | None) -> dict[str, float]:
    """--lr 1e-3 (every method) or --lr lora=1e-3 (one method); repeatable."""
    out = {}
    for item in values or []:
        name, _, value = item.rpartition("=")
        try:
            out[name or "*"] = float(value)
        except ValueError:
            raise UsageError(f"bad --lr {item!r} (expected a number or METHOD=NUMBER)")
    return out


def cmd_list(args) -> int:
    from methods import METHODS
    from suites import SUITES, find_tasks
    print("suites and tasks (a task is a file: suites/tasks/, or yours with --tasks path/to/task.yaml):")
    listed = list(SUITES.items())
    if args.tasks:
        given = find_tasks(args.tasks, None)
        listed.append(("given", given))
    for suite, tasks in listed:
        for t in tasks:
            budgets = ",".join(t.budgets) if t.budgets else "derived from the data's size"
            where = f"  file={_shown(t.source)}" if t.source else ""
            print(f"  {t.suite:8s} {t.name:12s} {t.kind:22s} metric={t.metric:10s} model={t.default_model}  "
                  f"budgets={budgets}{where}")
    from methods.spec import FAMILIES
    print(f"methods ({len(METHODS)}, one file each in methods/zoo/; a path to your own file works too):")
    print(f"  {'name':14s} {'kind':22s} {'lr':8s} {'applies to':20s} key settings")
    for m in METHODS.values():
        kind = f"peft {m.peft_type}" if m.kind == "peft" else m.kind
        if m.quantize_base:
            kind += f", {m.quantize_base} base"
        where = ", ".join(f for f in FAMILIES if f not in m.not_on) + (" (cuda)" if m.devices == ["cuda"] else "")
        print(f"  {m.name:14s} {kind:22s} {m.lr:<8g} {where:20s} {m.key_hyperparameters()}")
        print(f"  {'':14s} {m.description}")
        for fam, why in m.not_on.items():
            print(f"  {'':14s} not on {fam}: {why}")
        if m.devices and getattr(m, "devices_reason", ""):
            print(f"  {'':14s} only on {', '.join(m.devices)}: {m.devices_reason}")
    return 0


def _shown(path: str) -> str:
    """A path as short as it reads well: relative to the working folder when inside it."""
    try:
        return str(Path(path).resolve().relative_to(Path.cwd()))
    except ValueError:
        return path


def _common(args):
    """Names checked torch-free, then (tasks, method specs, --lr map, executor)."""
    import methods
    from suites import BUDGETS, find_tasks, suite_name

    tasks = find_tasks(args.tasks, args.suite)
    names = [t.name for t in tasks]
    if len(set(names)) < len(names):
        raise UsageError(f"two tasks named {next(n for n in names if names.count(n) > 1)!r} in one grid "
                         f"(give one a distinct `name:` in its task file)")
    suites = list(dict.fromkeys(t.suite for t in tasks))
    args.suite_label = suite_name(args.suite) if args.suite else "+".join(suites)
    args.suites = set(suites)
    method_specs = methods.resolve(args.methods or list(methods.METHODS), args.set)
    if args.budget not in BUDGETS:
        raise UsageError(f"unknown budget {args.budget!r} (valid: {', '.join(BUDGETS)})")
    if args.timeout is not None and args.timeout <= 0:
        raise UsageError(f"bad --timeout {args.timeout:g} (expected a number of seconds > 0)")
    lrs = _lrs(getattr(args, "lr", None))
    for name in lrs:
        if name != "*":
            _pick([name], list(dict.fromkeys([m.name for m in method_specs] + [m.label for m in method_specs])),
                  "method in --lr")
    _check_data(args, tasks)
    return tasks, method_specs, lrs, make_executor(args)


def _check_data(args, tasks) -> None:
    """A task file's own data is read and checked before anything runs: a bad file, column or label ends here in
    one line (exit 1), never in each run's traceback; a class imbalance is a warning."""
    data_dir = resolve.data_dir(args.data_dir)
    score_on = "dev" if args.command == "tune" else "eval"
    for task in tasks:
        if task.data_files or (task.source and not task.data_subdir and Path(task.hub_id).is_dir()):
            checked = task.check(data_dir, score_on)
            rows = ", ".join(f"{role} {n:,}" for role, n in checked["rows"].items())
            print(f"bench: {task.name}: {len(checked['labels'])} classes, rows {rows}; data checked", file=sys.stderr)
            for warning in checked["warnings"]:
                print(f"bench: warning: {task.name}: {warning}", file=sys.stderr)


def _settings(args, executor):
    """The grid options every configuration shares (bench/execute/plan.py); the executor says how many threads
    a CPU run gets when it shares the cores."""
    from bench.execute.plan import GridSettings
    return GridSettings(budget=args.budget, device=args.device, model=args.model, tuned_dir=args.tuned_dir,
                        data_dir=resolve.data_dir(args.data_dir), model_dir=resolve.model_dir(args.model_dir),
                        precision=args.precision, tf32=args.tf32, cpu_matmul=args.cpu_matmul,
                        cpu_threads=executor.cpu_threads(),
                        early_stopping=getattr(args, "early_stopping", None),  # `run` only
                        eval_every=getattr(args, "eval_every", None))


def _mode(args) -> str:
    return "rerun" if args.rerun else "rerun-failed" if args.rerun_failed else "resume"


def cmd_run(args) -> int:
    from bench.execute import plan
    tasks, method_specs, lrs, executor = _common(args)
    out, earlier, invocation = plan.results_folder(args.out, args.resume, args.suites, args.suite_label)
    settings = _settings(args, executor)
    runs = [plan.configure(task, m, settings, lrs) for task in tasks for m in method_specs]
    from bench.judge import tuning
    hint = tuning.retune_hint(runs, args.suite, args.budget, args.model, args.precision, args.set, args.seeds)
    if hint:  # tuned rates for another model or precision: the method files' rates, and how to tune for this one
        print(f"bench: {hint}", file=sys.stderr)
    code, _ = _execute(args, tasks, runs, out, earlier, invocation, executor)
    return code


def _execute(args, tasks, runs: list[dict], out: Path, earlier: list[dict], invocation: str, executor,
             tuning: bool = False) -> tuple[int, list[dict]]:
    """Run what is left of a grid into `out`, holding the folder (bench/execute/plan.py GridLock: a second grid into
    it is refused at once, exit 2), store and summarise it; (exit code, the folder's newest records)."""
    from bench.execute import plan
    with plan.GridLock(out, invocation):
        return _execute_held(args, tasks, runs, out, earlier, invocation, executor, tuning)


def _execute_held(args, tasks, runs: list[dict], out: Path, earlier: list[dict], invocation: str, executor,
                  tuning: bool = False) -> tuple[int, list[dict]]:
    """_execute in a folder this grid holds. Tuning grids stay out of the history and the reports: their dev scores
    are not results."""
    from bench.execute import plan
    from bench.execute.runner import warm_up
    from bench.results import history
    from reports.tables import format_summary, summary, write_tables
    grid = plan.plan_grid(runs, args.seeds, invocation, out, earlier, _mode(args), args.order)
    if grid.todo:
        warm_up()  # a fork server (if used) imports the worker's libraries while this process gets ready
    metric_of = {t.name: ("dev_" if tuning else "") + t.metric for t in tasks}

    def describe(r: dict) -> str:
        m = r["metrics"]
        head = f"{r['task']:10s} {r['method']:10s} seed {r['seed']}: {r['status']}"
        if r["status"] != "ok":
            return f"{head} - {r['error']}"
        metric = metric_of[r["task"]]
        if not m.get("steps"):  # nothing trained (zero-shot): no training figures to show
            return f"{head}  {metric}={m.get(metric, float('nan')):.4f}  untrained  ({m['wall_time_s']:.0f}s)"
        return (f"{head}  {metric}={m.get(metric, float('nan')):.4f}  trainable={m['trainable_pct']:.3g}%  "
                f"peak={m['peak_train_mb']:.0f}MB  "
                + (f"gpu={m['cuda_max_allocated_mb']:.0f}MB  " if "cuda_max_allocated_mb" in m else "")
                + f"{m.get('train_examples_per_s', float('nan')):.1f} ex/s  "
                f"mfu={m.get('train_mfu', float('nan')):.3f}  ({m['wall_time_s']:.0f}s)")

    method_names = list(dict.fromkeys(r["method"] for r in runs))
    print(f"bench: {len(grid.specs)} {'tuning ' if tuning else ''}runs ({args.suite_label}: "
          f"{', '.join(t.name for t in tasks)} x {', '.join(method_names)} x seeds {','.join(map(str, args.seeds))}), "
          f"budget {args.budget}, results in {out}"
          + (f"; {grid.skip_line()}; {len(grid.todo)} to run" if grid.skipped else ""), file=sys.stderr)
    db = None if tuning else args.db or history.default_path(out)
    ran = plan.run_plan(grid, out, executor=executor, verbose=args.verbose, describe=describe, history_db=db,
                        timeout=args.timeout)
    outcome, all_records = ran.outcome, ran.records
    paths = write_tables(all_records, out)
    report_failed = False
    if not args.no_report and not tuning:
        from reports.html import write_report
        try:
            paths.update(write_report(all_records, out / "report.html", [out], history_db=db))
        except Exception as e:  # the runs are stored already: say so instead of ending on a traceback
            report_failed = True
            print(f"bench: the report could not be written ({type(e).__name__}: {e}); the results are safe in "
                  f"{out}; retry with `python -m bench report {out}`", file=sys.stderr)
    if not tuning:
        print(format_summary(summary(grid.own(all_records), metric_of)))
    print(f"\nwall time {ran.wall_s:.0f} s; tables: {', '.join(str(p) for p in paths.values())}"
          + (f"; history: {db}" if db else ""))
    if outcome.interrupted:
        print(f"bench: interrupted ({outcome.interrupted}) after {len(outcome.records)} of {len(grid.todo)} runs; "
              f"tables and report hold every finished run; resume with: {_resume_command(args, out)}",
              file=sys.stderr)
        return 130, all_records
    failed = [r for r in outcome.records if r["status"] == "failed"]
    if outcome.records and not any(r["status"] == "ok" for r in outcome.records):
        print(f"bench: no run succeeded ({len(outcome.records)} run(s): {len(failed)} failed, "
              f"{len(outcome.records) - len(failed)} skipped); see {out}/logs", file=sys.stderr)
        return 1, all_records
    return (1 if report_failed or (failed and args.strict) else 0), grid.own(all_records)


def cmd_tune(args) -> int:
    """Every method: the same log-spaced grid of rates, the same budget and seeds, scored on the dev split; up to
    two more rates past an edge best; then stage 2, half a grid step either side of every method's best, through
    the same executor into the same folder. The best mean dev score of all per method goes to
    suites/tuned/<task>.<budget>.yaml with the model and precision it was tuned at (bench/judge/tuning.py)."""
    from bench.execute import plan
    from bench.judge import tuning
    from bench.results.identity import run_key
    tasks, method_specs, _, executor = _common(args)
    untuned = [m.label for m in method_specs if m.kind == "none"]
    if untuned:  # nothing trains: no rate to choose
        print(f"bench: {', '.join(untuned)} train(s) nothing: left out of tuning", file=sys.stderr)
        method_specs = [m for m in method_specs if m.kind != "none"]
    plan.check_tuning_grid(args.points, args.span)
    out, earlier, invocation = plan.results_folder(args.out, args.resume, args.suites, f"tune-{args.suite_label}")
    settings = _settings(args, executor)
    runs, trials = plan.tuning_runs(tasks, method_specs, settings, args.points, args.span)
    stages = {key: {"grid": list(rates.values())} for key, rates in trials.items()}
    done = {}

    def chosen() -> dict:
        return {t.name: tuning.choices(list(done.values()), t.name, f"dev_{t.metric}", method_specs, trials, stages,
                                       tuning.family_of(t)) for t in tasks}

    with plan.GridLock(out, invocation):  # stage 1 and every later round hold the folder throughout
        code, records = _execute_held(args, tasks, runs, out, earlier, invocation, executor, tuning=True)
        if code == 130:
            return code
        done.update((run_key(r), r) for r in records)
        for stage in tuning.LATER_STAGES:
            todo = tuning.next_round(chosen(), stage, args.points, args.span)
            if not todo:
                continue
            print(f"\nbench: {tuning.TITLES[stage]} ({', '.join(f'{m} on {t}' for t, m in todo)})", file=sys.stderr)
            runs, more = plan.tuning_runs(tasks, method_specs, settings, args.points, args.span, todo)
            for key, rates in more.items():
                trials[key].update(rates)
                stages[key].setdefault(stage, []).extend(rates.values())
            later, records = _execute_held(args, tasks, runs, out, earlier, invocation, executor, tuning=True)
            if later == 130:
                return later
            code = code or (later if args.strict else 0)  # a round that all failed still leaves stage 1's choice
            done.update((run_key(r), r) for r in records)
    for task in tasks:
        metric = f"dev_{task.metric}"
        print(f"\n{task.name}: {metric} by learning rate (mean over seeds {','.join(map(str, args.seeds))}; "
              f"scored on {task.dev_description()})")
        choices = chosen()[task.name]
        for c in choices:
            shown = "  ".join(f"{lr:g}:" + (f"{sum(v) / len(v):.4f}" if v else "-") for lr, v in sorted(c.scores.items()))
            notes = [f"{name}: {', '.join('%g' % lr for lr in c.stages[stage])}"
                     for stage, name in ((tuning.EDGE, "edge extension"), (tuning.STAGE2, "stage 2"))
                     if c.stages.get(stage)]
            if c.at_grid_edge:
                notes.append("still at the edge of the rates tried: a wider --span may find better")
            print(f"  {c.method.label:14s} {shown}  -> {'%g' % c.best if c.best is not None else 'no trial succeeded'}"
                  + (f"  ({'; '.join(notes)})" if notes else ""))
        results = {c.method.label: c.entry() for c in choices if c.best is not None}
        if results:
            written = tuning.write(task, args.budget, task.metric, results, args.seeds, args.points, args.span,
                                   args.argv, folder=tuning.folder_of(task, args.tuned_dir), model=settings.model,
                                   precision=settings.precision)
            print(f"  written: {written}")
    return code


def make_executor(args):
    """Where the runs execute: this machine (`--parallel N` at a time) or a Ray cluster (`--executor ray`)."""
    if args.executor not in ("local", "ray"):
        raise UsageError(f"unknown executor {args.executor!r} (valid: local, ray)")
    if args.executor == "local":
        stray = [f for f, v in (("--address", args.address), ("--cpus-per-run", args.cpus_per_run),
                                ("--gpus-per-run", args.gpus_per_run)) if v is not None]
        if stray:
            raise UsageError(f"{', '.join(stray)} need --executor ray (valid with local: --parallel)")
        if args.parallel < 1:
            raise UsageError(f"bad --parallel {args.parallel} (expected a number of runs >= 1)")
        gpus = 0
        if args.parallel > 1 and args.device != "cpu":
            import torch
            gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
        from bench.execute.runner import LocalExecutor
        return LocalExecutor(args.parallel, gpus)
    if args.parallel != 1:
        raise UsageError("--parallel is for --executor local; with ray use --cpus-per-run/--gpus-per-run")
    from bench.execute.ray_executor import RayExecutor
    return RayExecutor(args.address, args.cpus_per_run, args.gpus_per_run)


def _resume_command(args, out: Path) -> str:
    """The command line that finishes this grid: the same arguments, into the same folder, without --rerun."""
    argv, drop_value = [], False
    for item in args.argv:
        if drop_value:
            drop_value = False
        elif item in ("--out", "--rerun", "--rerun-failed", "--resume") or item.startswith("--out="):
            drop_value = item == "--out"
        else:
            argv.append(item)
    return shlex.join(["python", "-m", "bench", *argv, "--out", str(out)])


def cmd_report(args) -> int:
    from bench.execute.plan import DEFAULT_OUT
    from reports.html import latest_results, load_records, write_report
    records, folders = load_records(args.results or [latest_results(DEFAULT_OUT)])
    out = args.out or (folders[0] / "report.html" if len(folders) == 1 else Path("report.html"))
    if args.history is not None and not args.history.is_file():
        raise UsageError(f"no history database at {str(args.history)!r} (`bench run` writes one; see --db)")
    paths = write_report(records, out, folders, title=args.title, history_db=args.history)
    print(f"report: {paths['html']} ({paths['html'].stat().st_size / 1e6:.2f} MB, {len(records)} runs); "
          f"markdown: {paths['markdown']}")
    return 0


def cmd_history(args) -> int:
    from bench.judge import trends
    from bench.results import history
    db = args.db or history.default_path()
    if args.import_folders:
        for folder in args.import_folders:
            print(f"imported {history.import_folder(db, folder)} runs from {folder} into {db}")
        return 0
    metric = args.metric
    if metric is None:  # each task's headline metric
        from suites import SUITES
        from suites.taskfile import METRICS  # a suite of your own: any headline a task file may declare
        metric = sorted({t.metric for t in SUITES[args.suite]} if args.suite in SUITES else
                        {m for ms in METRICS.values() for m in ms})
    frame = trends.trends(db, suite=args.suite, task=args.task, method=args.method, metric=metric)
    if frame.empty:
        print(f"no runs in {db} match these filters")
        return 0
    frame["commit"] = frame.pop("git_commit").str.slice(0, 12)
    frame["mean ± std"] = [f"{m:.4g}" + (f" ± {s:.2g}" if s == s else "") for m, s in zip(frame["mean"], frame["std"])]
    frame["regressed"] = frame.regressed.map({True: "REGRESSED", False: ""})
    print(frame[["date", "commit", "invocation", "suite", "task", "method", "budget", "device", "metric",
                 "mean ± std", "n", "regressed"]].to_string(index=False))
    return 0


def cmd_compare(args) -> int:
    from bench.judge import compare
    from bench.results import history
    db = args.db or history.default_path()
    thresholds = compare.parse_thresholds(args.threshold)
    candidate = compare.resolve(args.candidate, db, suite=args.suite)
    baseline = compare.resolve(args.baseline, db, suite=args.suite, before=candidate)
    keep = lambda rs: [r for r in rs if (not args.tasks or r.get("task") in args.tasks)
                       and (not args.methods or r.get("method") in args.methods)]
    configs = {r.get("config_id") for r in baseline.records + candidate.records}
    past = [r for r in history.records(db, **({"suite": args.suite} if args.suite else {}))
            if r.get("config_id") in configs] if Path(db).is_file() else []
    table = compare.compare(keep(baseline.records), keep(candidate.records), thresholds, args.metrics,
                            alpha=args.alpha, noise=compare.seed_noise(past + baseline.records + candidate.records),
                            gate_reconfigured=args.gate_reconfigured)
    if not (table.verdict.isin(compare.COMPARED | {"reconfigured"})).any():
        message = ("baseline and candidate have no (suite, task, method, budget) with results in common "
                   f"(baseline {baseline.label}; candidate {candidate.label})")
        # Exit 3 ("nothing to compare yet") is for a history too young to hold two comparable grids; past
        # that, finding nothing comparable means the gate is broken, and a nightly job must not swallow it.
        seen = compare.comparable_invocations(db, candidate)
        if seen < 2:
            raise NothingToCompare(message)
        print(f"bench: error: {message}; the history holds {seen} invocations of these configurations, so this "
              f"is not a first run: check the references and filters", file=sys.stderr)
        return 1
    fmt = compare.format_markdown if args.markdown else compare.format_text
    print(fmt(table, baseline, candidate, everything=args.all))
    return compare.exit_code(table)


def cmd_recommend(args) -> int:
    from bench.core.units import name_value, parse_number, parse_percent, parse_size_mb
    from bench.judge import recommend as rec
    from bench.results import history
    if args.results:
        from bench.results.store import ResultStore
        records = [r for folder in args.results for r in ResultStore(folder).records()]
        if not records:
            raise UsageError(f"no results in {', '.join(map(str, args.results))}")
    else:
        records = history.records(args.db or history.default_path(), suite=args.suite)
    constraints = []
    if args.max_memory:
        constraints.append(rec.Constraint(rec.MEMORY, parse_size_mb(args.max_memory), upper=True))
    if args.max_trainable:
        constraints.append(rec.Constraint("trainable_pct", parse_percent(args.max_trainable), upper=True))
    if args.max_forgetting:  # a method without the figure passes: the output names it
        constraints.append(rec.Constraint(rec.FORGETTING, rec.parse_forgetting(args.max_forgetting), upper=True,
                                          missing_ok=True))
    if args.max_overhead:
        constraints.append(rec.Constraint(rec.OVERHEAD, rec.parse_overhead(args.max_overhead), upper=True))
    for item in args.min_metric or []:
        name, value = name_value(item, "--min-metric")
        constraints.append(rec.Constraint(name or rec.HEADLINE, parse_number(value), upper=False))
    tasks = [args.task] if args.task else list(dict.fromkeys(r["task"] for r in records if r.get("suite") == args.suite))
    if not tasks:
        raise UsageError(f"no runs of suite {args.suite!r} in the "
                          f"{'results given' if args.results else 'history ' + str(args.db or history.default_path())}")
    code = 0
    for task in tasks:
        result = rec.recommend(records, args.suite, task, constraints, args.priority, budget=args.budget,
                               model=args.model, device=args.device, since=args.since, commit=args.commit,
                               folders=bool(args.results))
        print(rec.format_result(result, args.priority) + "\n")
        code = code or (0 if result.top else 1)
    return code


def cmd_task_new(args) -> int:
    """A starter task file from a look at the data: says each guess, writes the file, checks it loads and its data
    passes the checks `run` makes, and prints the command to run it (suites/starter.py)."""
    from suites import starter
    starter.new(args.data, out=args.out, name=args.name, model=args.model, force=args.force)
    return 0


def _grid_arguments(p: argparse.ArgumentParser) -> None:
    """What `run` and `tune` share: the grid, where it runs and where its results go."""
    p.add_argument("--suite", help="a suite name (nlp, vision, smoke) or a suite file (default: the suites of --tasks)")
    p.add_argument("--tasks", type=_csv, help="comma-separated task names or task files, e.g. my_tickets.yaml "
                                              "(default: all in the suite)")
    p.add_argument("--tuned-dir", "--tuned-out", dest="tuned_dir", type=Path,
                   help="folder of tuned rates that `tune` writes and `run` reads (default: suites/tuned/, or "
                        "tuned/ beside a task file of your own)")
    p.add_argument("--methods", type=_csv,
                   help="comma-separated method names or method files (default: every method in methods/zoo)")
    p.add_argument("--set", action="append", metavar="METHOD.FIELD=V[,V...]",
                   help="override a method's field (lr, or a peft config key): lora.r=16; several values make "
                          "a sweep, one configuration each (lora[r=4], lora[r=8], ...); repeatable")
    p.add_argument("--seeds", type=_seeds, default=[0], help="comma-separated seeds (default: 0)")
    p.add_argument("--budget", default="quick", help="smoke | quick | full (default: quick)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N (default: auto)")
    p.add_argument("--model", help="model Hub id or local folder (default: the task's)")
    p.add_argument("--precision", default="fp32",
                   help="fp32 (default) | bf16 | fp16: autocast in training and inference (fp16 with a grad scaler)")
    p.add_argument("--tf32", default="off", help="on | off (default): TF32 for CUDA fp32 matmuls and convolutions")
    p.add_argument("--cpu-matmul", default="default",
                   help="default | onednn | auto: the library for CPU fp32 matmuls: torch's default (MKL), oneDNN "
                        "(where it computes in fp32; faster on AMD CPUs, more memory), or oneDNN where 10%% faster")
    p.add_argument("--data-dir", help="local data mirror (default: $BENCH_DATA_DIR, else the Hub)")
    p.add_argument("--model-dir", help="local models folder (default: $BENCH_MODEL_DIR, else packages/Hub)")
    p.add_argument("--out", type=Path, help="results folder (default: runs/<time>-<suite>); an existing one is "
                                               "resumed: runs already ok or skipped there are not run again")
    p.add_argument("--strict", action="store_true", help="exit 1 if any run failed")
    p.add_argument("--verbose", action="store_true", help="show each worker's output instead of logging it")
    p.add_argument("--no-report", action="store_true", help="skip writing report.html and report.md")
    p.add_argument("--resume", action="store_true",
                   help="continue the newest results folder of this suite under runs/ (or --out): skip every "
                          "run whose newest row there is ok or skipped (the default for any existing --out folder)")
    again = p.add_mutually_exclusive_group()
    again.add_argument("--rerun", action="store_true", help="run every run again, even those already ok or skipped")
    again.add_argument("--rerun-failed", action="store_true",
                       help="run again only the runs whose newest row is failed or interrupted")
    p.add_argument("--order", default="random", choices=["random", "fixed"],
                   help="random (default): the runs in a shuffled order, seeded by the invocation id (a resumed "
                        "grid keeps it; each record holds info.order), so drift and --parallel neighbours fall on "
                        "no method more than another; fixed: task, seed, method order")
    p.add_argument("--executor", default="local", help="local (default) or ray")
    p.add_argument("--parallel", type=int, default=1, metavar="N",
                   help="local executor: runs at once on this machine (default 1; with several GPUs, one each)")
    p.add_argument("--address", help="ray: join this cluster (auto, host:port, ray://host:port) instead of starting "
                                       "an embedded instance")
    p.add_argument("--cpus-per-run", type=float, metavar="N",
                   help="ray: cores reserved per run (default: a whole node's cores, or its cores per GPU)")
    p.add_argument("--gpus-per-run", type=float, metavar="N",
                   help="ray: GPUs reserved per run (default: 1 where the cluster has GPUs, else 0)")
    p.add_argument("--timeout", type=float, metavar="SECONDS",
                   help="per run: stop a run still going after SECONDS and record it failed (default: none)")
    p.add_argument("--db", type=Path, help="history database to add every run to (default: $BENCH_HISTORY_DB, "
                                             "else history.db beside the results folder: runs/history.db)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    lst = sub.add_parser("list", help="show suites, tasks and methods")
    lst.add_argument("--tasks", type=_csv, help="also show these task files (comma-separated paths)")
    lst.set_defaults(func=cmd_list)

    run = sub.add_parser("run", help="run a suite: every task x method x seed")
    _grid_arguments(run)
    run.add_argument("--early-stopping", type=int, metavar="PATIENCE",
                     help="score the dev split every --eval-every steps, stop after PATIENCE scores without a gain "
                          "and keep the best state (default: off, so every method trains the same budget)")
    run.add_argument("--eval-every", type=int, metavar="STEPS",
                     help="with --early-stopping: steps between dev scores (default: a tenth of the run)")
    run.add_argument("--lr", action="append", help="learning rate: NUMBER for all methods or METHOD=NUMBER "
                                                   "(default: the task's tuned rate where it was tuned for this "
                                                   "--model and --precision, else the method file's)")
    run.set_defaults(func=cmd_run)

    tune = sub.add_parser("tune", help="choose each method's learning rate on the dev split (one protocol for all)")
    _grid_arguments(tune)
    tune.add_argument("--points", type=int, default=5,
                      help="rates in each method's stage-1 grid (default: 5); then up to 2 past an edge best and "
                           "2 in stage 2, half a grid step either side of each best")
    tune.add_argument("--span", type=float, default=100.0,
                      help="highest / lowest rate of the stage-1 grid, centred on the method file's rate "
                           "(default: 100)")
    tune.set_defaults(func=cmd_tune)

    report = sub.add_parser("report", help="render result folders as one self-contained HTML page (+ Markdown)")
    report.add_argument("results", nargs="*", type=Path,
                        help="result folders (default: the newest under runs/)")
    report.add_argument("--out", type=Path,
                        help="HTML file to write; report.md goes beside it (default: report.html in the "
                             "result folder, or ./report.html for several folders)")
    report.add_argument("--title", default="peft-bench report")
    report.add_argument("--history", type=Path, metavar="DB",
                        help="history database: add a plot of each task's metric over past invocations "
                             "(`bench run` does so with its own database)")
    report.set_defaults(func=cmd_report)

    db_help = "history database (default: $BENCH_HISTORY_DB, else runs/history.db)"
    hist = sub.add_parser("history", help="print a metric's series over time from the history database")
    hist.add_argument("--suite")
    hist.add_argument("--task")
    hist.add_argument("--method")
    hist.add_argument("--metric", help="metric name (default: each task's headline metric)")
    hist.add_argument("--db", type=Path, help=db_help)
    hist.add_argument("--import", dest="import_folders", nargs="+", type=Path, metavar="FOLDER",
                      help="add the runs of results folders to the database instead (idempotent)")
    hist.set_defaults(func=cmd_history)

    cmp = sub.add_parser("compare", help="gate on regressions: exit 0 none, 1 regression (or nothing checked), "
                                         "2 usage error, 3 nothing to compare yet (first night)")
    cmp.add_argument("--baseline", required=True,
                     help="results folder, git commit (prefix), invocation id, latest or previous")
    cmp.add_argument("--candidate", default="latest", help="as --baseline (default: latest)")
    cmp.add_argument("--suite", help="only this suite (also narrows latest/previous)")
    cmp.add_argument("--tasks", type=_csv)
    cmp.add_argument("--methods", type=_csv)
    cmp.add_argument("--metrics", type=_csv, help="metric names, kinds (task, memory, speed, size) or `headline` to "
                                                  "gate on (default: headline, peak_train_mb, "
                                                  "cuda_peak_train_allocated_mb, adapter_tensor_mb, train_examples_per_s)")
    cmp.add_argument("--threshold", action="append", metavar="NAME=VALUE",
                     help="per metric or kind: absolute for task metrics (accuracy=0.02), relative for the others "
                          "(peak_train_mb=0.2, speed=50%%); repeatable")
    cmp.add_argument("--alpha", type=float, default=0.01,
                     help="family-wise error rate of the whole comparison, Holm's correction (default: 0.01)")
    cmp.add_argument("--gate-reconfigured", action="store_true",
                     help="also gate configurations whose config id changed (default: report them, ungated)")
    cmp.add_argument("--all", action="store_true", help="print every comparison, the unchanged ones too")
    cmp.add_argument("--markdown", action="store_true", help="GitHub-flavoured Markdown (CI job summary)")
    cmp.add_argument("--db", type=Path, help=db_help)
    cmp.set_defaults(func=cmd_compare)

    recm = sub.add_parser("recommend", help="rank methods under constraints, from the history or a results folder")
    recm.add_argument("--suite", required=True)
    recm.add_argument("--task", help="one task (default: each task of the suite with runs)")
    recm.add_argument("--max-memory", metavar="SIZE", help="peak memory bound, e.g. 2GB or 800MB")
    recm.add_argument("--max-trainable", metavar="PCT", help="trainable share bound, e.g. 1%%")
    recm.add_argument("--max-forgetting", metavar="NATS",
                      help="causal-LM tasks: bound on forgetting (general-text loss after minus before training, "
                           "nats per token), e.g. 0.05; methods without the figure are kept (the output says which)")
    recm.add_argument("--max-overhead", metavar="PCT",
                      help="causal-LM tasks: bound on the unmerged adapter's generation overhead over the base "
                           "model, the worse of TTFT and TPOT, e.g. 10%%; no figure (full, zero-shot) counts as 0")
    recm.add_argument("--min-metric", action="append", metavar="[NAME=]VALUE",
                      help="lower bound on the task metric (0.8 or 80%%) or on a named metric; repeatable")
    recm.add_argument("--priority", default="metric",
                      help="metric | memory | speed | size (default: metric; adapter size breaks ties only with size)")
    recm.add_argument("--budget", help="budget to rank (default: the newest run's)")
    recm.add_argument("--model", help="model to rank (default: the newest run's)")
    recm.add_argument("--device", help="device to rank (default: the newest run's)")
    recm.add_argument("--since", metavar="DATE", help="rank every run finished since DATE (ISO, e.g. 2026-11-01) "
                                                      "instead of the newest invocation's")
    recm.add_argument("--commit", help="rank the runs of this git commit (prefix) instead of the newest invocation's")
    recm.add_argument("--results", nargs="+", type=Path, metavar="FOLDER", help="results folders instead of the history")
    recm.add_argument("--db", type=Path, help=db_help)
    recm.set_defaults(func=cmd_recommend)

    task = sub.add_parser("task", help="task files: `task new` writes one for your data")
    task_sub = task.add_subparsers(dest="task_command", required=True)
    task_new = task_sub.add_parser("new", help="look at a data file, folder or Hub dataset, guess the kind and "
                                               "columns, and write a task file to edit and run")
    task_new.add_argument("--data", required=True, metavar="PATH_OR_HUB_ID",
                          help="a training file (CSV, TSV, JSON/JSONL, Parquet; its test/validation sibling is found "
                               "beside it), a folder of split files or of images (train/ and test/, one subfolder "
                               "per class), or a Hub dataset id")
    task_new.add_argument("--out", help="task file to write (default: <name>.yaml beside the data; for a Hub id, in "
                                        "the working folder)")
    task_new.add_argument("--name", help="the task's name (default: the data file's or folder's name)")
    task_new.add_argument("--model", help="the task's model, a Hub id or a folder (default: MiniLM for text and "
                                          "tokens, MobileNetV2 for images)")
    task_new.add_argument("--force", action="store_true", help="overwrite an existing task file")
    task_new.set_defaults(func=cmd_task_new)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(argv)
    args.argv = argv
    try:
        return args.func(args)
    except UsageError as exc:
        print(f"bench: error: {exc}", file=sys.stderr)
        return 2
    except NothingToCompare as exc:
        print(f"bench: nothing to compare yet: {exc}", file=sys.stderr)
        return 3
    except (StorageFull, DataError) as exc:  # DataError: e.g. a damaged history database, named with what to do
        print(f"bench: error: {exc}", file=sys.stderr)
        return 1
