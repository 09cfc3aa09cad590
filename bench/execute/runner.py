"""Runs a grid of (task, method, seed) runs, each in a fresh subprocess, and stores every record.

A fresh process per run makes peak memory that run's alone (RSS never shrinks) and keeps one crash
from taking the grid down: a worker that dies without a result still gets a `failed` row, built from
the record the worker saved once its model and device were resolved. See `start_method` for how a
worker process starts.

The local executor runs one process per run, `--parallel N` at a time (bench/execute/ray_executor.py is the other).
Workers run in a session of their own, so a terminal's Ctrl-C reaches only this process: the first
SIGINT/SIGTERM stops the runs in flight (recorded `interrupted`) and ends the grid cleanly; a second one
exits at once. A worker also dies with its parent (PR_SET_PDEATHSIG), so none is ever orphaned.
"""
from __future__ import annotations

import ctypes
import datetime as dt
import json
import os
import signal
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from bench.core.errors import DataError, UsageError
from bench.execute.allocator import tune_allocator
from bench.execute.process import (
    LOG_TAIL_CHARS,
    POLL_S,
    exit_reason,
    log_name,
    partial_path,
    record_of_dead_worker,
)
from bench.results.store import SCHEMA, ResultStore

STOP_GRACE_S = 5.0  # a stopped worker gets this long to exit on SIGTERM before SIGKILL
# What the fork server imports once, so that no forked run pays for it: only what every run imports (the worker,
# peft, datasets; bench/execute/preload.py, which keeps CUDA uninitialised there). A module only some runs import (seqeval
# pulls in scikit-learn and scipy, a model family's code) would sit in every forked run's memory and make its
# figures read higher than a cold process's.
PRELOAD = ["bench.execute.preload"]
MADV_POPULATE_READ = 22  # Linux >= 5.14


def new_invocation_id() -> str:
    return dt.datetime.now().strftime("%Y%m%d-%H%M%S") + "-" + uuid.uuid4().hex[:6]


def plan(runs: list[dict], seeds: list[int], invocation: str | None = None) -> list[dict]:
    """One spec per (task, method) configuration x seed, in task, seed, method order. Each entry of `runs`
    holds a configuration's settings (suite, task, method, config, config_id, lr, ...)."""
    invocation = invocation or new_invocation_id()
    tasks = list(dict.fromkeys(r["task"] for r in runs))
    return [dict(r, run_id=uuid.uuid4().hex, invocation=invocation, seed=s)
            for t in tasks for s in seeds for r in runs if r["task"] == t]


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass  # not Linux: the worker's own session still keeps it off the terminal's Ctrl-C


