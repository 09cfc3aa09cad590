"""How workers start (bench/execute/runner.py): forked from a pre-imported server by default, with a cold process's
memory figures; the allocator setting every worker gets."""
import multiprocessing
import os

from bench.execute import allocator, runner


# What a forked run finds imported before it imports anything itself; `exec` (builtins) is the target so that
# unpickling it imports nothing in the child.
SEEN_AT_START = """
import json, os, sys
modules = sorted(sys.modules)
torch = sys.modules.get("torch")
json.dump({"modules": modules, "parent": os.getppid(),
           "cuda_initialised": torch is not None and torch.cuda.is_initialized()}, open(PATH, "w"))
"""


def test_the_fork_server_is_the_default_and_a_forked_run_starts_with_what_every_run_imports_only(monkeypatch,
                                                                                                   tmp_path):
    """A process started as the runner starts a worker (its context: the fork server and what it preloads) finds
    the worker and its libraries imported, and nothing that only some runs import: seqeval (scikit-learn) or one
    model family's code would sit in every forked run's memory (bench/execute/preload.py)."""
    import json
    monkeypatch.delenv("BENCH_WORKER_START", raising=False)
    assert runner.start_method() == "forkserver"
    path = tmp_path / "seen.json"
    proc = runner._context().Process(target=exec, args=(SEEN_AT_START, {"PATH": str(path)}))
    proc.start()
    proc.join(300)
    assert proc.exitcode == 0
    seen = json.loads(path.read_text())
    modules = set(seen["modules"])
    assert seen["parent"] != os.getpid()  # forked by the server, not by this process
    assert {"bench.execute.worker", "torch", "transformers", "peft", "datasets"} <= modules
    assert not modules & {"seqeval", "sklearn"}
    assert not {m for m in modules if m.startswith(("transformers.models.bert", "transformers.models.mobilenet"))}
    # bitsandbytes: imported as a cold run imports it where torch has no CUDA; left to the runs where it has.
    from bench.execute.preload import cuda_build
    assert ("bitsandbytes" in modules) == (not cuda_build())
    assert seen["cuda_initialised"] is False


