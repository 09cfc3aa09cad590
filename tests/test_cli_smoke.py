"""The real CLI on the smoke suite: every method, the tables, failures kept as rows, bad names."""
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import applies, run_bench, smoke_table

from methods import METHODS as REGISTERED

METHODS = list(REGISTERED)
ENCODER = [m for m in METHODS if applies(m)]  # the rest (zero-shot: decoders; int4-lora: CUDA) are skipped rows


@pytest.fixture()
def smoke_run(smoke_grid):
    return smoke_grid


def test_every_method_completes_with_measurements(smoke_run):
    out, proc = smoke_run
    wide = smoke_table(smoke_run, "sentiment")
    assert sorted(wide.method) == sorted(METHODS)
    assert (wide[~wide.method.isin(ENCODER)].status == "skipped").all()
    wide = wide[wide.method.isin(ENCODER)]
    assert (wide.status == "ok").all(), wide[["method", "status", "error"]]
    for col in ["accuracy", "trainable_params", "total_params", "trainable_pct", "head_params", "peak_train_mb",
                "peak_rss_increase_mb", "train_examples_per_s", "train_tokens_per_s", "latency_p50_ms",
                "latency_p95_ms", "eval_examples_per_s", "infer_examples_per_s", "adapter_tensor_mb", "wall_time_s",
                "train_loss"]:
        assert wide[col].notna().all(), col
    by = wide.set_index("method")
    # Accuracy is a share of the evaluation examples, all methods scored on the same ones; `full`, the smoke method
    # that learns the sentiment rule, beats the majority class.
    correct = wide.accuracy * wide.eval_examples
    assert np.allclose(correct, correct.round()) and wide.eval_examples.nunique() == wide.majority_rate.nunique() == 1
    assert by.loc["full", "accuracy"] > by.loc["full", "majority_rate"]
    assert np.allclose(wide.trainable_pct, 100 * wide.trainable_params / wide.total_params)
    assert by.loc["full", "trainable_pct"] == pytest.approx(100)
    for m in ["head", "bitfit", "lora"]:
        assert by.loc[m, "trainable_params"] < by.loc["full", "trainable_params"] / 5
    # The printed summary has one row per (task, method) of the grid, by exact name, with its status and score.
    printed = printed_summary(proc.stdout)
    grid = pd.read_parquet(out / "results_wide.parquet")
    assert sorted((r["task"], r["method"]) for r in printed) == sorted(zip(grid.task, grid.method))
    sentiment = {r["method"]: r for r in printed if r["task"] == "sentiment"}
    for m in ENCODER:
        assert (sentiment[m]["status"], sentiment[m]["metric"]) == ("ok", "accuracy"), sentiment[m]
        assert float(sentiment[m]["value"]) == pytest.approx(by.loc[m, "accuracy"], rel=1e-3), sentiment[m]


@pytest.mark.skipif(not Path("/proc/stat").is_file(), reason="contention is read from /proc/stat")
def test_every_run_records_the_contention_of_its_timed_windows(smoke_run):
    """A busy machine must not pass for a slow method: every run records what share of the CPU others took during
    its timed windows, or why it cannot (this grid's windows add up to ~0.1 s: too short for 10 ms ticks)."""
    out, _ = smoke_run
    records = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    for r in [r for r in records if r["status"] == "ok"]:
        share = r["metrics"].get("contention")
        assert (share is not None and 0 <= share <= 1) or "too short" in r["info"]["contention"], (r["method"], r["info"])
        assert "gpu_other_processes" not in r["metrics"]  # CPU runs never ask NVML


def printed_summary(stdout: str) -> list[dict]:
    """The rows of the summary table `bench run` prints: task, method, status, n, metric and value (the mean) of
    each, read by column, not by searching the text."""
    lines = stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if line.split()[:3] == ["task", "method", "status"])
    header = lines[start].split()[:6]
    assert header == ["task", "method", "status", "n", "metric", "value"], header
    rows = []
    for line in lines[start + 1:]:
        if not line.strip():
            break
        rows.append(dict(zip(header, line.split())))
    return rows


