"""`--executor ray` (skipped without Ray; CI installs the extra): same rows as local, faults as failed rows,
GPUs handed out one per run, Ctrl-C leaves tables and no process behind."""
import os
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest
from conftest import REPO, run_bench, smoke_table

from bench.results.store import ResultStore

ray = pytest.importorskip("ray", reason="Ray is an optional extra: pip install -e '.[ray]'")

RAY_ENV = {"RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "disabled"}


@pytest.fixture(scope="module")
def ray_env(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ray")
    with pytest.MonkeyPatch.context() as mp:
        for k, v in {**RAY_ENV, "RAY_TMPDIR": str(tmp)}.items():
            mp.setenv(k, v)
        yield


def _workers() -> list[str]:
    out = subprocess.run(["ps", "-eo", "pid,args"], capture_output=True, text=True).stdout
    return [line for line in out.splitlines() if "bench.execute.worker" in line]


def test_a_smoke_grid_on_ray_gives_the_rows_local_gives(ray_env, smoke_grid, tmp_path):
    proc = run_bench("run", "--suite", "smoke", "--tasks", "sentiment", "--methods", "full,lora",
                     "--executor", "ray", "--cpus-per-run", "1", "--out", str(tmp_path), "--no-report", check=True,
                     fresh_process=True)
    ray_rows = pd.read_parquet(tmp_path / "results_wide.parquet").set_index("method")
    local = smoke_table(smoke_grid, "sentiment").set_index("method").loc[ray_rows.index]
    assert (ray_rows.status == "ok").all(), ray_rows[["status", "error"]]
    assert (ray_rows.config_id == local.config_id).all()  # the same configurations ...
    assert (ray_rows.accuracy == local.accuracy).all()  # ... give the same results
    assert (ray_rows.trainable_params == local.trainable_params).all()
    records = ResultStore(tmp_path).records()
    assert all(r["info"]["executed_on"]["cpus"] == 1 and r["info"]["executed_on"]["hostname"] for r in records)
    assert all(r["env"]["torch_threads"] == 1 for r in records)  # threads follow the reservation
    assert not _workers(), proc.stderr


def test_faults_are_failed_rows_and_gpus_are_handed_out_one_per_run(ray_env, tmp_path):
    """In-process, on an embedded instance with two fake GPUs: a killed run, a crashed Ray worker, a good run."""
    import methods
    from bench.execute.plan import GridSettings, configure
    from bench.execute.ray_executor import RayExecutor
    from bench.execute.runner import plan, run_grid
    from suites import get_task
    task = get_task("smoke", "sentiment")
    settings = GridSettings(budget="quick", device="cpu")
    runs = [configure(task, m, settings) for m in methods.resolve(["head", "lora", "bitfit"])]
    os.environ["BENCH_FAULT"] = "kill:lora,killparent:bitfit"
    try:
        executor = RayExecutor(cpus_per_run=1, gpus_per_run=1, init_kwargs={"num_gpus": 2})
        outcome = run_grid(plan(runs, [0]), tmp_path, executor=executor)
    finally:
        del os.environ["BENCH_FAULT"]
    by = {r["method"]: r for r in outcome.records}
    assert by["head"]["status"] == "ok"
    assert by["lora"]["status"] == "failed" and "killed by SIGKILL" in by["lora"]["error"]
    assert by["bitfit"]["status"] == "failed" and "WorkerCrashedError" in by["bitfit"]["error"]
    devices = {by[m]["info"]["executed_on"]["cuda_visible_devices"] for m in ("head", "lora")}
    assert devices <= {"0", "1"} and by["head"]["info"]["executed_on"]["gpus"] == 1
    assert len(ResultStore(tmp_path).records()) == 3 and not ray.is_initialized()


def test_ctrl_c_on_ray_writes_the_tables_and_leaves_no_process(ray_env, tmp_path):
    args = ["run", "--suite", "smoke", "--tasks", "sentiment", "--methods", "head,lora", "--executor", "ray",
            "--cpus-per-run", "1", "--out", str(tmp_path)]
    proc = subprocess.Popen([sys.executable, "-m", "bench", *args], cwd=REPO, text=True, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env={**os.environ, "BENCH_FAULT": "hang:lora,hang:head"})
    deadline = time.monotonic() + 120
    while len(_workers()) < 2 and time.monotonic() < deadline:
        time.sleep(0.2)
    time.sleep(1)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130 and "Traceback" not in stderr, stderr
    assert {r["status"] for r in ResultStore(tmp_path).records()} == {"interrupted"}
    assert (tmp_path / "results_wide.csv").is_file() and (tmp_path / "report.html").is_file()
    deadline = time.monotonic() + 10  # the workers are gone within seconds
    while _workers() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not _workers()


def test_a_killed_node_is_a_failed_row_and_the_other_run_completes(ray_env, tmp_path):
    """A two-node cluster (ray.cluster_utils.Cluster), one run on each; the second node dies mid-run."""
    import threading

    from ray.cluster_utils import Cluster

    import methods
    from bench.execute.plan import GridSettings, configure
    from bench.execute.ray_executor import RayExecutor
    from bench.execute.runner import plan, run_grid
    from suites import get_task
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    second = cluster.add_node(num_cpus=1)
    runs = [configure(get_task("smoke", "sentiment"), m, GridSettings(budget="quick", device="cpu"))
            for m in methods.resolve(["head", "lora"])]
    os.environ["BENCH_FAULT"] = "sleep:head:0.15,sleep:lora:0.15"  # ~5 s of training each: time to kill a node

    def kill_the_second_node():
        deadline = time.monotonic() + 90
        while len(_workers()) < 2 and time.monotonic() < deadline:
            time.sleep(0.2)
        cluster.remove_node(second)

    killer = threading.Thread(target=kill_the_second_node)
    try:
        ray.init(address=cluster.address)
        killer.start()
        outcome = run_grid(plan(runs, [0]), tmp_path, executor=RayExecutor(cpus_per_run=1, gpus_per_run=0))
    finally:
        del os.environ["BENCH_FAULT"]
        killer.join()
        ray.shutdown()
        cluster.shutdown()
    statuses = sorted((r["status"], r.get("error") or "") for r in outcome.records)
    assert [s for s, _ in statuses] == ["failed", "ok"], statuses
    assert "Ray task failed" in statuses[0][1] and ("NodeDiedError" in statuses[0][1]
                                                    or "WorkerCrashedError" in statuses[0][1]), statuses


class _FakeRay:
    """Just enough of Ray for RayExecutor.run: run `a` ends just as Ctrl-C comes, run `b` is still going."""

    class TaskCancelledError(Exception):
        pass

    def __init__(self, interrupt):
        self.interrupt, self.done, self.cancelled, self.specs = interrupt, {}, set(), {}

    def is_initialized(self):
        return True

    def nodes(self):
        return [{"Alive": True, "Resources": {"CPU": 2.0}}]

    def remote(self, fn):
        fake = self

        class Task:
            def options(self, **kwargs):
                return self

            def remote(self, spec, *args):
                fake.specs[spec["method"]] = spec
                return spec["method"]  # the ref
        return Task()

    def wait(self, refs, num_returns=1, timeout=None):
        if not self.interrupt.signal:  # the first wait: run a ends, and Ctrl-C comes before the driver collects it
            record = {**{k: self.specs["a"][k] for k in ("run_id", "invocation", "config_id", "suite", "task",
                                                          "method", "seed", "budget")},
                      "status": "ok", "metrics": {"accuracy": 0.9}, "info": {}}
            self.done["a"] = {"record": record, "partial": None, "how": "", "reason": None, "where": {}, "log": ""}
            self.interrupt.signal = "SIGINT"
            return [], list(refs)
        ready = [r for r in refs if r in self.done or r in self.cancelled]
        return ready[:num_returns], [r for r in refs if r not in ready[:num_returns]]

    def cancel(self, ref, force=False):
        if ref not in self.done:
            self.cancelled.add(ref)

    def get(self, ref, timeout=None):
        if ref in self.cancelled:
            raise self.TaskCancelledError(ref)
        return self.done[ref]


def test_ctrl_c_on_ray_stores_a_finished_run_as_it_ended(tmp_path, monkeypatch):
    from bench.execute import ray_executor
    from bench.execute.runner import Interrupt
    interrupt = Interrupt()
    monkeypatch.setattr(ray_executor, "import_ray", lambda: _FakeRay(interrupt))
    executor = ray_executor.RayExecutor(cpus_per_run=1, gpus_per_run=0)
    specs = [{"run_id": f"{m}-id", "invocation": "inv", "config_id": m, "suite": "smoke", "task": "sentiment",
              "method": m, "seed": 0, "budget": "smoke", "device": "cpu", "config": {}} for m in ("a", "b")]
    records = {r["method"]: r for r in executor.run(specs, tmp_path / "logs", False, None, interrupt)}
    assert records["a"]["status"] == "ok" and records["a"]["metrics"] == {"accuracy": 0.9}
    assert records["b"]["status"] == "interrupted" and executor.ray.cancelled == {"b"}