def test_with_a_cuda_torch_the_fork_server_leaves_bitsandbytes_to_the_runs(tmp_path):
    """bitsandbytes' import initialises CUDA, and a run forked from a server that had done so could not use the
    GPU: with a CUDA build of torch (faked here) the server imports without it, and an int8 run still gets it."""
    import subprocess
    import sys
    code = """
import sys, torch
torch.version.cuda = "13.0"  # what bench.execute.preload reads to tell a CUDA build
import bench.execute.preload
assert "bitsandbytes" not in sys.modules and "peft" in sys.modules and "bench.execute.worker" in sys.modules
assert torch.cuda.is_initialized() is False
from transformers import AutoModelForSequenceClassification
from methods import get_method
from methods.base import RunContext
from suites.smoke import SENTIMENT, tiny_bert_dir
ctx = RunContext(task=SENTIMENT, budget=SENTIMENT.budget("smoke"), total_steps=2, device=torch.device("cpu"),
                 head_names=["classifier"])
method = get_method("int8-lora")
model = method.apply(AutoModelForSequenceClassification.from_pretrained(tiny_bert_dir(), num_labels=2,
                     **method.load_kwargs(ctx)), ctx)
assert "bitsandbytes" in sys.modules
layers = {type(m).__module__ + "." + type(m).__name__ for n, m in model.named_modules() if n.endswith("query")}
assert layers == {"peft.tuners.lora.bnb.Linear8bitLt"}, layers  # peft's int8 LoRA layer, as in a cold process
print(model(input_ids=torch.tensor([[2, 7, 3]])).logits.shape)
"""
    env = {**os.environ, "BENCH_CACHE_DIR": str(tmp_path)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "torch.Size([1, 2])" in out.stdout


def _child_rss_file_mb(queue):
    runner._map_server_pages(os.getppid())
    for line in open("/proc/self/status"):
        if line.startswith("RssFile:"):
            queue.put(int(line.split()[1]) / 1024)


def test_a_forked_worker_maps_the_library_pages_its_parent_had_mapped():
    """fork leaves file-backed pages out of the child's RSS until touched; the child maps them again."""
    status = dict(line.split(":", 1) for line in open("/proc/self/status"))
    parent = int(status["RssFile"].split()[0]) / 1024
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    proc = ctx.Process(target=_child_rss_file_mb, args=(queue,))
    proc.start()
    child = queue.get(timeout=60)
    proc.join()
    assert child >= 0.9 * parent, (child, parent)


def _freed_block_kept_mb(queue) -> None:
    """In a fresh process: RSS that a freed 96 MB block leaves behind under the training setting, then under the
    inference window's."""
    import ctypes

    from bench.meters.windows import current_rss_mb, release_freed_memory
    libc = ctypes.CDLL("libc.so.6")
    libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
    libc.free.argtypes = [ctypes.c_void_p]
    size = 96 * 2**20

    def kept_after_use() -> float:
        before = current_rss_mb()
        block = libc.malloc(size)
        ctypes.memset(block, 1, size)  # touch every page
        libc.free(block)
        return current_rss_mb() - before

    settings = [allocator.tune_allocator(allocator.MALLOPT), kept_after_use()]
    settings.append(allocator.tune_allocator(allocator.INFERENCE_MALLOPT))
    release_freed_memory()  # as the worker does when a window opens
    queue.put(settings + [kept_after_use()])


def test_workers_keep_freed_memory_for_reuse_in_training_and_hand_it_back_for_inference():
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    proc = ctx.Process(target=_freed_block_kept_mb, args=(queue,))
    proc.start()
    training, kept_training, inference, kept_after = queue.get(timeout=60)
    proc.join()
    assert training == inference == allocator.ALLOCATOR
    assert kept_training > 90  # training: the heap keeps it, no page faults when the next batch needs it
    assert abs(kept_after) < 10  # inference window: handed back when freed, RSS is what is live


def test_a_forked_run_gets_the_runners_environment_of_now_not_the_servers(monkeypatch):
    """The fork server keeps the environment it started with; a run gets the runner's as it starts: variables
    unset since are dropped, new ones arrive, and what the server's imports set stays."""
    import types
    monkeypatch.setitem(__import__("sys").modules, "bench.execute.preload",
                        types.SimpleNamespace(STARTED_WITH={"GONE": "1", "KEPT": "1"}))
    for name, value in {"GONE": "1", "KEPT": "1", "SET_BY_AN_IMPORT": "1"}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("NEW", raising=False)
    runner._adopt_environment({"KEPT": "2", "NEW": "3"})
    assert "GONE" not in os.environ
    assert (os.environ["KEPT"], os.environ["NEW"], os.environ["SET_BY_AN_IMPORT"]) == ("2", "3", "1")


def test_two_grids_in_one_session_each_run_with_their_own_environment(tmp_path):
    """The tests' CLI calls share one fork server (conftest.run_bench): a fault injected into one grid's
    environment reaches its run and not the next grid's."""
    from conftest import run_bench
    args = ["run", "--suite", "smoke", "--tasks", "sentiment", "--methods", "head", "--no-report"]
    faulty = run_bench(*args, "--out", str(tmp_path / "a"), env={"BENCH_FAULT": "raise:head"})
    clean = run_bench(*args, "--out", str(tmp_path / "b"), check=True)
    from bench.results.store import ResultStore
    assert faulty.returncode == 1 and "injected failure for head" in faulty.stderr
    assert [r["status"] for r in ResultStore(tmp_path / "a").records()] == ["failed"]
    assert [r["status"] for r in ResultStore(tmp_path / "b").records()] == ["ok"], clean.stderr
