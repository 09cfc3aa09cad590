"""Command line: `python -m bench {list,run}`. Bad names exit 2 with a one-line message."""
from __future__ import annotations

import argparse
import shlex
import sys
import time
from pathlib import Path

from bench import resolve
from bench.errors import StorageFull, UnknownName

DEFAULT_OUT = Path("runs")


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
            raise UnknownName(f"unknown {what} {name!r} (valid: {', '.join(valid)})")
    return requested


def _lrs(values: list[str] | None) -> dict[str, float]:
    """--lr 1e-3 (every method) or --lr lora=1e-3 (one method); repeatable."""
    out = {}
    for item in values or []:
        name, _, value = item.rpartition("=")
        try:
            out[name or "*"] = float(value)
        except ValueError:
            raise UnknownName(f"bad --lr {item!r} (expected a number or METHOD=NUMBER)")
    return out


def cmd_list(args) -> int:
    from methods import METHODS
    from suites import SUITES
    print("suites and tasks:")
    for suite, tasks in SUITES.items():
        for t in tasks:
            print(f"  {suite:8s} {t.name:12s} metric={t.metric:10s} model={t.default_model}  budgets={','.join(t.budgets)}")
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
    return 0


def cmd_run(args) -> int:
    import methods
    from suites import BUDGETS, get_suite

    tasks = get_suite(args.suite)
    task_names = _pick(args.tasks, [t.name for t in tasks], f"task in suite {args.suite}")
    method_specs = methods.resolve(args.methods or list(methods.METHODS), args.set)
    method_names = [m.label for m in method_specs]
    if args.budget not in BUDGETS:
        raise UnknownName(f"unknown budget {args.budget!r} (valid: {', '.join(BUDGETS)})")
    if args.timeout is not None and args.timeout <= 0:
        raise UnknownName(f"bad --timeout {args.timeout:g} (expected a number of seconds > 0)")
    executor = make_executor(args)
    # Names are valid: only now the heavier imports (pandas; torch in the workers).
    from bench.runner import new_invocation_id, plan, run_grid, warm_up
    from bench.store import ResultStore, latest_folder, latest_runs
    from reports.tables import format_summary, summary, write_tables
    lrs = _lrs(args.lr)
    for name in lrs:
        if name != "*":
            _pick([name], list(dict.fromkeys([m.name for m in method_specs] + method_names)), "method in --lr")
    out = args.out
    if out is None and args.resume:
        out = latest_folder(DEFAULT_OUT, args.suite)
        if out is None:
            raise UnknownName(f"--resume: no results folder of suite {args.suite!r} under {str(DEFAULT_OUT)!r} "
                              f"(pass --out FOLDER)")
    earlier = [r for r in latest_runs(ResultStore(out).records()) if r.get("suite") == args.suite] if out else []
    # A folder is one invocation: resuming it keeps its id, so history and `bench compare` see one grid.
    invocation = earlier[-1]["invocation"] if earlier and earlier[-1].get("invocation") else new_invocation_id()
    out = Path(out or DEFAULT_OUT / f"{invocation}-{args.suite}")
    data_dir, model_dir = resolve.data_dir(args.data_dir), resolve.model_dir(args.model_dir)
    runs = [configure(task, m, lrs, args, data_dir, model_dir) for task in tasks if task.name in task_names
            for m in method_specs]
    specs = plan(runs, args.seeds, invocation)
    mode = "rerun" if args.rerun else "rerun-failed" if args.rerun_failed else "resume"
    todo, skipped = select_runs(specs, earlier, mode)
    if todo:
        warm_up()  # a fork server (if used) imports the worker's libraries while this process gets ready
    metric_of = {t.name: t.metric for t in tasks}

    def describe(r: dict) -> str:
        m = r["metrics"]
        head = f"{r['task']:10s} {r['method']:10s} seed {r['seed']}: {r['status']}"
        if r["status"] != "ok":
            return f"{head} - {r['error']}"
        metric = metric_of[r["task"]]
        return (f"{head}  {metric}={m.get(metric, float('nan')):.4f}  trainable={m['trainable_pct']:.3g}%  "
                f"peak={m['peak_rss_mb']:.0f}MB  {m.get('train_examples_per_s', float('nan')):.1f} ex/s  "
                f"({m['wall_time_s']:.0f}s)")

    print(f"bench: {len(specs)} runs ({args.suite}: {', '.join(task_names)} x {', '.join(method_names)} x seeds "
          f"{','.join(map(str, args.seeds))}), budget {args.budget}, results in {out}"
          + (f"; {_skip_line(skipped, mode)}; {len(todo)} to run" if skipped else ""), file=sys.stderr)
    t0 = time.perf_counter()
    from bench import history
    db = args.db or history.default_path(out)
    outcome = run_grid(todo, out, verbose=args.verbose, describe=describe, history_db=db, timeout=args.timeout,
                       executor=executor)
    wall = time.perf_counter() - t0
    all_records = latest_runs(ResultStore(out).records(warn=False))  # the folder may hold earlier runs too
    paths = write_tables(all_records, out)
    report_failed = False
    if not args.no_report:
        from reports.html import write_report
        try:
            paths.update(write_report(all_records, out / "report.html", [out], history_db=db))
        except Exception as e:  # the runs are stored already: say so instead of ending on a traceback
            report_failed = True
            print(f"bench: the report could not be written ({type(e).__name__}: {e}); the results are safe in "
                  f"{out}; retry with `python -m bench report {out}`", file=sys.stderr)
    planned = {(s["config_id"], s["seed"]) for s in specs}
    from bench.identity import run_key
    print(format_summary(summary([r for r in all_records if run_key(r) in planned], metric_of)))
    print(f"\nwall time {wall:.0f} s; tables: {', '.join(str(p) for p in paths.values())}; history: {db}")
    if outcome.interrupted:
        print(f"bench: interrupted ({outcome.interrupted}) after {len(outcome.records)} of {len(todo)} runs; "
              f"tables and report hold every finished run; resume with: {_resume_command(args, out)}",
              file=sys.stderr)
        return 130
    failed = [r for r in outcome.records if r["status"] == "failed"]
    if outcome.records and not any(r["status"] == "ok" for r in outcome.records):
        print(f"bench: no run succeeded ({len(outcome.records)} run(s): {len(failed)} failed, "
              f"{len(outcome.records) - len(failed)} skipped); see {out}/logs", file=sys.stderr)
        return 1
    return 1 if report_failed or (failed and args.strict) else 0


