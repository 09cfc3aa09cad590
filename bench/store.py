"""The result store: one JSON line per run, appended atomically to `<out>/results.jsonl`.

Append-only JSON lines keep every finished run even if a later one crashes the process, and an
exclusive file lock lets several `bench run` processes share one folder. Tables, reports and the
history database are all derived from these records.
"""
from __future__ import annotations

import fcntl
import json
import os
from pathlib import Path

RESULTS_FILE = "results.jsonl"


class ResultStore:
    def __init__(self, folder: str | os.PathLike):
        self.folder = Path(folder)
        self.path = self.folder / RESULTS_FILE

    def append(self, record: dict) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        line = json.dumps(record, default=str, allow_nan=True) + "\n"
        with open(self.path, "a", encoding="utf-8") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                f.write(line)
                f.flush()
                os.fsync(f.fileno())
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)

    def records(self) -> list[dict]:
        if not self.path.is_file():
            return []
        out = []
        with open(self.path, encoding="utf-8") as f:
            for line in f:
                line = line.strip()
                if not line:
                    continue
                try:
                    out.append(json.loads(line))
                except json.JSONDecodeError:
                    continue  # a writer killed mid-line leaves a torn last line; the rest is intact
        return out
