"""Reliability through the real CLI: Ctrl-C, resume, timeouts, torn lines, a full disk, dead workers, bad data."""
import os
import re
import shlex
import signal
import subprocess
import sys
import time

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import REPO, run_bench

from bench.results.store import ResultStore

SMOKE = ["run", "--suite", "smoke", "--tasks", "sentiment"]


def _lines(folder):
    return ResultStore(folder).records(warn=False)


def _wait_for(predicate, seconds=120):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError("timed out waiting")


def test_ctrl_c_records_the_run_in_flight_and_the_printed_command_resumes_the_grid(tmp_path):
    out = tmp_path / "grid"
    args = [*SMOKE, "--methods", "head,lora,bitfit", "--order", "fixed",  # head ends before lora, which hangs
            "--out", str(out), "--db", str(tmp_path / "h.db")]
    proc = subprocess.Popen([sys.executable, "-m", "bench", *args], cwd=REPO, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env={**os.environ, "BENCH_FAULT": "hang:lora"})  # lora is in flight when we press Ctrl-C
    _wait_for(lambda: (out / "results.jsonl").is_file() and any(out.glob("logs/sentiment-lora-*")))
    time.sleep(0.5)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr
    assert [(r["method"], r["status"]) for r in _lines(out)] == [("head", "ok"), ("lora", "interrupted")]
    wide = pd.read_parquet(out / "results_wide.parquet")
    assert sorted(wide.method) == ["head", "lora"] and (out / "report.html").is_file()
    resume = re.search(r"resume with: (.+)$", stderr, re.M).group(1)

    # A writer killed mid-line leaves a torn line; the next two appends must both survive it.
    with open(out / "results.jsonl", "a") as f:
        f.write('{"run_id": "torn", "metri')
    argv = shlex.split(resume)
    assert argv[:3] == ["python", "-m", "bench"]
    again = run_bench(*argv[3:], check=True)
    assert "1 skipped (1 already ok" in again.stderr and "2 to run" in again.stderr
    assert "corrupt line(s)" in again.stderr and "line 3" in again.stderr
    statuses = [(r["method"], r["status"]) for r in _lines(out)]
    assert statuses == [("head", "ok"), ("lora", "interrupted"), ("lora", "ok"), ("bitfit", "ok")]
    wide = pd.read_csv(out / "results_wide.csv")
    assert sorted(wide.method) == ["bitfit", "head", "lora"] and (wide.status == "ok").all()  # no duplicate
    assert wide.invocation.nunique() == 1  # the folder stays one invocation

    # A re-run into a complete folder does no work.
    done = run_bench(*argv[3:], check=True)
    assert "3 skipped (3 already ok" in done.stderr and "0 to run" in done.stderr
    assert len(_lines(out)) == 4
    # --rerun-failed reruns only failed/interrupted runs: here none.
    assert len(_lines(out)) == 4 and "0 to run" in run_bench(*argv[3:], "--rerun-failed", check=True).stderr


def test_a_hung_run_times_out_and_a_grid_with_no_success_exits_1(tmp_path):
    proc = run_bench(*SMOKE, "--methods", "lora", "--timeout", "3", "--out", str(tmp_path), "--no-report",
                     env={"BENCH_FAULT": "hang:lora"})
    assert proc.returncode == 1, proc.stderr  # without --strict: a nightly job must not pass on nothing
    (record,) = _lines(tmp_path)
    assert record["status"] == "failed" and record["error"].startswith("timeout after 3 s")
    assert "no run succeeded" in proc.stderr