def make_executor(args):
    """Where the runs execute: this machine (`--parallel N` at a time) or a Ray cluster (`--executor ray`)."""
    if args.executor not in ("local", "ray"):
        raise UnknownName(f"unknown executor {args.executor!r} (valid: local, ray)")
    if args.executor == "local":
        stray = [f for f, v in (("--address", args.address), ("--cpus-per-run", args.cpus_per_run),
                                ("--gpus-per-run", args.gpus_per_run)) if v is not None]
        if stray:
            raise UnknownName(f"{', '.join(stray)} need --executor ray (valid with local: --parallel)")
        if args.parallel < 1:
            raise UnknownName(f"bad --parallel {args.parallel} (expected a number of runs >= 1)")
        gpus = 0
        if args.parallel > 1 and args.device != "cpu":
            import torch
            gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
        from bench.runner import LocalExecutor
        return LocalExecutor(args.parallel, gpus)
    if args.parallel != 1:
        raise UnknownName("--parallel is for --executor local; with ray use --cpus-per-run/--gpus-per-run")
    from bench.ray_executor import RayExecutor
    return RayExecutor(args.address, args.cpus_per_run, args.gpus_per_run)


def configure(task, method, lrs: dict, args, data_dir: Path | None, model_dir: Path | None) -> dict:
    """One (task, method) configuration: its settings, where its learning rate came from, its config id."""
    import dataclasses

    from bench.identity import config_id, run_config
    if method.label in lrs or method.name in lrs or "*" in lrs:
        lr, source = lrs.get(method.label, lrs.get(method.name, lrs.get("*"))), "override"
    elif "lr" in method.overrides:
        lr, source = method.lr, "set"
    elif method.name in task.lr_overrides:
        lr, source = task.lr_overrides[method.name], "task"
    else:
        lr, source = method.lr, "default"
    config = run_config(task, method, lr, args.budget, args.model, model_dir, data_dir, args.device)
    return dict(suite=task.suite, task=task.name, method=method.label, method_spec=dataclasses.asdict(method),
                lr=lr, lr_source=source, budget=args.budget, model=args.model, device=args.device,
                default_model=task.default_model, data_dir=str(data_dir) if data_dir else None,
                model_dir=str(model_dir) if model_dir else None, config=config, config_id=config_id(config))