class Interrupt:
    """Catches SIGINT/SIGTERM while a grid runs. The first sets `signal` (the grid stops after recording the
    run in flight as interrupted); a second kills the worker and exits with 130 at once."""

    def __init__(self):
        self.signal: str | None = None
        self.procs = []  # the worker processes in flight
        self._previous = {}

    def __enter__(self):
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                self._previous[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread: leave the default behaviour
                pass
        return self

    def __exit__(self, *exc):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    def _handle(self, signum, frame):
        if self.signal is not None:
            for proc in self.procs:
                _killpg(proc, signal.SIGKILL)
            print("\nbench: stopped at once (second interrupt); the results stored so far are kept", file=sys.stderr)
            os._exit(130)
        self.signal = signal.Signals(signum).name


def _killpg(proc, sig: int) -> None:
    """Signal the worker's process group (its session): the worker and anything it started."""
    try:
        os.killpg(proc.pid, sig)
    except (ProcessLookupError, PermissionError):  # gone already, or not yet in its own session
        try:
            os.kill(proc.pid, sig)
        except ProcessLookupError:
            pass


def _stop(proc) -> None:
    """SIGTERM the worker, then SIGKILL it if it has not exited within the grace period."""
    _killpg(proc, signal.SIGTERM)
    proc.join(STOP_GRACE_S)
    if proc.is_alive():
        _killpg(proc, signal.SIGKILL)
        proc.join()


@dataclass
class Outcome:
    records: list[dict] = field(default_factory=list)
    interrupted: str | None = None  # the signal's name when the grid was stopped


def start_method() -> str:
    """How worker processes start (BENCH_WORKER_START).

    `forkserver` (default): a server imports what every run needs (PRELOAD) once and forks each run's process
    (far faster than a cold interpreter importing torch, transformers and peft). Each run still has a process
    of its own; its memory figures read like a cold process's (docs/design/fork-server.md) because
    the forked process maps the library pages the server had mapped (`_map_server_pages`) and the server holds
    nothing a cold run would not import. `spawn`: a cold interpreter per run.
    """
    method = os.environ.get("BENCH_WORKER_START", "forkserver")
    if method not in ("forkserver", "spawn"):
        raise UsageError(f"unknown BENCH_WORKER_START {method!r} (valid: spawn, forkserver)")
    return method


def _map_server_pages(server: int) -> None:  # pragma: no cover - runs in the forked worker
    """Map into this process the file-backed pages (shared libraries' code and data) its server has mapped.

    fork copies the page tables of anonymous memory only; library pages the server touched while importing
    (libtorch and friends) are absent from a forked child's RSS until it touches them again, so its peak RSS
    read lower than a cold process's. Populating them (MADV_POPULATE_READ, no copy: page
    cache) restores what a cold process has mapped. Best effort: on failure the figures read low, as before.
    """
    try:
        import numpy as np
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
        page = os.sysconf("SC_PAGE_SIZE")
        with open(f"/proc/{server}/maps") as maps, open(f"/proc/{server}/pagemap", "rb", buffering=0) as pagemap:
            for line in maps:
                parts = line.split(maxsplit=5)
                if len(parts) < 6 or not parts[5].startswith("/") or parts[5].startswith("/dev/") or "r" not in parts[1]:
                    continue
                start, end = (int(x, 16) for x in parts[0].split("-"))
                pagemap.seek(start // page * 8)
                entries = np.frombuffer(pagemap.read((end - start) // page * 8), dtype=np.uint64)
                present = (entries >> np.uint64(63)).astype(np.int8)  # bit 63: page present
                edges = np.diff(np.concatenate(([0], present, [0])))
                for a, b in zip(np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)):
                    libc.madvise(start + int(a) * page, int(b - a) * page, MADV_POPULATE_READ)
    except (OSError, ValueError):
        pass


def warm_up() -> None:
    """Start the fork server now, so that it imports the worker's libraries while the caller does other work."""
    if start_method() == "forkserver":
        import multiprocessing.forkserver
        _context()
        multiprocessing.forkserver.ensure_running()


def _context():
    import multiprocessing
    ctx = multiprocessing.get_context(start_method())
    if start_method() == "forkserver":
        ctx.set_forkserver_preload(PRELOAD)
    return ctx


def ready_path(result_path: str | os.PathLike) -> Path:
    """Where a worker notes how long it took from the runner's start of the run to being ready to work."""
    return Path(result_path).with_suffix(".ready")


def _adopt_environment(env: dict) -> None:
    """Make this process's environment `env`, the runner's as the run starts. A forked worker has its server's:
    what the runner had when it started the server (so drop what the runner has unset since), plus what the
    server's imports set, which stays as a cold process's imports would set it."""
    server_start = getattr(sys.modules.get("bench.execute.preload"), "STARTED_WITH", {})
    for name in server_start.keys() - env.keys():
        os.environ.pop(name, None)
    os.environ.update(env)


def _worker_process(spec_path: str, result_path: str, log_path: str | None, env: dict,
                    started: float | None = None) -> None:
    """Runs in the new process: its own session (a terminal's Ctrl-C reaches only the parent), death with its
    parent, its environment (the runner's now, plus the run's GPU and threads) before torch touches a device,
    output to the run's log, then the worker. `started` (time.time() when the runner started the run) gives the
    run's start-up cost."""
    if start_method() == "forkserver":
        _map_server_pages(os.getppid())  # before setsid: the parent is the fork server
    os.setsid()
    _die_with_parent()
    _adopt_environment(env)
    allocator = tune_allocator()
    if log_path is not None:
        fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        os.close(fd)
    from bench.execute import worker
    if started is not None:
        ready_path(result_path).write_text(json.dumps({"worker_start_s": time.time() - started,
                                                       "allocator": allocator}))
    try:
        worker.main([spec_path, result_path])
    finally:
        sys.stdout.flush()
        sys.stderr.flush()


class LocalRun:
    """One run in flight on this machine: its process, its files, when it started."""

    def __init__(self, spec: dict, log_dir: Path, verbose: bool, env: dict):
        self.spec, self.env = spec, env
        log_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = log_dir / log_name(spec)
        self.log_path.write_text("")
        self.tmp = tempfile.TemporaryDirectory()
        self.spec_path, self.result_path = Path(self.tmp.name) / "spec.json", Path(self.tmp.name) / "result.json"
        self.spec_path.write_text(json.dumps(spec))
        # The runner's environment as it is now: a fork server keeps the one it started with, so a Python session
        # that runs a second grid, or changes a variable first, would otherwise start that grid's runs with the
        # first one's. Variables the server's imports set stay (a cold process's imports set them too).
        run_env = {**os.environ, **env}
        self.proc = _context().Process(target=_worker_process, name=f"bench-{spec['task']}-{spec['method']}",
                                       args=(str(self.spec_path), str(self.result_path),
                                             None if verbose else str(self.log_path), run_env, time.time()))
        self.started = time.monotonic()
        self.proc.start()

    def record(self, reason: str | None) -> dict:
        """The worker's record, or, if it died, was stopped or timed out without one, a `failed`/`interrupted`
        record built from what it had saved."""
        if self.proc.is_alive():  # never leave a worker behind
            _killpg(self.proc, signal.SIGKILL)
        self.proc.join()
        if self.result_path.is_file():  # it finished after all (e.g. just as Ctrl-C came)
            record = json.loads(self.result_path.read_text())
            ready = ready_path(self.result_path)
            if ready.is_file():  # process start + imports, before any work of the run's own; the malloc setting
                ready = json.loads(ready.read_text())
                record.setdefault("metrics", {})["worker_start_s"] = ready["worker_start_s"]
                record.setdefault("info", {})["allocator"] = ready["allocator"]
        else:
            partial = partial_path(self.result_path)
            log = self.log_path.read_text(errors="replace")[-LOG_TAIL_CHARS:] if self.log_path.is_file() else ""
            record = record_of_dead_worker(self.spec, json.loads(partial.read_text()) if partial.is_file() else None,
                                           log, exit_reason(self.proc.exitcode), reason)
        self.tmp.cleanup()
        record.setdefault("info", {})["log"] = str(self.log_path)
        if self.env.get("CUDA_VISIBLE_DEVICES"):
            record["info"]["cuda_visible_devices"] = self.env["CUDA_VISIBLE_DEVICES"]
        return record


class LocalExecutor:
    """Runs on this machine, `parallel` at a time (default 1). With several GPUs, each run in flight gets one
    (CUDA_VISIBLE_DEVICES); torch threads are the machine's cores shared among the runs in flight."""

    def __init__(self, parallel: int = 1, gpus: int = 0):
        self.parallel, self.gpus = max(1, parallel), gpus

    def describe(self) -> str:
        return f"local, {self.parallel} at a time" if self.parallel > 1 else "local"

    def _share(self) -> int:
        """Torch threads per run: the machine's cores shared among the runs in flight."""
        return max(1, (os.cpu_count() or 1) // self.parallel)

    def cpu_threads(self) -> int | None:
        """Torch threads of a CPU run that shares the cores with others in flight (part of its config id); None:
        all the machine's cores (one run at a time), or GPU runs, whose numerics do not follow the CPU threads."""
        return self._share() if self.parallel > 1 and not self.gpus and self._share() < (os.cpu_count() or 1) else None

    def env_for(self, slot: int) -> dict:
        env = {"BENCH_TORCH_THREADS": str(self._share())} if self.parallel > 1 else {}
        if self.gpus:
            env["CUDA_VISIBLE_DEVICES"] = str(slot % self.gpus)
        return env

    def run(self, specs: list[dict], log_dir: Path, verbose: bool, timeout: float | None, interrupt: "Interrupt"):
        """Yield each run's record as it finishes. On an interrupt the runs in flight are stopped and yielded
        `interrupted`; runs not yet started are not run."""
        pending, running = list(specs), {}  # slot -> LocalRun
        while pending or running:
            while pending and len(running) < self.parallel and not interrupt.signal:
                slot = min(set(range(self.parallel)) - set(running))
                running[slot] = LocalRun(pending.pop(0), log_dir, verbose, self.env_for(slot))
            interrupt.procs = [r.proc for r in running.values()]
            for slot, run in list(running.items()):
                reason = None
                if interrupt.signal:
                    reason = "interrupted"
                elif timeout and time.monotonic() - run.started > timeout:
                    reason = f"timeout after {timeout:g} s"
                if reason and run.proc.is_alive():
                    _stop(run.proc)
                if not run.proc.is_alive():
                    del running[slot]
                    yield run.record(reason)
            if interrupt.signal and not running:
                return
            if running:
                from multiprocessing.connection import wait
                wait([r.proc.sentinel for r in running.values()], timeout=POLL_S)
        interrupt.procs = []


def run_grid(specs: list[dict], out_dir: Path, verbose: bool = False, describe=None,
             history_db: Path | None = None, timeout: float | None = None, executor=None) -> Outcome:
    """Run every spec (on `executor`: LocalExecutor by default), storing each record the moment it exists.
    Stops early, cleanly, on SIGINT/SIGTERM. Raises StorageFull when the disk fills up (the records stored
    before stay)."""
    store = ResultStore(out_dir)
    outcome = Outcome()
    executor = executor or LocalExecutor()
    order = {s["run_id"]: s["order"] for s in specs if s.get("order")}  # bench/execute/plan.py plan_grid
    with Interrupt() as interrupt:
        bar = tqdm(total=len(specs), desc="runs", unit="run", disable=None, file=sys.stderr)
        for record in executor.run(specs, out_dir / "logs", verbose, timeout, interrupt):
            record["schema"] = SCHEMA
            if record.get("run_id") in order:  # its place in the order the grid's runs went in
                record.setdefault("info", {})["order"] = order[record["run_id"]]
            store.append(record)  # stored at once: a later crash cannot lose it
            if history_db is not None:
                _record_history(history_db, record, out_dir)
            outcome.records.append(record)
            bar.update(1)
            bar.set_postfix_str(f"{record['task']} / {record['method']} / seed {record['seed']}")
            if describe is not None:
                tqdm.write(describe(record), file=sys.stderr)
        bar.close()
        outcome.interrupted = interrupt.signal
    return outcome


def _record_history(db: Path, record: dict, out_dir: Path) -> None:
    """Add the record to the history database; results.jsonl already holds it, so a failure only warns
    (`bench history --import FOLDER` backfills)."""
    import sqlite3

    from bench.results import history
    try:
        history.record_run(db, record, source=str(Path(out_dir).resolve()))
    except (sqlite3.Error, OSError, DataError) as exc:  # DataError: a damaged database (history.connect)
        tqdm.write(f"bench: warning: could not write {db}: {exc}", file=sys.stderr)
