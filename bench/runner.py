"""Runs a grid of (task, method, seed) runs, each in a fresh subprocess, and stores every record.

A fresh process per run makes peak memory that run's alone (RSS never shrinks) and keeps one crash
from taking the grid down: a worker that dies without a result still gets a `failed` row.
"""
from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

from tqdm import tqdm

from bench.store import ResultStore
from bench.worker import IDENTITY, now

LOG_TAIL_CHARS = 2000


def new_invocation_id() -> str:
    return dt.datetime.now().strftime("%Y%m%d-%H%M%S") + "-" + uuid.uuid4().hex[:6]


def plan(suite: str, tasks: list[str], methods: list[str], seeds: list[int], **common) -> list[dict]:
    invocation = common.pop("invocation", None) or new_invocation_id()
    return [dict(run_id=uuid.uuid4().hex, invocation=invocation, suite=suite, task=t, method=m, seed=s, **common)
            for t in tasks for s in seeds for m in methods]


def run_one(spec: dict, log_dir: Path, verbose: bool = False) -> dict:
    """Run one spec in a subprocess and return its record (a `failed` one if the worker died)."""
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / f"{spec['task']}-{spec['method']}-seed{spec['seed']}-{spec['run_id'][:8]}.log"
    with tempfile.TemporaryDirectory() as tmp:
        spec_path, result_path = Path(tmp) / "spec.json", Path(tmp) / "result.json"
        spec_path.write_text(json.dumps(spec))
        cmd = [sys.executable, "-m", "bench.worker", str(spec_path), str(result_path)]
        with open(log_path, "w") as log:
            out = None if verbose else log
            proc = subprocess.run(cmd, stdout=out, stderr=out, env=os.environ.copy())
        if result_path.is_file():
            record = json.loads(result_path.read_text())
        else:
            tail = log_path.read_text(errors="replace")[-LOG_TAIL_CHARS:] if log_path.is_file() else ""
            record = {k: spec.get(k) for k in IDENTITY}
            record.update(status="failed", model=spec.get("model"), device=spec.get("device"),
                          error=f"worker exited with code {proc.returncode} and no result; log tail: {tail.strip()[-300:]}",
                          started_at=None, finished_at=now(), metrics={}, info={}, loss_curve=[], env={})
    record["info"]["log"] = str(log_path)
    return record


def run_grid(specs: list[dict], out_dir: Path, verbose: bool = False, describe=None,
             history_db: Path | None = None) -> list[dict]:
    store = ResultStore(out_dir)
    records = []
    bar = tqdm(specs, desc="runs", unit="run", disable=None, file=sys.stderr)
    for spec in bar:
        bar.set_postfix_str(f"{spec['task']} / {spec['method']} / seed {spec['seed']}")
        record = run_one(spec, out_dir / "logs", verbose)
        store.append(record)  # stored at once: a later crash cannot lose it
        if history_db is not None:
            _record_history(history_db, record, out_dir)
        records.append(record)
        if describe is not None:
            tqdm.write(describe(record), file=sys.stderr)
    return records


def _record_history(db: Path, record: dict, out_dir: Path) -> None:
    """Add the record to the history database; results.jsonl already holds it, so a failure only warns
    (`bench history --import FOLDER` backfills)."""
    import sqlite3

    from bench import history
    try:
        history.record_run(db, record, source=str(Path(out_dir).resolve()))
    except (sqlite3.Error, OSError) as exc:
        tqdm.write(f"bench: warning: could not write {db}: {exc}", file=sys.stderr)
