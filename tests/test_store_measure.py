import errno
import multiprocessing as mp
import os
import time

import numpy as np
import pandas as pd
import pytest
import torch

from bench.core.errors import StorageFull
from bench.core.files import replaced_atomically, write_text
from bench.execute.train import fetch_timed
from bench.meters.windows import ForwardTimer, PeakMemory, WindowTimer, current_rss_mb, percentile
from bench.results.identity import config_id, run_config
from bench.results.store import ResultStore, latest_runs
from reports.tables import long_table, summary, wide_table, write_tables


def _record(method, status="ok", **metrics):
    return {"run_id": method + status, "invocation": "i", "suite": "s", "task": "t", "method": method, "seed": 0,
            "budget": "smoke", "status": status, "error": None if status == "ok" else "boom",
            "metrics": metrics, "info": {}, "loss_curve": [], "env": {}}


def test_store_appends_and_survives_a_torn_last_line(tmp_path, capsys):
    store = ResultStore(tmp_path)
    store.append(_record("lora", accuracy=0.9))
    store.append(_record("full", accuracy=0.8))
    with open(store.path, "a") as f:
        f.write('{"run_id": "torn", "metr')  # a writer killed mid-line
    assert [r["method"] for r in store.records()] == ["lora", "full"]
    # The next two appends start on lines of their own: the torn line swallows neither.
    store.append(_record("head", accuracy=0.7))
    store.append(_record("bitfit", accuracy=0.6))
    assert [r["method"] for r in store.records()] == ["lora", "full", "head", "bitfit"]
    assert store.corrupt_lines == [3]
    assert "line 3" in capsys.readouterr().err


def test_a_full_disk_is_a_one_line_error_naming_the_folder(tmp_path, monkeypatch):
    store = ResultStore(tmp_path)
    store.append(_record("lora", accuracy=0.9))

    def full(fd, data):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(ResultStore, "_write", staticmethod(full))
    with pytest.raises(StorageFull, match=str(tmp_path)) as err:
        store.append(_record("full", accuracy=0.8))
    assert "\n" not in str(err.value)
    monkeypatch.undo()
    assert [r["method"] for r in store.records()] == ["lora"]


def test_latest_runs_keep_the_newest_record_per_configuration_and_seed():
    runs = [dict(_record("lora", "failed"), config_id="c1", seed=0), dict(_record("lora"), config_id="c1", seed=1),
            dict(_record("lora", accuracy=0.9), config_id="c1", seed=0), dict(_record("lora"), config_id="c2", seed=0)]
    kept = latest_runs(runs)
    assert [(r["config_id"], r["seed"], r["status"]) for r in kept] == [("c1", 1, "ok"), ("c1", 0, "ok"), ("c2", 0, "ok")]
    # In the history each invocation measures its runs anew: per invocation, nothing collapses across nights.
    nights = [dict(r, invocation=i) for i in ("n1", "n2") for r in runs[2:3]]
    assert len(latest_runs(nights, per=("invocation",))) == 2 and len(latest_runs(nights)) == 1


def test_config_ids_differ_exactly_when_a_setting_does():
    from methods import METHODS
    from suites import get_task
    task, lora = get_task("smoke", "sentiment"), METHODS["lora"]

    def cid(**change):
        args = dict(task=task, method=lora, lr=1e-3, budget="smoke", model_ref=None, model_dir=None, data_dir=None,
                    device="auto")
        return config_id(run_config(**{**args, **change}))

    assert cid() == cid()  # stable
    for change in [dict(lr=2e-3), dict(budget="quick"), dict(model_ref="other"), dict(device="cpu"),
                   dict(method=lora.with_overrides({"r": 16})), dict(method=METHODS["dora"]),
                   dict(cpu_matmul="onednn"), dict(tf32="on"), dict(precision="bf16")]:
        assert cid(**change) != cid(), change
    assert cid(cpu_matmul="default", tf32="off") == cid()  # defaults keep the ids runs had before these settings


