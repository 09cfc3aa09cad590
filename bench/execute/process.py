"""What every executor shares about a worker process: its files (log, partial record), how its death reads, and the
record of a run whose worker left no result."""
from __future__ import annotations

import datetime as dt
import os
import signal
from pathlib import Path

from bench.results.identity import IDENTITY

LOG_TAIL_CHARS = 2000
POLL_S = 0.2


def now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def partial_path(result_path: str | os.PathLike) -> Path:
    """Where a worker keeps its record so far; the parent reads it when the worker dies without a result."""
    return Path(result_path).with_suffix(".partial.json")


def log_name(spec: dict) -> str:
    """A run's log file name, the same whichever executor ran it."""
    return f"{spec['task']}-{spec['method']}-seed{spec['seed']}-{spec['run_id'][:8]}.log"


def exit_reason(code: int) -> str:
    if code < 0:
        name = signal.Signals(-code).name
        hint = " (out of memory? the kernel's OOM killer sends SIGKILL)" if -code == signal.SIGKILL else ""
        return f"worker killed by {name}{hint}"
    return f"worker exited with code {code}"


def record_of_dead_worker(spec: dict, partial: dict | None, log: str, how: str, reason: str | None) -> dict:
    """The record of a run whose worker left no result: what it saved early on (identity, resolved model and
    device, environment), or the spec's identity; `failed` with how it died, or `interrupted`."""
    if partial:
        record = partial
    else:
        record = {k: spec.get(k) for k in IDENTITY}
        record.update(model=spec.get("model") or spec.get("default_model"), device=spec.get("device"),
                      config=spec.get("config", {}), started_at=None, metrics={}, info={}, loss_curve=[], env={})
    if reason == "interrupted":
        record.update(status="interrupted", error="stopped by the user (Ctrl-C or SIGTERM) before it finished")
    elif reason:
        record.update(status="failed", error=f"{reason} (--timeout)")
    else:
        last = " | ".join(line.strip() for line in log.strip().splitlines()[-3:])[-300:]
        record.update(status="failed", error=f"{how} and no result; log tail: {last or '(empty)'}")
    record["finished_at"] = now()
    return record
