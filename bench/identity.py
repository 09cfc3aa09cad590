"""What makes two runs "the same run": a configuration id plus the seed.

`config_id` hashes every setting a run was asked for (suite, task, method, budget, model, learning rate,
device), so runs under different settings are never taken for repeats of each other, and a re-run of the
same settings replaces the earlier record instead of counting as one more seed (`store.latest_runs`).
"""
from __future__ import annotations

import hashlib
import json

IDENTITY = ("run_id", "invocation", "config_id", "suite", "task", "method", "seed", "budget")  # in every record
CONFIG_FIELDS = ("suite", "task", "method", "budget", "model", "lr", "device")


def config_id(spec: dict) -> str:
    """A short, stable hash of the requested settings (12 hex digits)."""
    settings = {k: spec.get(k) for k in CONFIG_FIELDS}
    return hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:12]


def run_key(record: dict) -> tuple:
    """(config id, seed). Records written before config ids existed fall back to their identity fields."""
    cid = record.get("config_id") or tuple(str(record.get(k)) for k in ("suite", "task", "method", "budget",
                                                                          "model", "device"))
    return cid, record.get("seed")
