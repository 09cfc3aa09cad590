"""The real CLI on the smoke suite: every method, the tables, failures kept as rows, bad names."""
import json

import pandas as pd
import pytest

from conftest import run_bench

METHODS = ["full", "head", "bitfit", "lora", "adalora", "int8-lora"]


@pytest.fixture()
def smoke_run(smoke_grid):
    return smoke_grid


def test_every_method_completes_with_measurements(smoke_run):
    out, proc = smoke_run
    wide = pd.read_parquet(out / "results_wide.parquet")
    assert sorted(wide.method) == sorted(METHODS)
    assert (wide.status == "ok").all(), wide[["method", "status", "error"]]
    for col in ["accuracy", "trainable_params", "total_params", "trainable_pct", "head_params", "peak_rss_mb",
                "peak_rss_increase_mb", "train_examples_per_s", "train_tokens_per_s", "latency_p50_ms",
                "latency_p95_ms", "eval_examples_per_s", "adapter_size_mb", "wall_time_s", "train_loss"]:
        assert wide[col].notna().all(), col
    assert wide.accuracy.between(0, 1).all()
    by = wide.set_index("method")
    assert by.loc["full", "trainable_pct"] == pytest.approx(100)
    for m in ["head", "bitfit", "lora"]:
        assert by.loc[m, "trainable_params"] < by.loc["full", "trainable_params"] / 5
    # The printed summary has a row per method.
    for m in METHODS:
        assert m in proc.stdout


def test_peft_counts_and_adalora_reallocation_are_recorded(smoke_run):
    out, _ = smoke_run
    wide = pd.read_csv(out / "results_wide.csv").set_index("method")
    for m in ["lora", "adalora", "int8-lora"]:
        assert wide.loc[m, "trainable_params"] == wide.loc[m, "peft_trainable_params"]
    assert wide.loc["adalora", "ranks_reallocated"] == 1
    assert wide.loc["adalora", "adalora_rank_final"] < wide.loc["adalora", "adalora_rank_initial"]
    # AdaLoRA's optimised loss includes its orthogonality regulariser; the task loss is logged apart.
    assert abs(wide.loc["adalora", "train_loss"] - wide.loc["adalora", "train_task_loss"]) > 1e-6
    assert wide.loc["lora", "train_loss"] == pytest.approx(wide.loc["lora", "train_task_loss"], rel=1e-5)
    assert wide.loc["int8-lora", "base_int8_mb"] > 0


def test_long_table_has_units_and_records_hold_env(smoke_run):
    out, _ = smoke_run
    long = pd.read_csv(out / "results_long.csv")
    assert set(long.columns) >= {"suite", "task", "method", "seed", "metric", "value", "unit"}
    assert long.loc[long.metric == "peak_rss_mb", "unit"].eq("MB").all()
    record = json.loads((out / "results.jsonl").read_text().splitlines()[0])
    assert record["env"]["packages"]["torch"] and record["env"]["cpu_model"]
    assert record["loss_curve"]


def test_a_failing_method_is_a_failed_row_and_the_others_complete(tmp_path):
    # Workers start cold here (the default), as for users; the other tests fork them from a warm server.
    proc = run_bench("run", "--suite", "smoke", "--tasks", "sentiment", "--methods", "head,lora,bitfit",
                     "--out", str(tmp_path), env={"BENCH_FAULT": "raise:lora,kill:bitfit", "BENCH_WORKER_START": "spawn"})
    assert proc.returncode == 0, proc.stderr
    wide = pd.read_csv(tmp_path / "results_wide.csv").set_index("method")
    assert wide.loc["head", "status"] == "ok"
    assert wide.loc["lora", "status"] == "failed" and "injected failure" in wide.loc["lora", "error"]
    assert wide.loc["bitfit", "status"] == "failed" and "killed by SIGKILL" in wide.loc["bitfit", "error"]
    # The dead worker's row carries the resolved model and device, so it lands in the same report section.
    assert wide.loc["bitfit", ["model", "device"]].tolist() == wide.loc["head", ["model", "device"]].tolist()
    from reports.html import load_records
    from reports.sections import build_sections
    (section,) = build_sections(load_records([tmp_path])[0])
    assert sorted(row.method for row in section.rows) == ["bitfit", "head", "lora"]
    # --strict: one failed run fails the grid (head ok, lora failed again: re-run, or the folder would be resumed).
    assert run_bench("run", "--suite", "smoke", "--tasks", "sentiment", "--methods", "head,lora", "--rerun",
                     "--out", str(tmp_path), "--strict", "--no-report", env={"BENCH_FAULT": "raise:lora"}).returncode == 1


@pytest.mark.parametrize("args, bad", [
    (["--suite", "nope"], "'nope'"),
    (["--suite", "smoke", "--methods", "lora,lorra"], "'lorra'"),
    (["--suite", "smoke", "--tasks", "mnli"], "'mnli'"),
    (["--suite", "smoke", "--budget", "huge"], "'huge'"),
])
def test_unknown_names_exit_2_with_one_line_listing_valid_names(args, bad, tmp_path):
    proc = run_bench("run", *args, "--out", str(tmp_path))
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and bad in lines[0] and "valid:" in lines[0]
    assert not (tmp_path / "results.jsonl").exists()