def test_a_full_disk_is_one_line_and_keeps_the_stored_runs(tmp_path):
    # The real CLI in a subprocess, with the store's write failing as on a full disk from the second record on.
    code = ("import errno, os, sys\n"
            "from bench.results import store\n"
            "calls = []\n"
            "real = store.ResultStore._write\n"
            "def write(fd, data):\n"
            "    calls.append(1)\n"
            "    if len(calls) > 1:\n"
            "        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))\n"
            "    real(fd, data)\n"
            "store.ResultStore._write = staticmethod(write)\n"
            "from bench.cli import main\n"
            "sys.exit(main(sys.argv[1:]))\n")
    proc = subprocess.run([sys.executable, "-c", code, *SMOKE, "--methods", "head", "--seeds", "0,1", "--order",
                           "fixed", "--out", str(tmp_path), "--no-report"], cwd=REPO, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("bench: error: no space left") and str(tmp_path) in last
    assert [(r["method"], r["seed"]) for r in _lines(tmp_path)] == [("head", 0)]


@pytest.fixture()
def bad_data(tmp_path, data_dir):
    """SST-2 data folders with one fault each: case -> (folder, expected message, file named in it)."""
    good = {split: data_dir / "sst2" / f"{split}.parquet" for split in ("train", "validation")}

    def folder(name, split=None, write=None):
        root = tmp_path / name
        (root / "sst2").mkdir(parents=True)
        for s, path in good.items():
            if s != split:
                (root / "sst2" / f"{s}.parquet").symlink_to(path)
            elif write is not None:
                write(good[s], root / "sst2" / f"{s}.parquet")
        return root

    plain_labels = pa.schema([("sentence", pa.string()), ("label", pa.int64()), ("idx", pa.int32())])
    return {
        "missing split": (folder("nosplit", "validation"), "lacks", "validation.parquet"),
        "missing column": (folder("nolabel", "validation", lambda src, dst: pq.write_table(
            pq.read_table(src).drop(["label"]), dst)), "lacks column(s) label", "validation.parquet"),
        "truncated": (folder("truncated", "validation", lambda src, dst: dst.write_bytes(src.read_bytes()[:5000])),
                      "is not a readable Parquet file", "validation.parquet"),
        "no class names": (folder("nonames", "train", lambda src, dst: pq.write_table(
            pq.read_table(src).replace_schema_metadata(None).cast(plain_labels), dst)),
            "carries no class names", "train.parquet"),
    }


@pytest.mark.parametrize("case", ["missing split", "missing column", "truncated"])
def test_bad_data_is_a_one_line_error_naming_the_file(bad_data, case):
    from suites import get_task
    folder, message, file = bad_data[case]
    task = get_task("nlp", "sst2")
    with pytest.raises(Exception) as err:
        task.load_data(folder, task.budget("smoke"))
    text = str(err.value)
    assert message in text and file in text and "\n" not in text


def test_labels_without_class_names_are_named_by_their_sorted_values(bad_data):
    """A label column without a ClassLabel feature is no error since task files (issue 25): its classes are the
    sorted distinct training values, so the stripped SST-2 file trains the same classes, named "0" and "1"."""
    from suites import get_task
    folder, _, _ = bad_data["no class names"]
    task = get_task("nlp", "sst2")
    data = task.load_data(folder, task.budget("smoke"))
    assert data.label_names == ["0", "1"] and set(data.train["label"]) == {0, 1}


def test_bad_data_reaches_the_failed_row_and_the_console(bad_data, tmp_path):
    folder, message, _ = bad_data["missing column"]
    proc = run_bench("run", "--suite", "nlp", "--tasks", "sst2", "--methods", "head", "--budget", "smoke",
                     "--data-dir", str(folder), "--out", str(tmp_path / "out"), "--no-report")
    (record,) = _lines(tmp_path / "out")
    assert record["status"] == "failed" and message in record["error"]
    assert any(message in line and "seed 0: failed" in line for line in proc.stderr.splitlines())


def test_a_model_folder_without_weights_names_the_folder(tmp_path):
    from bench.core import resolve
    (tmp_path / "config.json").write_text('{"model_type": "bert"}')
    with pytest.raises(resolve.ResolveError, match=f"model folder {tmp_path} has no weights"):
        resolve.model_path(str(tmp_path), None)
    (tmp_path / "config.json").unlink()
    with pytest.raises(resolve.ResolveError, match="has no config.json"):
        resolve.model_path(str(tmp_path), None)


def test_parallel_runs_share_the_cores_and_give_every_row(tmp_path):
    # Workers start cold here (spawn); the other tests fork them from a warm server (the default).
    proc = run_bench(*SMOKE, "--methods", "head,lora,bitfit", "--parallel", "2", "--out", str(tmp_path),
                     "--no-report", "--strict", env={"BENCH_WORKER_START": "spawn", "BENCH_FAULT": "raise:bitfit"},
                     fresh_process=True)
    assert proc.returncode == 1  # --strict: one failed run fails the grid, which still runs to the end
    records = {r["method"]: r for r in _lines(tmp_path)}
    assert [records[m]["status"] for m in ("head", "lora", "bitfit")] == ["ok", "ok", "failed"], proc.stderr
    assert {records[m]["env"]["torch_threads"] for m in ("head", "lora")} == {max(1, (os.cpu_count() or 1) // 2)}
    bad = run_bench(*SMOKE, "--parallel", "0", "--out", str(tmp_path / "x"))
    assert bad.returncode == 2 and "bad --parallel 0" in bad.stderr
    stray = run_bench(*SMOKE, "--cpus-per-run", "1", "--out", str(tmp_path / "y"))
    assert stray.returncode == 2 and "need --executor ray" in stray.stderr


def test_a_reader_never_sees_the_line_a_writer_is_writing(tmp_path, monkeypatch, capsys):
    import threading

    from bench.results import store as store_module
    write = store_module.ResultStore._write
    half_written, done = threading.Event(), threading.Event()

    def slow_write(fd, data):  # a long record reaching the disk in two pieces, a reader looking in between
        write(fd, data[:len(data) // 2])
        half_written.set()
        time.sleep(0.05)
        write(fd, data[len(data) // 2:])

    monkeypatch.setattr(store_module.ResultStore, "_write", staticmethod(slow_write))
    store = store_module.ResultStore(tmp_path)

    def writer():
        for i in range(10):
            store.append({"run_id": str(i), "invocation": "i", "config_id": "c", "seed": i, "pad": "x" * 10_000})
        done.set()
        half_written.set()

    thread = threading.Thread(target=writer)
    thread.start()
    corrupt = []
    while not done.is_set():
        half_written.wait(5)
        half_written.clear()
        reader = store_module.ResultStore(tmp_path)
        reader.records()
        corrupt += reader.corrupt_lines
    thread.join()
    assert corrupt == [] and "corrupt" not in capsys.readouterr().err
    assert len(store_module.ResultStore(tmp_path).records()) == 10
