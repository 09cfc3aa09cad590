"""`bench run --executor ray`: the grid's runs as Ray tasks, on every core, GPU and node of a Ray cluster.

Each run is still a fresh `python -m bench.execute.worker` process (its peak memory is its own), started inside a
Ray task that reserves `cpus_per_run` cores and `gpus_per_run` GPUs. Without an address an embedded Ray
instance sized to this machine is started (`address="local"`, so an unrelated cluster on the machine is
never joined) and shut down at the end. Facts this relies on are in ../shared/RAY.md:
- `max_retries=0`: Ray's default silently re-runs a task whose worker died; here that is a `failed` row;
- a task without GPUs would see every GPU: CPU runs get an empty CUDA_VISIBLE_DEVICES;
- Ray sets OMP_NUM_THREADS=1 in a task: torch threads follow the CPU reservation (BENCH_TORCH_THREADS);
- tasks on a `ray start` cluster do not see the driver's environment: what a run needs travels with it;
- `ray.cancel(force=True)` is what stops a running task (Ctrl-C); a task that had finished keeps its result.
Records are stored by the driver as each task finishes, so a driver crash loses only the runs in flight. On Ctrl-C a
run that had finished but was not collected yet is collected and stored as it ended, not as `interrupted`.
"""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

from bench.core.errors import UsageError
from bench.execute.process import LOG_TAIL_CHARS, POLL_S, exit_reason, log_name, partial_path, record_of_dead_worker

# The driver's settings a worker on another node needs (offline flags, caches, fault injection in tests).
STOP_GRACE_S = 5.0  # on Ctrl-C: how long the cancelled tasks get to report (a finished one returns its result)
FORWARDED_ENV = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "HF_HOME", "HF_DATASETS_CACHE", "BENCH_CACHE_DIR",
                 "BENCH_FAULT", "TORCH_EXTENSIONS_DIR")


def import_ray():
    try:
        import ray
    except ImportError:
        raise UsageError("--executor ray needs Ray, an optional extra: pip install -e \".[ray]\"") from None
    return ray


def execute_run(spec: dict, cpus: float, gpus: float, timeout: float | None, env: dict) -> dict:
    """Runs inside a Ray task, on whichever node Ray chose: the worker in a subprocess, its outcome returned."""
    run_env = {**os.environ, **env, "BENCH_TORCH_THREADS": str(max(1, int(cpus))), "OMP_NUM_THREADS": str(max(1, int(cpus))),
               "BENCH_TUNE_ALLOCATOR": "1"}  # the same glibc malloc settings as local workers (bench/execute/runner.py)
    if not gpus:
        run_env["CUDA_VISIBLE_DEVICES"] = ""  # a task without GPUs would otherwise see them all
    where = {"node_ip": _node_ip(), "hostname": socket.gethostname(), "cpus": cpus, "gpus": gpus,
             "cuda_visible_devices": run_env.get("CUDA_VISIBLE_DEVICES", "")}
    with tempfile.TemporaryDirectory() as tmp:
        spec_path, result_path, log_path = Path(tmp) / "spec.json", Path(tmp) / "result.json", Path(tmp) / "log"
        spec_path.write_text(json.dumps(spec))
        reason, code = None, None
        with open(log_path, "w") as log:
            # Not a session of its own: Ray's process-group cleanup then kills the worker with its task.
            proc = subprocess.Popen([sys.executable, "-m", "bench.execute.worker", str(spec_path), str(result_path)],
                                    stdout=log, stderr=subprocess.STDOUT, env=run_env)
            try:
                code = proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                code, reason = proc.wait(), f"timeout after {timeout:g} s"
        partial = partial_path(result_path)
        return {"record": json.loads(result_path.read_text()) if result_path.is_file() else None,
                "partial": json.loads(partial.read_text()) if partial.is_file() else None,
                "how": exit_reason(code), "reason": reason, "where": where,
                "log": log_path.read_text(errors="replace")[-50_000:]}


def _node_ip() -> str:
    try:
        import ray
        return ray.util.get_node_ip_address()
    except Exception:
        return ""


