"""Command line: `python -m bench {list,run}`. Bad names exit 2 with a one-line message."""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from bench import resolve
from bench.errors import UnknownName
from bench.runner import new_invocation_id, plan, run_grid

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
    print("methods:")
    for m in METHODS.values():
        print(f"  {m.name:10s} lr={m.default_lr:<8g} {m.description}")
    return 0


def cmd_run(args) -> int:
    from methods import METHODS
    from reports.tables import format_summary, summary, write_tables
    from suites import BUDGETS, get_suite

    tasks = get_suite(args.suite)
    task_names = _pick(args.tasks, [t.name for t in tasks], f"task in suite {args.suite}")
    method_names = _pick(args.methods, list(METHODS), "method")
    if args.budget not in BUDGETS:
        raise UnknownName(f"unknown budget {args.budget!r} (valid: {', '.join(BUDGETS)})")
    lrs = _lrs(args.lr)
    for name in lrs:
        if name != "*":
            _pick([name], list(METHODS), "method in --lr")
    invocation = new_invocation_id()
    out = args.out or DEFAULT_OUT / f"{invocation}-{args.suite}"
    data_dir, model_dir = resolve.data_dir(args.data_dir), resolve.model_dir(args.model_dir)
    specs = plan(args.suite, task_names, method_names, args.seeds, invocation=invocation, budget=args.budget,
                 model=args.model, device=args.device, data_dir=str(data_dir) if data_dir else None,
                 model_dir=str(model_dir) if model_dir else None)
    for spec in specs:
        spec["lr"] = lrs.get(spec["method"], lrs.get("*"))
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
          f"{','.join(map(str, args.seeds))}), budget {args.budget}, results in {out}", file=sys.stderr)
    t0 = time.perf_counter()
    records = run_grid(specs, Path(out), verbose=args.verbose, describe=describe)
    wall = time.perf_counter() - t0
    from bench.store import ResultStore
    all_records = ResultStore(out).records()  # the folder may hold earlier runs too
    paths = write_tables(all_records, Path(out))
    print(format_summary(summary(records, metric_of)))
    print(f"\nwall time {wall:.0f} s; tables: {', '.join(str(p) for p in paths.values())}")
    failed = [r for r in records if r["status"] == "failed"]
    return 1 if failed and args.strict else 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="show suites, tasks and methods").set_defaults(func=cmd_list)

    run = sub.add_parser("run", help="run a suite: every task x method x seed")
    run.add_argument("--suite", required=True)
    run.add_argument("--tasks", type=_csv, help="comma-separated task names (default: all in the suite)")
    run.add_argument("--methods", type=_csv, help="comma-separated method names (default: all)")
    run.add_argument("--seeds", type=_seeds, default=[0], help="comma-separated seeds (default: 0)")
    run.add_argument("--budget", default="quick", help="smoke | quick | full (default: quick)")
    run.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N (default: auto)")
    run.add_argument("--model", help="model Hub id or local folder (default: the task's)")
    run.add_argument("--lr", action="append", help="learning rate: NUMBER for all methods or METHOD=NUMBER")
    run.add_argument("--data-dir", help="local data mirror (default: $BENCH_DATA_DIR, else the Hub)")
    run.add_argument("--model-dir", help="local models folder (default: $BENCH_MODEL_DIR, else packages/Hub)")
    run.add_argument("--out", type=Path, help="results folder (default: runs/<time>-<suite>)")
    run.add_argument("--strict", action="store_true", help="exit 1 if any run failed")
    run.add_argument("--verbose", action="store_true", help="show each worker's output instead of logging it")
    run.set_defaults(func=cmd_run)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except UnknownName as exc:
        print(f"bench: error: {exc}", file=sys.stderr)
        return 2
