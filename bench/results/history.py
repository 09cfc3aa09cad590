"""The history store: every finished run, from every invocation, in one SQLite database.

`results.jsonl` in each output folder stays the source of truth for that folder; the history database
adds the time axis (nightly runs, commits) that `bench compare`, `bench recommend` and the report's trends
read. SQLite ships with Python, needs no server and, in WAL mode, lets several `bench run` processes
write one file at once (each write is one short transaction; a writer waits up to BUSY_TIMEOUT_S for
another's lock) while a writer killed mid-transaction leaves the database as it was before it began.

Schema (loadable into pandas in one call: `pd.read_sql("SELECT * FROM runs_long", sqlite3.connect(db))`):
  runs(run_id PK, invocation, config_id, suite, task, method, seed, budget, model, device, status, error, lr,
       host, cpu_model, gpu_name, git_commit, packages JSON, env JSON, info JSON, started_at, finished_at,
       source, recorded_at, config JSON (what produced the run; config_id hashes it),
       schema (the record layout it was written in, bench/results/store.py SCHEMA; NULL: 1))
  metrics(run_id, name, value, unit)          one row per run x metric
  runs_long                                   view: runs joined with metrics (one row per run x metric)
"""
from __future__ import annotations

import contextlib
import datetime as dt
import json
import math
import os
import sqlite3
import time
from pathlib import Path

import pandas as pd

from bench.core.errors import DataError, UsageError
from bench.core.metrics import mean_std, metric_info
from bench.results.store import ResultStore, latest_runs, upgrade

DB_NAME = "history.db"
BUSY_TIMEOUT_S = 60.0
CONFIG_KEYS = ["suite", "task", "method", "budget", "model", "device", "config_id"]  # one series of comparable runs
RUN_COLUMNS = ["run_id", "invocation", "config_id", "suite", "task", "method", "seed", "budget", "model", "device", "status",
               "error", "lr", "host", "cpu_model", "gpu_name", "git_commit", "packages", "env", "info",
               "started_at", "finished_at", "source", "recorded_at", "config", "schema"]
JSON_COLUMNS = {"packages", "env", "info", "config"}
ADDED_COLUMNS = {"config_id": "TEXT", "config": "TEXT", "schema": "INTEGER"}  # columns newer than the first schema

SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT PRIMARY KEY, invocation TEXT, config_id TEXT, suite TEXT, task TEXT, method TEXT, seed INTEGER, budget TEXT,
    model TEXT, device TEXT, status TEXT, error TEXT, lr REAL, host TEXT, cpu_model TEXT, gpu_name TEXT,
    git_commit TEXT, packages TEXT, env TEXT, info TEXT, started_at TEXT, finished_at TEXT, source TEXT,
    recorded_at TEXT, config TEXT, schema INTEGER);
CREATE TABLE IF NOT EXISTS metrics (
    run_id TEXT NOT NULL REFERENCES runs(run_id) ON DELETE CASCADE, name TEXT NOT NULL, value REAL, unit TEXT,
    PRIMARY KEY (run_id, name));
CREATE INDEX IF NOT EXISTS runs_series ON runs (suite, task, method, budget, finished_at);
CREATE INDEX IF NOT EXISTS runs_invocation ON runs (invocation);
CREATE INDEX IF NOT EXISTS runs_commit ON runs (git_commit);
CREATE VIEW IF NOT EXISTS runs_long AS
    SELECT r.run_id, r.invocation, r.suite, r.task, r.method, r.seed, r.budget, r.model, r.device, r.status,
           r.host, r.git_commit, r.started_at, r.finished_at, m.name AS metric, m.value, m.unit
    FROM runs r JOIN metrics m USING (run_id);
