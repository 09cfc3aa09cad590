"""The result store: one JSON line per run, appended atomically to `<out>/results.jsonl`.

Append-only JSON lines keep every finished run even if a later one crashes the process, and an
exclusive file lock lets several `bench run` processes share one folder. Tables, reports and the
history database are all derived from these records.

Every record carries `schema` (SCHEMA); `upgrade` brings an older one to it, and every reader, this store and
the history database, reads records through it.

The file is a log: a run that was re-run appears twice. Aggregations read `latest_runs(records)`, which
keeps the newest record per (configuration id, seed), so a re-run never counts as an extra seed.
"""
from __future__ import annotations

import errno
import fcntl
import json
import os
import sys
from pathlib import Path

from bench.core.errors import StorageFull
from bench.results.identity import run_key

RESULTS_FILE = "results.jsonl"
SCHEMA = 2  # the record layout; a new one adds its step to `upgrade`
# Schema 1 records carried aliases beside the real metric names; schema 2 keeps the real names only.
RENAMED_METRICS = {"peak_rss_mb": "peak_train_mb", "adapter_size_mb": "adapter_tensor_mb"}


def upgrade(record: dict) -> dict:
    """The record in the current schema (a new dict; one without a `schema` field is schema 1)."""
    if (record.get("schema") or 1) >= SCHEMA:
        return record
    out = {**record, "schema": SCHEMA}
    if out.get("metrics"):
        out["metrics"] = metrics = dict(out["metrics"])
        for old, new in RENAMED_METRICS.items():
            if old in metrics:
                value = metrics.pop(old)
                metrics.setdefault(new, value)  # both present: the alias held the same figure
    return out


class ResultStore:
    def __init__(self, folder: str | os.PathLike):
        self.folder = Path(folder)
        self.path = self.folder / RESULTS_FILE
        self.corrupt_lines: list[int] = []  # line numbers skipped by the last records() call

    def append(self, record: dict) -> None:
        """Append one record under an exclusive lock. A torn last line (a writer killed mid-line) is closed
        with a newline first, so it stays one corrupt line instead of swallowing this record too."""
        self.folder.mkdir(parents=True, exist_ok=True)
        line = (json.dumps(record, default=str, allow_nan=True) + "\n").encode("utf-8")
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                size = os.fstat(fd).st_size
                if size and os.pread(fd, 1, size - 1) != b"\n":
                    line = b"\n" + line
                self._write(fd, line)
                os.fsync(fd)
            finally:
                os.close(fd)  # closing releases the lock
        except OSError as exc:
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                raise StorageFull(f"no space left on the device holding {self.folder} while storing the "
                                  f"{record.get('task')}/{record.get('method')} seed {record.get('seed')} run; "
                                  f"every run stored before it is kept in {self.path}") from exc
            raise

    @staticmethod
    def _write(fd: int, data: bytes) -> None:
        while data:
            written = os.write(fd, data)
            data = data[written:]

    def records(self, warn: bool = True) -> list[dict]:
        """Every record in file order. Lines that are not valid JSON are skipped and their numbers kept in
        `corrupt_lines` (and named on stderr): never hidden, never fatal. The file is read whole under a shared
        lock (writers hold an exclusive one while they append), so a line being written is never read half-way."""
        self.corrupt_lines = []
        if not self.path.is_file():
            return []
        out = []
        with open(self.path, "rb") as raw:
            fcntl.flock(raw.fileno(), fcntl.LOCK_SH)
            try:
                text = raw.read().decode("utf-8", errors="replace")
            finally:
                fcntl.flock(raw.fileno(), fcntl.LOCK_UN)
        for number, line in enumerate(text.split("\n"), start=1):
            line = line.strip()
            if not line:
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                record = None
            if isinstance(record, dict):
                record.setdefault("source", str(self.path.parent.resolve()))  # where its predictions lie
                out.append(upgrade(record))
            else:
                self.corrupt_lines.append(number)
        if warn and self.corrupt_lines:
            print(f"bench: warning: {self.path}: skipped {len(self.corrupt_lines)} corrupt line(s) (not a JSON "
                  f"record; a writer killed mid-line leaves one): line {', '.join(map(str, self.corrupt_lines))}",
                  file=sys.stderr)
        return out


def latest_folder(root: str | os.PathLike, suite: str | set[str] | None = None, tuning: bool = False) -> Path | None:
    """The most recently written results folder under `root`; with `suite`, the newest holding runs of it (for
    `--resume`): with `tuning`, tuning trials (scored on the dev split), else runs scored on the evaluation split."""
    folders = sorted((p.parent for p in Path(root).glob(f"*/{RESULTS_FILE}")), key=lambda p: p.stat().st_mtime)
    for folder in reversed(folders):
        if suite is None or any(r.get("suite") in ({suite} if isinstance(suite, str) else suite) and ((r.get("config") or {}).get("scored_on") == "dev")
                                == tuning for r in ResultStore(folder).records(warn=False)):
            return folder
    return None


def latest_runs(records: list[dict], per: tuple[str, ...] = ()) -> list[dict]:
    """The newest record of each run (configuration id, seed), records taken in the order they were stored: a
    re-run or a resumed run replaces the earlier record of the same run. `per=("invocation",)` keeps one run
    per invocation instead (the history: each night measures every run anew)."""
    newest: dict[tuple, dict] = {}
    for r in records:
        key = run_key(r) + tuple(r.get(k) for k in per)
        newest.pop(key, None)  # re-insert so the order follows the newest record
        newest[key] = r
    return list(newest.values())


def in_plan_order(records: list[dict]) -> list[dict]:
    """The records in their grid's fixed order (task, seed, method: `info.order.planned`, bench/execute/plan.py),
    whatever order the runs went in, so that tables and reports never depend on it. Invocations keep the order they
    first appear in; a record without `info.order` (older ones) keeps its place among its invocation's."""
    first = {inv: i for i, inv in reversed(list(enumerate(r.get("invocation") for r in records)))}

    def key(item):
        i, r = item
        planned = ((r.get("info") or {}).get("order") or {}).get("planned")
        return first[r.get("invocation")], planned if isinstance(planned, int) else i
    return [r for _, r in sorted(enumerate(records), key=key)]