def test_atomic_replace_leaves_the_old_file_when_a_write_fails(tmp_path):
    target = tmp_path / "table.csv"
    write_text(target, "old\n")
    with pytest.raises(RuntimeError):
        with replaced_atomically(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("crash mid-write")
    assert target.read_text() == "old\n" and [p.name for p in tmp_path.iterdir()] == ["table.csv"]


def _append_many(folder, n, tag):
    store = ResultStore(folder)
    for i in range(n):
        store.append(_record(f"{tag}{i}", accuracy=i / n))


def test_concurrent_appends_lose_no_record(tmp_path):
    procs = [mp.get_context("fork").Process(target=_append_many, args=(tmp_path, 50, t)) for t in "ab"]
    for p in procs:
        p.start()
    for p in procs:
        p.join()
    assert len(ResultStore(tmp_path).records()) == 100


def test_tables_long_and_wide(tmp_path):
    records = [_record("lora", accuracy=0.9, peak_train_mb=100.0), _record("full", status="failed")]
    long, wide = long_table(records), wide_table(records)
    assert set(long.metric) == {"accuracy", "peak_train_mb"}
    assert long.set_index("metric").loc["peak_train_mb", "unit"] == "MB"
    assert list(wide.columns[:5]) == ["suite", "task", "method", "seed", "status"]
    assert wide.set_index("method").loc["lora", "accuracy"] == 0.9
    paths = write_tables(records, tmp_path)
    assert pd.read_parquet(paths["results_wide.parquet"]).shape[0] == 2
    assert pd.read_csv(paths["results_long.csv"]).shape[0] == 2
    table = summary(records, {"t": "accuracy"}).set_index("method")
    assert table.loc["full", "status"] == "failed" and np.isnan(table.loc["full", "value"])


def test_summary_lists_tasks_in_run_order_and_methods_best_first():
    def rec(task, method, status="ok", **metrics):
        return {**_record(method, status, **metrics), "task": task, "run_id": task + method}
    records = [rec("t", "head", accuracy=0.7), rec("t", "full", status="failed"), rec("t", "lora", accuracy=0.9),
               rec("a", "head", entity_f1=0.5), rec("a", "lora", entity_f1=0.6)]
    table = summary(records, {"t": "accuracy", "a": "entity_f1"})
    assert list(zip(table.task, table.method)) == [("t", "lora"), ("t", "head"), ("t", "full"),
                                                  ("a", "lora"), ("a", "head")]


def test_peak_memory_sees_an_allocation():
    peak = PeakMemory(torch.device("cpu"))
    peak.reset()  # hands freed memory back first (malloc_trim): the baseline is the RSS after it
    before = current_rss_mb()
    block = torch.ones(64 * 1024 * 1024 // 4)  # 64 MB, touched
    del block
    assert peak.read()["peak_mb"] >= before + 50


def test_batch_preparation_is_timed_per_batch():
    def slow_batches():
        for i in range(3):
            time.sleep(0.05)
            yield i
    fetched = list(fetch_timed(slow_batches()))
    assert [b for b, _ in fetched] == [0, 1, 2]
    assert all(0.05 <= s < 5 for _, s in fetched)


def test_forward_timer_counts_the_examples_and_time_of_every_call():
    sleeps = iter([0.05, 0.01, 0.04])

    class Model:
        config = "cfg"

        def __call__(self, input_ids):
            time.sleep(next(sleeps))
            return input_ids.sum()

    timer = ForwardTimer(Model(), torch.device("cpu"))
    assert [timer(input_ids=torch.ones(n, 4)).item() for n in (8, 10, 30)] == [32, 40, 120]
    assert timer.config == "cfg" and [n for n, _ in timer.calls] == [8, 10, 30]
    assert sum(ms for _, ms in timer.calls) >= 100
    assert timer.examples_per_s() <= 48 / 0.1  # 48 examples in >= 0.1 s


def test_timer_and_percentile(monkeypatch):
    from types import SimpleNamespace

    from bench.meters import windows
    wall, cpu = iter([10.0, 11.5, 20.0, 22.0, 23.0]), iter([1.0, 2.0, 5.0, 5.5])  # fake clocks: exact sums
    monkeypatch.setattr(windows, "time", SimpleNamespace(perf_counter=lambda: next(wall),
                                                         process_time=lambda: next(cpu)))
    timer = WindowTimer(torch.device("cpu"))
    timer.start()  # wall 10, cpu 1
    timer.stop()  # 11.5, 2
    timer.start()  # 20, 5: the 8.5 s between windows are not counted
    timer.start()  # already running: the window keeps its start, reads no clock
    timer.stop()  # 22, 5.5
    timer.stop()  # not running: reads no clock, counts nothing
    assert (timer.wall, timer.cpu, timer.windows) == (1.5 + 2.0, 1.0 + 0.5, 2)
    assert next(wall) == 23.0  # exactly four wall readings
    assert percentile([1, 2, 3, 4], 50) == 2.5
    assert percentile([5.0], 95) == 5.0
    with pytest.raises(ValueError):
        percentile([], 50)