"""


def default_path(out_dir: str | os.PathLike | None = None) -> Path:
    """$BENCH_HISTORY_DB if set; else `history.db` beside the output folder (runs/history.db by default)."""
    if os.environ.get("BENCH_HISTORY_DB"):
        return Path(os.environ["BENCH_HISTORY_DB"])
    return (Path(out_dir).parent if out_dir is not None else Path("runs")) / DB_NAME


@contextlib.contextmanager
def connect(path: str | os.PathLike, create: bool = True):
    path = Path(path)
    if not create and not path.is_file():
        raise UsageError(f"no history database at {str(path)!r} (run `bench run` first, or pass --db)")
    path.parent.mkdir(parents=True, exist_ok=True)
    # Autocommit mode: transactions are opened explicitly (BEGIN IMMEDIATE) so a writer takes the lock
    # up front and waits for it under the busy timeout instead of failing half-way.
    con = sqlite3.connect(path, timeout=BUSY_TIMEOUT_S, isolation_level=None)
    try:
        con.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
        if create:
            _prepare(con)
        yield con
    except Exception as exc:
        if _damaged(exc):
            raise DataError(f"the history database {str(path)!r} is damaged or not an SQLite database "
                            f"({_damaged(exc)}): move it aside and rebuild it with `python -m bench history --import "
                            f"FOLDER ...` from the results folders, or pass another --db") from exc
        raise
    finally:
        con.close()


def _damaged(exc: BaseException) -> str | None:
    """SQLite's message when `exc` (or what it wraps: pandas re-raises read_sql's errors as its own) says the file is
    damaged or no database (SQLITE_CORRUPT, SQLITE_NOTADB); None for anything else, a busy lock included."""
    while exc is not None:
        if isinstance(exc, sqlite3.DatabaseError) and (
                getattr(exc, "sqlite_errorname", "") in ("SQLITE_CORRUPT", "SQLITE_NOTADB")
                or "malformed" in str(exc) or "not a database" in str(exc)):
            return str(exc)
        exc = exc.__cause__ or exc.__context__
    return None


def _prepare(con: sqlite3.Connection) -> None:
    """WAL mode (persistent; readers never block the writer) and the schema. Retried: while another process
    is creating the same database, switching the journal mode can fail with "database is locked" at once,
    without waiting for the busy timeout (seen with two concurrent first writers)."""
    deadline = time.monotonic() + BUSY_TIMEOUT_S
    while True:
        try:
            if con.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
                con.execute("PRAGMA journal_mode = WAL")
            con.execute("PRAGMA foreign_keys = ON")
            con.executescript(SCHEMA)
            columns = {row[1] for row in con.execute("PRAGMA table_info(runs)")}
            for name, sql_type in ADDED_COLUMNS.items():  # a database written before these existed
                if name not in columns:
                    con.execute(f"ALTER TABLE runs ADD COLUMN {name} {sql_type}")
            return
        except sqlite3.OperationalError as e:
            if "locked" not in str(e) or time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def _row(record: dict, source: str | None) -> dict:
    env = record.get("env") or {}
    row = {k: record.get(k) for k in ("run_id", "invocation", "config_id", "suite", "task", "method", "seed", "budget", "model",
                                      "device", "status", "error", "started_at", "finished_at", "schema")}
    row.update(lr=(record.get("metrics") or {}).get("lr"), host=env.get("hostname"), cpu_model=env.get("cpu_model"),
               gpu_name=env.get("gpu_name"), git_commit=env.get("git_commit"),
               packages=json.dumps(env.get("packages") or {}), env=json.dumps(env, default=str),
               info=json.dumps(record.get("info") or {}, default=str), source=source,
               config=json.dumps(record.get("config") or {}, default=str),
               recorded_at=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"))
    return row


def record_runs(path: str | os.PathLike, records: list[dict], source: str | None = None) -> int:
    """Insert (or replace, by run_id) records, in the current schema, in one transaction; returns how many were
    written."""
    records = [upgrade(r) for r in records if r.get("run_id")]
    rows = [_row(r, source) for r in records]
    with connect(path) as con:
        con.execute("BEGIN IMMEDIATE")
        try:
            for row, record in zip(rows, records):
                con.execute(f"INSERT OR REPLACE INTO runs ({', '.join(RUN_COLUMNS)}) "
                            f"VALUES ({', '.join('?' * len(RUN_COLUMNS))})", [row[c] for c in RUN_COLUMNS])
                con.execute("DELETE FROM metrics WHERE run_id = ?", (row["run_id"],))
                con.executemany("INSERT INTO metrics (run_id, name, value, unit) VALUES (?, ?, ?, ?)",
                                [(row["run_id"], name, _number(value), metric_info(name).unit)
                                 for name, value in (record.get("metrics") or {}).items()])
            con.execute("COMMIT")
        except BaseException:
            con.execute("ROLLBACK")
            raise
    return len(rows)


def record_run(path: str | os.PathLike, record: dict, source: str | None = None) -> None:
    record_runs(path, [record], source)


def import_folder(path: str | os.PathLike, folder: str | os.PathLike) -> int:
    """Backfill the history from an output folder's results.jsonl (idempotent: keyed by run_id)."""
    records = ResultStore(folder).records()
    if not records:
        raise UsageError(f"no results in {str(folder)!r} (expected {Path(folder) / 'results.jsonl'})")
    return record_runs(path, records, source=str(Path(folder).resolve()))