class RayExecutor:
    def __init__(self, address: str | None = None, cpus_per_run: float | None = None,
                 gpus_per_run: float | None = None, init_kwargs: dict | None = None):
        self.address, self.cpus_per_run, self.gpus_per_run = address, cpus_per_run, gpus_per_run
        self.init_kwargs = init_kwargs or {}  # extra ray.init arguments for an embedded instance (tests: num_gpus)
        self.ray = import_ray()

    def describe(self) -> str:
        return f"ray ({self.address or 'embedded'})"

    def cpu_threads(self) -> int | None:
        """An explicit `--cpus-per-run N` for CPU runs: their threads, part of the config id (the executor's default,
        a whole node's cores per CPU run, is the default of a local run too: None)."""
        return max(1, int(self.cpus_per_run)) if self.cpus_per_run and not self.gpus_per_run else None

    def _start(self) -> bool:
        """Join the cluster at `address`, or start an embedded instance. True when we started it."""
        ray = self.ray
        if ray.is_initialized():
            return False
        if self.address:
            ray.init(address=self.address, log_to_driver=False)
            return False
        ray.init(address="local", num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False,
                 **self.init_kwargs)
        return True

    def reservation(self) -> tuple[float, float]:
        """(cpus, gpus) per run: by default one GPU per run where the cluster has GPUs, and the cores of the
        smallest node shared among the runs that fit on it (a CPU run takes a whole node: honest throughput)."""
        nodes = [n["Resources"] for n in self.ray.nodes() if n.get("Alive")]
        gpus = self.gpus_per_run if self.gpus_per_run is not None else (1 if any(n.get("GPU") for n in nodes) else 0)
        if self.cpus_per_run:
            return self.cpus_per_run, gpus
        smallest = min(nodes, key=lambda n: n.get("CPU", 0))
        fit = int(smallest.get("GPU", 0) // gpus) if gpus else 1
        return max(1, int(smallest.get("CPU", 1)) // max(1, fit)), gpus

    def run(self, specs, log_dir: Path, verbose: bool, timeout: float | None, interrupt):
        ray = self.ray
        started = self._start()
        try:
            cpus, gpus = self.reservation()
            task = ray.remote(execute_run).options(num_cpus=cpus, num_gpus=gpus, max_retries=0)
            env = {k: os.environ[k] for k in FORWARDED_ENV if k in os.environ}
            refs = {task.remote(spec, cpus, gpus, timeout, env): spec for spec in specs}
            while refs:
                if interrupt.signal:
                    yield from self._stop(refs, log_dir)
                    return
                ready, _ = ray.wait(list(refs), num_returns=1, timeout=POLL_S * 5)
                for ref in ready:
                    yield self._record(ref, refs.pop(ref), log_dir)
        finally:
            if started:
                ray.shutdown()

    def _stop(self, refs: dict, log_dir: Path):
        """Ctrl-C: the runs that have finished are collected and stored as they ended (ok, failed, skipped); the
        others are cancelled and recorded `interrupted`. A task that finishes between the check and its cancel
        still returns its result (cancelling a finished task does nothing), so it is collected too."""
        ray = self.ray
        if not refs:
            return
        finished, _ = ray.wait(list(refs), num_returns=len(refs), timeout=0)
        for ref in finished:
            yield self._record(ref, refs.pop(ref), log_dir)
        for ref in refs:
            ray.cancel(ref, force=True)
        ended, _ = ray.wait(list(refs), num_returns=len(refs), timeout=STOP_GRACE_S) if refs else ([], [])
        for ref, spec in refs.items():
            out = None
            if ref in ended:
                try:
                    out = ray.get(ref)
                except Exception:  # TaskCancelledError, or the worker died as it was cancelled
                    out = None
            yield self._record(ref, spec, log_dir, out) if out else \
                record_of_dead_worker(spec, None, "", "", "interrupted")

    def _record(self, ref, spec: dict, log_dir: Path, out: dict | None = None) -> dict:
        ray = self.ray
        log_dir.mkdir(parents=True, exist_ok=True)
        log_path = log_dir / log_name(spec)
        try:
            out = out or ray.get(ref)
        except Exception as exc:  # the Ray side failed: WorkerCrashedError, NodeDiedError, OutOfMemoryError, ...
            log_path.write_text(f"{type(exc).__name__}: {exc}\n")
            cause = type(exc).__name__ if type(exc).__module__.startswith("ray") else f"{type(exc).__name__}: {exc}"
            record = record_of_dead_worker(spec, None, "", f"the Ray task failed ({cause})", None)
            record["error"] = f"Ray task failed: {cause} (not retried)"
            record["info"]["log"] = str(log_path)
            return record
        log_path.write_text(out["log"])
        record = out["record"] or record_of_dead_worker(spec, out["partial"], out["log"][-LOG_TAIL_CHARS:],
                                                        out["how"], out["reason"])
        record.setdefault("info", {}).update(log=str(log_path), executed_on=out["where"])
        return record