def test_peft_counts_and_adalora_reallocation_are_recorded(smoke_run):
    wide = smoke_table(smoke_run, "sentiment").set_index("method")
    peft = [m for m in ENCODER if REGISTERED[m].kind == "peft"]
    assert (wide.loc[peft, "trainable_params"] == wide.loc[peft, "peft_trainable_params"]).all()
    assert wide.loc["adalora", "effective_trainable_params"] < wide.loc["adalora", "trainable_params"]
    assert wide.loc["adalora", "ranks_reallocated"] == 1
    assert wide.loc["adalora", "adalora_rank_final"] < wide.loc["adalora", "adalora_rank_initial"]
    # AdaLoRA's optimised loss includes its orthogonality regulariser; the task loss is logged apart.
    assert abs(wide.loc["adalora", "train_loss"] - wide.loc["adalora", "train_task_loss"]) > 1e-6
    assert wide.loc["lora", "train_loss"] == pytest.approx(wide.loc["lora", "train_task_loss"], rel=1e-5)
    assert wide.loc["int8-lora", "base_int8_mb"] > 0


def test_every_method_runs_on_every_smoke_task_or_is_skipped_naming_the_architecture(smoke_run):
    wide = pd.read_parquet(smoke_run[0] / "results_wide.parquet")
    assert len(wide) == 3 * len(REGISTERED) and set(wide.task) == {"sentiment", "ner", "images"}
    for row in wide.itertuples():
        if row.status == "skipped":
            assert ("models (" in row.error and ("cnn" in row.error or "transformer" in row.error)) \
                or "token classification" in row.error \
                or (row.task == "images" and "under a models dir" in row.error) \
                or "runs on cuda only, not cpu" in row.error, row.error  # no BENCH_MODEL_DIR; int4-lora
        else:
            assert row.status == "ok", (row.task, row.method, row.error)
    ok = wide[wide.status == "ok"]
    # No method trains the head alone under another name: every method but `head` trains more than the head.
    others = ok[ok.method != "head"]
    assert (others.trainable_params > others.head_params).all(), others[["task", "method", "trainable_params"]]
    peft = ok[ok.method.map(lambda m: REGISTERED[m].kind == "peft" and "tuning" not in m)]
    assert (peft.adapted_layers > 0).all()
    # Sizes are tensor bytes; the folder (model card, JSON) is recorded beside them and is larger.
    assert (peft.adapter_tensor_mb < peft.adapter_folder_mb).all()
    assert "adapter_size_mb" not in ok and "peak_rss_mb" not in ok  # schema 2: the aliases are retired
    # Methods that merge also time the merged model; prompt-based ones cannot merge.
    merging = ok[ok.method.isin(["lora", "dora", "ia3", "loha"])]
    assert merging.latency_merged_p50_ms.notna().all()
    assert ok[ok.method == "prefix-tuning"].latency_merged_p50_ms.isna().all()
    assert ok.config_id.nunique() == len(ok)  # each (task, method) is its own configuration


def test_long_table_has_units_and_records_hold_env(smoke_run):
    out, _ = smoke_run
    long = pd.read_csv(out / "results_long.csv")
    assert set(long.columns) >= {"suite", "task", "method", "seed", "metric", "value", "unit"}
    assert long.loc[long.metric == "peak_train_mb", "unit"].eq("MB").all()
    record = next(r for r in map(json.loads, (out / "results.jsonl").read_text().splitlines())
                  if r["status"] == "ok")  # runs go in a random order: the first line may be a skipped run
    assert record["schema"] == 2
    assert record["env"]["packages"]["torch"] and record["env"]["cpu_model"]
    assert record["loss_curve"]
    # Where the run's time went, phase by phase, and which library ran its fp32 matmuls (a CPU run).
    phases = record["info"]["phases_s"]
    assert {"load", "train", "eval", "latency", "save"} <= set(phases) and all(v >= 0 for v in phases.values())
    assert sum(phases.values()) <= record["metrics"]["wall_time_s"] + 0.01
    assert record["info"]["cpu_matmul"].startswith("default (torch's own")
    assert set(record["info"]["peak_flops"]["gemm"]) >= {"default", "onednn", "onednn_is_fp32"}


def test_a_failing_method_is_a_failed_row_and_the_others_complete(tmp_path):
    proc = run_bench("run", "--suite", "smoke", "--tasks", "sentiment", "--methods", "head,lora,bitfit",
                     "--out", str(tmp_path), env={"BENCH_FAULT": "raise:lora,kill:bitfit"})
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