def select_runs(specs: list[dict], earlier: list[dict], mode: str) -> tuple[list[dict], dict[str, int]]:
    """Which planned runs to run, given the newest earlier record of each run in the folder.

    resume (the default): all but those with an `ok` record; rerun: all; rerun-failed: only those whose
    newest record is `failed` or `interrupted`. Returns (to run, {reason: count} of those not run)."""
    from bench.identity import run_key
    newest = {run_key(r): r for r in earlier}
    todo, skipped = [], {}
    for spec in specs:
        status = (newest.get((spec["config_id"], spec["seed"])) or {}).get("status")
        run = {"rerun": True, "resume": status != "ok",
               "rerun-failed": status in ("failed", "interrupted")}[mode]
        if run:
            todo.append(spec)
        else:
            reason = f"already {status}" if status else "never run"
            skipped[reason] = skipped.get(reason, 0) + 1
    return todo, skipped


def _skip_line(skipped: dict[str, int], mode: str) -> str:
    hint = "--rerun-failed reruns only failed/interrupted runs" if mode == "rerun-failed" else \
        "--rerun runs them again"
    return f"{sum(skipped.values())} skipped ({', '.join(f'{n} {why}' for why, n in skipped.items())}; {hint})"


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
    from reports.html import latest_results, load_records, write_report
    records, folders = load_records(args.results or [latest_results(DEFAULT_OUT)])
    out = args.out or (folders[0] / "report.html" if len(folders) == 1 else Path("report.html"))
    if args.history is not None and not args.history.is_file():
        raise UnknownName(f"no history database at {str(args.history)!r} (`bench run` writes one; see --db)")
    paths = write_report(records, out, folders, title=args.title, history_db=args.history)
    print(f"report: {paths['html']} ({paths['html'].stat().st_size / 1e6:.2f} MB, {len(records)} runs); "
          f"markdown: {paths['markdown']}")
    return 0


def cmd_history(args) -> int:
    from bench import history
    db = args.db or history.default_path()
    if args.import_folders:
        for folder in args.import_folders:
            print(f"imported {history.import_folder(db, folder)} runs from {folder} into {db}")
        return 0
    metric = args.metric
    if metric is None:  # each task's headline metric
        from suites import SUITES
        metric = sorted({t.metric for suite, ts in SUITES.items() if args.suite in (None, suite) for t in ts})
    frame = history.trends(db, suite=args.suite, task=args.task, method=args.method, metric=metric)
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
    from bench import compare, history
    db = args.db or history.default_path()
    thresholds = compare.parse_thresholds(args.threshold, k=args.k)
    candidate = compare.resolve(args.candidate, db, suite=args.suite)
    baseline = compare.resolve(args.baseline, db, suite=args.suite, before=candidate)
    keep = lambda rs: [r for r in rs if (not args.tasks or r.get("task") in args.tasks)
                       and (not args.methods or r.get("method") in args.methods)]
    table = compare.compare(keep(baseline.records), keep(candidate.records), thresholds, args.metrics)
    if not (table.verdict.isin(["regressed", "improved", "unchanged", "ungated", "failed", "vanished",
                                "reconfigured"])).any():
        message = ("baseline and candidate have no (suite, task, method, budget) with results in common "
                   f"(baseline {baseline.label}; candidate {candidate.label})")
        # Exit 2 ("nothing to compare yet") is for a history too young to hold two comparable grids; past
        # that, finding nothing comparable means the gate is broken, and a nightly job must not swallow it.
        seen = compare.comparable_invocations(db, candidate)
        if seen < 2:
            raise UnknownName(message)
        print(f"bench: error: {message}; the history holds {seen} invocations of these configurations, so this "
              f"is not a first run: check the references and filters", file=sys.stderr)
        return 1
    fmt = compare.format_markdown if args.markdown else compare.format_text
    print(fmt(table, baseline, candidate))
    return 1 if len(compare.regressions(table)) else 0


