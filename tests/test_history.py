"""The history database: round trip, pandas in one call, concurrent writers, a killed writer, trends."""
import os
import signal
import sqlite3
import subprocess
import sys
import time
import uuid

import pandas as pd
import pytest
from conftest import REPO

from bench.judge import trends
from bench.results import history
from reports.tables import format_summary, summary


def record(method="lora", seed=0, invocation="inv-1", finished="2026-01-01T00:00:00+00:00", commit="abc123",
           status="ok", **metrics):
    return {"run_id": uuid.uuid4().hex, "invocation": invocation, "suite": "smoke", "task": "sentiment",
            "method": method, "seed": seed, "budget": "quick", "model": "tiny", "device": "cpu", "status": status,
            "error": None if status == "ok" else "boom", "started_at": finished, "finished_at": finished,
            "metrics": metrics or {"accuracy": 0.9, "peak_train_mb": 500.0}, "info": {"x": 1}, "loss_curve": [[1, 0.5]],
            "env": {"hostname": "h", "git_commit": commit, "packages": {"torch": "2.13.0"}}}


def test_round_trip_and_pandas_in_one_call(tmp_path):
    db = tmp_path / "history.db"
    recs = [record(seed=s, accuracy=0.8 + s / 100, peak_train_mb=500.0) for s in range(3)]
    assert history.record_runs(db, recs) == 3
    history.record_runs(db, recs[:1])  # same run_id again: replaced, not duplicated
    back = history.records(db, suite="smoke")
    assert [r["run_id"] for r in back] == [r["run_id"] for r in recs]
    assert back[1]["metrics"] == {"accuracy": pytest.approx(0.81), "peak_train_mb": 500.0}
    assert back[0]["env"]["packages"] == {"torch": "2.13.0"} and back[0]["git_commit"] == "abc123"
    long = pd.read_sql("SELECT * FROM runs_long", sqlite3.connect(db))
    assert len(long) == 6 and set(long.metric) == {"accuracy", "peak_train_mb"}
    assert set(long.unit) == {"ratio", "MB"}
    assert sqlite3.connect(db).execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_schema_1_records_read_with_the_real_metric_names(tmp_path):
    """Records from before schema 2 carry no `schema` and the aliases peak_rss_mb (= peak_train_mb) and
    adapter_size_mb (= adapter_tensor_mb); the store and the history both hand them out with the real names."""
    import json

    from bench.results.store import ResultStore
    old = record(accuracy=0.9, peak_rss_mb=500.0, peak_train_mb=500.0, adapter_size_mb=0.25, adapter_tensor_mb=0.25)
    older = record(seed=1, accuracy=0.8, peak_rss_mb=600.0, adapter_size_mb=0.5)  # before the real names existed
    folder = tmp_path / "old"
    folder.mkdir()
    (folder / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in (old, older)))
    want = [{"accuracy": 0.9, "peak_train_mb": 500.0, "adapter_tensor_mb": 0.25},
            {"accuracy": 0.8, "peak_train_mb": 600.0, "adapter_tensor_mb": 0.5}]
    stored = ResultStore(folder).records()
    assert [r["metrics"] for r in stored] == want and [r["schema"] for r in stored] == [2, 2]

    db = tmp_path / "history.db"  # a database written before schema 2: rows without a schema, aliases as names
    history.record_runs(db, [])
    with sqlite3.connect(db) as con:
        for r in (old, older):
            con.execute("INSERT INTO runs (run_id, suite, task, method, seed, status, finished_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                        [r[k] for k in ("run_id", "suite", "task", "method", "seed", "status", "finished_at")])
            con.executemany("INSERT INTO metrics (run_id, name, value) VALUES (?, ?, ?)",
                            [(r["run_id"], name, value) for name, value in r["metrics"].items()])
    back = history.records(db)
    assert [r["metrics"] for r in back] == want and [r["schema"] for r in back] == [2, 2]

    history.import_folder(db, folder)  # the folder imported again: stored in schema 2
    assert [r["metrics"] for r in history.records(db)] == want
    assert {row[0] for row in sqlite3.connect(db).execute("SELECT schema FROM runs")} == {2}


def test_missing_database_is_a_usage_error(tmp_path):
    from bench.core.errors import UsageError
    with pytest.raises(UsageError, match="no history database"):
        history.records(tmp_path / "nope.db")
    assert not (tmp_path / "nope.db").exists()


WRITER = """
import sys, uuid
from bench.results import history
db, tag, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
for i in range(n):
    history.record_run(db, {"run_id": f"{tag}-{i}-{uuid.uuid4().hex}", "invocation": tag, "suite": "smoke",
        "task": "t", "method": "m", "seed": i, "budget": "quick", "status": "ok",
        "metrics": {f"metric_{k}": float(k) for k in range(20)}, "env": {}})
"""


def _writer(db, tag, n):
    return subprocess.Popen([sys.executable, "-c", WRITER, str(db), tag, str(n)], cwd=REPO,
                            env={**os.environ, "PYTHONPATH": str(REPO)})


def test_two_concurrent_writers_lose_no_row(tmp_path):
    db = tmp_path / "history.db"
    procs = [_writer(db, tag, 150) for tag in ("a", "b")]
    assert [p.wait(timeout=120) for p in procs] == [0, 0]
    con = sqlite3.connect(db)
    assert con.execute("SELECT invocation, COUNT(*) FROM runs GROUP BY invocation ORDER BY 1").fetchall() == \
        [("a", 150), ("b", 150)]
    assert con.execute("SELECT COUNT(*) FROM metrics").fetchone()[0] == 300 * 20


def test_a_database_from_a_killed_writer_still_opens_and_reads(tmp_path):
    db = tmp_path / "history.db"
    proc = _writer(db, "killed", 10**6)
    deadline = time.time() + 60
    while time.time() < deadline:  # let it commit some rows, then kill it mid-loop
        time.sleep(0.5)
        try:
            if db.exists() and sqlite3.connect(db).execute("SELECT COUNT(*) FROM runs").fetchone()[0] >= 20:
                break
        except sqlite3.OperationalError:
            pass  # schema not created yet
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    con = sqlite3.connect(db)
    assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    runs = con.execute("SELECT COUNT(*) FROM runs").fetchone()[0]
    assert runs >= 20
    # Every committed run has all its metrics: a transaction is all or nothing.
    assert con.execute("SELECT COUNT(*) FROM metrics").fetchone()[0] == runs * 20
    history.record_run(db, record())  # and it takes new writes
    assert len(history.records(db)) == runs + 1


def test_trends_series_per_invocation_with_regressions_marked(tmp_path):
    db = tmp_path / "history.db"
    for day, acc in [(1, 0.90), (2, 0.905), (3, 0.70)]:
        history.record_runs(db, [record(invocation=f"night-{day}", finished=f"2026-01-0{day}T00:00:00+00:00",
                                        commit=f"c{day}", seed=s, accuracy=acc + s / 1000, peak_train_mb=500.0)
                                 for s in range(2)])
    t = trends.trends(db, metric="accuracy")
    assert list(t.invocation) == ["night-1", "night-2", "night-3"]
    assert list(t.n) == [2, 2, 2] and list(t.regressed) == [False, False, True]
    assert t["std"].iloc[0] == pytest.approx(0.000707, abs=1e-5)
    assert set(t.columns) >= {"suite", "task", "method", "git_commit", "date", "mean", "std"}


def test_summary_shows_mean_std_n_and_flags_near_chance():
    recs = [record(method="full", seed=s, accuracy=a, majority_rate=0.5) for s, a in enumerate([0.9, 0.92, 0.94])]
    recs += [record(method="head", seed=s, accuracy=a, majority_rate=0.5) for s, a in enumerate([0.5, 0.52])]
    frame = summary(recs, {"sentiment": "accuracy"}).set_index("method")
    assert frame.loc["full", "n"] == 3 and frame.loc["full", "std"] == pytest.approx(0.02)
    assert "near chance" in frame.loc["head", "note"] and pd.isna(frame.loc["full"].get("note"))
    assert "0.92 ± 0.02" in format_summary(frame.reset_index())


@pytest.mark.parametrize("damage", ["not a database", "truncated"])
def test_a_damaged_history_is_one_line_naming_the_file_and_what_to_do(tmp_path, damage):
    from conftest import run_bench
    db = tmp_path / "history.db"
    if damage == "not a database":
        db.write_text("this is a text file, not SQLite\n" * 100)
    else:
        history.record_runs(db, [record(), record(seed=1)])
        with sqlite3.connect(db) as con:
            con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        data = db.read_bytes()
        db.write_bytes(data[:100] + b"\xff" * 200 + data[300:])  # the schema pages overwritten
    for args in (["compare", "--baseline", "previous"], ["history"], ["recommend", "--suite", "smoke"]):
        proc = run_bench(*args, "--db", str(db))
        lines = proc.stderr.strip().splitlines()
        assert proc.returncode == 1 and "Traceback" not in proc.stderr, (args, proc.stderr)
        assert len(lines) == 1 and str(db) in lines[0] and "damaged" in lines[0], (args, lines)
