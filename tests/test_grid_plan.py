"""Planning a grid in a results folder: the run order, what a resumed folder still lacks, one grid per folder."""
import json
import os
import subprocess
import sys
import textwrap

import pytest
from conftest import REPO, run_bench

from bench.execute import plan
from bench.results.store import ResultStore

SEEDS = [0, 1]


def _runs(methods=("head", "lora", "bitfit", "ia3", "dora", "vera")):
    return [dict(suite="smoke", task=task, method=m, config_id=f"{task}-{m}") for task in ("sentiment", "ner")
            for m in methods]


def _order(grid) -> list[tuple]:
    return [(s["task"], s["method"], s["seed"]) for s in grid.specs]


def test_runs_go_in_a_seeded_random_order_that_a_resumed_grid_keeps(tmp_path):
    fixed = plan.plan_grid(_runs(), SEEDS, "inv-a", tmp_path, [], order="fixed")
    assert _order(fixed) == [(t, m, s) for t in ("sentiment", "ner") for s in SEEDS
                             for m in ("head", "lora", "bitfit", "ia3", "dora", "vera")]
    shuffled = plan.plan_grid(_runs(), SEEDS, "inv-a", tmp_path, [])  # random is the default
    assert sorted(_order(shuffled)) == sorted(_order(fixed)) and _order(shuffled) != _order(fixed)
    again = plan.plan_grid(_runs(), SEEDS, "inv-a", tmp_path, [])  # a resumed grid keeps its invocation id
    assert _order(again) == _order(shuffled)
    assert _order(plan.plan_grid(_runs(), SEEDS, "inv-b", tmp_path, [])) != _order(shuffled)
    seed = shuffled.specs[0]["order"]["seed"]
    planned = {(s["config_id"], s["seed"]): i for i, s in enumerate(fixed.specs)}
    assert [s["order"] for s in shuffled.specs] == [
        {"mode": "random", "seed": seed, "position": i, "planned": planned[s["config_id"], s["seed"]]}
        for i, s in enumerate(shuffled.specs)]
    assert [s["order"] for s in fixed.specs] == [{"mode": "fixed", "seed": None, "position": i, "planned": i}
                                                 for i in range(len(fixed.specs))]
    with pytest.raises(plan.UsageError, match="--order"):
        plan.plan_grid(_runs(), SEEDS, "inv-a", tmp_path, [], order="sorted")


def test_tables_and_reports_see_the_records_in_the_fixed_order_whatever_order_they_ran_in(tmp_path):
    fixed = plan.plan_grid(_runs(), SEEDS, "inv-a", tmp_path, [], order="fixed")
    shuffled = plan.plan_grid(_runs(), SEEDS, "inv-a", tmp_path, [])
    records = [{**{k: s[k] for k in ("task", "method", "seed", "config_id", "invocation")}, "info": {"order": s["order"]}}
               for s in shuffled.specs]
    assert [(r["task"], r["method"], r["seed"]) for r in plan.in_plan_order(records)] == _order(fixed)


def test_a_skip_decided_for_the_same_configuration_is_done():
    specs = [dict(config_id=c, seed=0) for c in ("a", "b", "c", "d")]
    earlier = [dict(config_id="a", seed=0, status="ok"), dict(config_id="b", seed=0, status="skipped"),
               dict(config_id="c", seed=0, status="failed")]
    todo, skipped = plan.select_runs(specs, earlier, "resume")
    assert [s["config_id"] for s in todo] == ["c", "d"]
    assert skipped == {"already ok": 1, "already skipped": 1}
    assert [s["config_id"] for s in plan.select_runs(specs, earlier, "rerun")[0]] == ["a", "b", "c", "d"]
    assert [s["config_id"] for s in plan.select_runs(specs, earlier, "rerun-failed")[0]] == ["c"]