def cmd_recommend(args) -> int:
    from bench import history, recommend as rec
    from bench.units import name_value, parse_number, parse_percent, parse_size_mb
    if args.results:
        from bench.store import ResultStore
        records = [r for folder in args.results for r in ResultStore(folder).records()]
        if not records:
            raise UnknownName(f"no results in {', '.join(map(str, args.results))}")
    else:
        records = history.records(args.db or history.default_path(), suite=args.suite)
    constraints = []
    if args.max_memory:
        constraints.append(rec.Constraint(rec.MEMORY, parse_size_mb(args.max_memory), upper=True))
    if args.max_trainable:
        constraints.append(rec.Constraint("trainable_pct", parse_percent(args.max_trainable), upper=True))
    for item in args.min_metric or []:
        name, value = name_value(item, "--min-metric")
        constraints.append(rec.Constraint(name or rec.HEADLINE, parse_number(value), upper=False))
    tasks = [args.task] if args.task else list(dict.fromkeys(r["task"] for r in records if r.get("suite") == args.suite))
    if not tasks:
        raise UnknownName(f"no runs of suite {args.suite!r} in the "
                          f"{'results given' if args.results else 'history ' + str(args.db or history.default_path())}")
    code = 0
    for task in tasks:
        result = rec.recommend(records, args.suite, task, constraints, args.priority, budget=args.budget,
                               model=args.model, device=args.device)
        print(rec.format_result(result, args.priority) + "\n")
        code = code or (0 if result.top else 1)
    return code


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="show suites, tasks and methods").set_defaults(func=cmd_list)

    run = sub.add_parser("run", help="run a suite: every task x method x seed")
    run.add_argument("--suite", required=True)
    run.add_argument("--tasks", type=_csv, help="comma-separated task names (default: all in the suite)")
    run.add_argument("--methods", type=_csv,
                     help="comma-separated method names or method files (default: every method in methods/zoo)")
    run.add_argument("--set", action="append", metavar="METHOD.FIELD=V[,V...]",
                     help="override a method's field (lr, or a peft config key): lora.r=16; several values make "
                          "a sweep, one configuration each (lora[r=4], lora[r=8], ...); repeatable")
    run.add_argument("--seeds", type=_seeds, default=[0], help="comma-separated seeds (default: 0)")
    run.add_argument("--budget", default="quick", help="smoke | quick | full (default: quick)")
    run.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N (default: auto)")
    run.add_argument("--model", help="model Hub id or local folder (default: the task's)")
    run.add_argument("--lr", action="append", help="learning rate: NUMBER for all methods or METHOD=NUMBER")
    run.add_argument("--data-dir", help="local data mirror (default: $BENCH_DATA_DIR, else the Hub)")
    run.add_argument("--model-dir", help="local models folder (default: $BENCH_MODEL_DIR, else packages/Hub)")
    run.add_argument("--out", type=Path, help="results folder (default: runs/<time>-<suite>); an existing one is "
                                                   "resumed: runs already ok there are skipped")
    run.add_argument("--strict", action="store_true", help="exit 1 if any run failed")
    run.add_argument("--verbose", action="store_true", help="show each worker's output instead of logging it")
    run.add_argument("--no-report", action="store_true", help="skip writing report.html and report.md")
    run.add_argument("--resume", action="store_true",
                     help="continue the newest results folder of this suite under runs/ (or --out): skip every "
                          "run that already has an ok row there (the default for any existing --out folder)")
    again = run.add_mutually_exclusive_group()
    again.add_argument("--rerun", action="store_true", help="run every run again, even those already ok")
    again.add_argument("--rerun-failed", action="store_true",
                       help="run again only the runs whose newest row is failed or interrupted")
    run.add_argument("--executor", default="local", help="local (default) or ray")
    run.add_argument("--parallel", type=int, default=1, metavar="N",
                     help="local executor: runs at once on this machine (default 1; with several GPUs, one each)")
    run.add_argument("--address", help="ray: join this cluster (auto, host:port, ray://host:port) instead of starting "
                                       "an embedded instance")
    run.add_argument("--cpus-per-run", type=float, metavar="N",
                     help="ray: cores reserved per run (default: a whole node's cores, or its cores per GPU)")
    run.add_argument("--gpus-per-run", type=float, metavar="N",
                     help="ray: GPUs reserved per run (default: 1 where the cluster has GPUs, else 0)")
    run.add_argument("--timeout", type=float, metavar="SECONDS",
                     help="per run: stop a run still going after SECONDS and record it failed (default: none)")
    run.add_argument("--db", type=Path, help="history database to add every run to (default: $BENCH_HISTORY_DB, "
                                             "else history.db beside the results folder: runs/history.db)")
    run.set_defaults(func=cmd_run)

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

    cmp = sub.add_parser("compare", help="gate on regressions: exit 0 none, 1 regression, 2 usage error")
    cmp.add_argument("--baseline", required=True,
                     help="results folder, git commit (prefix), invocation id, latest or previous")
    cmp.add_argument("--candidate", default="latest", help="as --baseline (default: latest)")
    cmp.add_argument("--suite", help="only this suite (also narrows latest/previous)")
    cmp.add_argument("--tasks", type=_csv)
    cmp.add_argument("--methods", type=_csv)
    cmp.add_argument("--metrics", type=_csv, help="metric names or kinds (task, memory, speed, size) to gate on "
                                                  "(default: every metric with a direction)")
    cmp.add_argument("--threshold", action="append", metavar="NAME=VALUE",
                     help="per metric or kind: absolute for task metrics (accuracy=0.02), relative for the others "
                          "(peak_rss_mb=0.2, speed=50%%); repeatable")
    cmp.add_argument("--k", type=float, default=2.0, help="noise multiplier on the seed std (default: 2)")
    cmp.add_argument("--markdown", action="store_true", help="GitHub-flavoured Markdown (CI job summary)")
    cmp.add_argument("--db", type=Path, help=db_help)
    cmp.set_defaults(func=cmd_compare)

    recm = sub.add_parser("recommend", help="rank methods under constraints, from the history or a results folder")
    recm.add_argument("--suite", required=True)
    recm.add_argument("--task", help="one task (default: each task of the suite with runs)")
    recm.add_argument("--max-memory", metavar="SIZE", help="peak memory bound, e.g. 2GB or 800MB")
    recm.add_argument("--max-trainable", metavar="PCT", help="trainable share bound, e.g. 1%%")
    recm.add_argument("--min-metric", action="append", metavar="[NAME=]VALUE",
                      help="lower bound on the task metric (0.8 or 80%%) or on a named metric; repeatable")
    recm.add_argument("--priority", default="metric", help="metric | memory | speed (default: metric)")
    recm.add_argument("--budget", help="budget to rank (default: the newest run's)")
    recm.add_argument("--model", help="model to rank (default: the newest run's)")
    recm.add_argument("--device", help="device to rank (default: the newest run's)")
    recm.add_argument("--results", nargs="+", type=Path, metavar="FOLDER", help="results folders instead of the history")
    recm.add_argument("--db", type=Path, help=db_help)
    recm.set_defaults(func=cmd_recommend)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(argv)
    args.argv = argv
    try:
        return args.func(args)
    except UnknownName as exc:
        print(f"bench: error: {exc}", file=sys.stderr)
        return 2
    except StorageFull as exc:
        print(f"bench: error: {exc}", file=sys.stderr)
        return 1