def _number(value) -> float | None:
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(value) else value


# --- reading --------------------------------------------------------------------------------------------

def _where(filters: dict) -> tuple[str, list]:
    clauses, args = [], []
    for column, value in filters.items():
        if value is None:
            continue
        values = value if isinstance(value, (list, tuple, set)) else [value]
        clauses.append(f"r.{column} IN ({', '.join('?' * len(values))})")
        args += list(values)
    return (" WHERE " + " AND ".join(clauses)) if clauses else "", args


def runs(path: str | os.PathLike, **filters) -> pd.DataFrame:
    """One row per run (the `runs` table), filtered by column=value or column=[values]."""
    where, args = _where(filters)
    with connect(path, create=False) as con:
        return pd.read_sql(f"SELECT * FROM runs r{where} ORDER BY r.finished_at, r.suite, r.task, r.method, r.seed", con, params=args)


def records(path: str | os.PathLike, **filters) -> list[dict]:
    """Rebuild run records (identity, status, error, metrics, info, env) like those in results.jsonl."""
    where, args = _where(filters)
    with connect(path, create=False) as con:
        frame = pd.read_sql(f"SELECT * FROM runs r{where} ORDER BY r.finished_at, r.suite, r.task, r.method, r.seed", con, params=args)
        metrics = pd.read_sql(f"SELECT m.run_id, m.name, m.value FROM metrics m JOIN runs r USING (run_id){where}",
                              con, params=args)
    by_run: dict[str, dict] = {}
    for run_id, name, value in metrics.itertuples(index=False):
        by_run.setdefault(run_id, {})[name] = math.nan if value is None else value
    out = []
    for row in frame.to_dict("records"):
        record = {k: v for k, v in row.items() if k not in JSON_COLUMNS}
        record.update({k: json.loads(row[k]) if isinstance(row[k], str) and row[k] else {} for k in JSON_COLUMNS})
        record["seed"] = None if pd.isna(row["seed"]) else int(row["seed"])
        record["schema"] = None if pd.isna(row["schema"]) else int(row["schema"])
        record["metrics"] = by_run.get(row["run_id"], {})
        out.append(upgrade(record))
    return out


def invocations(path: str | os.PathLike, **filters) -> pd.DataFrame:
    """One row per invocation (a `bench run` call), oldest first: when it ended, its commit(s), its configs."""
    frame = runs(path, **filters)
    if frame.empty:
        return pd.DataFrame(columns=["invocation", "finished_at", "git_commit", "suites", "configs"])
    rows = []
    for inv, g in frame.groupby("invocation", sort=False):
        rows.append({"invocation": inv, "finished_at": g.finished_at.dropna().max(),
                     "git_commit": ",".join(sorted(set(g.git_commit.dropna()))),
                     "suites": ",".join(sorted(set(g.suite.dropna()))),
                     "configs": set(map(tuple, g[["suite", "task", "method", "budget"]].astype(str).values))})
    return pd.DataFrame(rows).sort_values("finished_at", na_position="first", kind="stable").reset_index(drop=True)


# --- series -------------------------------------------------------------------------------------------

def stats(records: list[dict], keys: list[str] | None = None) -> pd.DataFrame:
    """Mean, sample std (NaN for one run) and n per configuration x metric, over the `ok` runs."""
    keys = keys or CONFIG_KEYS
    records = latest_runs(records, per=("invocation",) if "invocation" in keys else ())  # a re-run is no new seed
    rows = [{**{k: r.get(k) for k in keys}, "metric": name, "value": _number(value)}
            for r in records if r.get("status") == "ok" for name, value in (r.get("metrics") or {}).items()]
    if not rows:
        return pd.DataFrame(columns=keys + ["metric", "mean", "std", "n"])
    frame = pd.DataFrame(rows).dropna(subset=["value"])
    return pd.DataFrame([{**dict(zip(keys + ["metric"], key)), **dict(zip(("mean", "std", "n"), mean_std(group)))}
                         for key, group in frame.groupby(keys + ["metric"], sort=False, dropna=False)["value"]],
                        columns=keys + ["metric", "mean", "std", "n"])