def test_resuming_a_complete_folder_runs_and_appends_nothing_even_its_skipped_runs(tmp_path):
    # fourierft and vera apply to transformers only: on the images task (a CNN) both are `skipped`
    args = ["run", "--suite", "smoke", "--tasks", "images", "--methods", "head,fourierft,vera", "--budget", "smoke",
            "--no-report", "--out", str(tmp_path)]
    run_bench(*args, check=True)
    first = ResultStore(tmp_path).records()
    assert sorted(r["status"] for r in first) == ["ok", "skipped", "skipped"]
    assert sorted(r["info"]["order"]["position"] for r in first) == [0, 1, 2]  # each record: its place in the order
    proc = run_bench(*args, check=True)
    assert "3 skipped (1 already ok, 2 already skipped" in proc.stderr and "0 to run" in proc.stderr, proc.stderr
    assert len(ResultStore(tmp_path).records()) == 3
    proc = run_bench(*args, "--rerun", check=True)  # --rerun still runs everything
    assert len(ResultStore(tmp_path).records()) == 6


HOLDER = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from bench.execute.plan import GridLock
    with GridLock(Path(sys.argv[1]), "20270101-000000-abcdef"):
        print("held", flush=True)
        time.sleep(600)
""")


def test_a_second_grid_into_a_folder_a_grid_holds_refuses_at_once_naming_it(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(tmp_path)], cwd=REPO, stdout=subprocess.PIPE,
                              text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        proc = run_bench("run", "--suite", "smoke", "--tasks", "sentiment", "--methods", "head", "--budget", "smoke",
                         "--no-report", "--out", str(tmp_path))
        assert proc.returncode == 2, proc.stderr
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and "20270101-000000-abcdef" in lines[0] and f"pid {holder.pid}" in lines[0], lines
        assert not ResultStore(tmp_path).records()  # nothing ran
    finally:
        holder.kill()
        holder.wait()


def test_the_lock_of_a_dead_grid_does_not_block(tmp_path):
    (tmp_path / plan.LOCK_FILE).write_text(json.dumps({"invocation": "gone", "pid": 999999999,
                                                       "started_at": "2027-01-01T00:00:00"}))
    with plan.GridLock(tmp_path, "mine"):
        held = json.loads((tmp_path / plan.LOCK_FILE).read_text())
        assert held["invocation"] == "mine" and held["pid"] == os.getpid()
        with pytest.raises(plan.UsageError, match="mine"):  # and a second holder is refused, even in one process
            with plan.GridLock(tmp_path, "other"):
                pass
    with plan.GridLock(tmp_path, "next"):  # released at the end of the grid
        pass


def test_a_cpu_run_given_a_share_of_the_cores_is_another_configuration(monkeypatch):
    """CPU kernels sum in an order that follows the thread count (CIFAR-10 full: 0.841 at 1 thread, 0.830 at 2,
    once under one id): `--parallel 2` runs are not the same runs as `--parallel 1` ones, whose ids are unchanged."""
    import methods
    from bench.execute.ray_executor import RayExecutor
    from bench.execute.runner import LocalExecutor
    from suites import get_suite
    monkeypatch.setattr(os, "cpu_count", lambda: 4)
    assert LocalExecutor(1).cpu_threads() is None
    assert LocalExecutor(2).cpu_threads() == 2 and LocalExecutor(4).cpu_threads() == 1
    assert LocalExecutor(2, gpus=2).cpu_threads() is None  # GPU runs: their numerics are the GPU's
    ray = RayExecutor.__new__(RayExecutor)  # no cluster needed to read its reservation
    ray.cpus_per_run, ray.gpus_per_run = 1, None
    assert ray.cpu_threads() == 1
    ray.cpus_per_run = None
    assert ray.cpu_threads() is None
    task = next(t for t in get_suite("smoke") if t.name == "sentiment")
    lora = methods.resolve(["lora"], None)[0]
    whole = plan.configure(task, lora, plan.GridSettings(budget="smoke"))
    shared = plan.configure(task, lora, plan.GridSettings(budget="smoke", cpu_threads=2))
    assert "cpu_threads" not in whole["config"] and shared["config"]["cpu_threads"] == 2
    assert whole["config_id"] != shared["config_id"]
