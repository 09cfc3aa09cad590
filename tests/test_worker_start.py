"""How workers start (bench/runner.py): forked from a pre-imported server by default, with a cold process's
memory figures; the allocator setting every worker gets."""
import multiprocessing
import os

from bench import runner


def test_the_fork_server_is_the_default_and_preloads_only_what_every_run_imports(monkeypatch):
    monkeypatch.delenv("BENCH_WORKER_START", raising=False)
    assert runner.start_method() == "forkserver"
    # seqeval (scikit-learn, scipy) or one model family's code would sit in every forked run's memory.
    assert not any(m.startswith(("seqeval", "sklearn", "transformers.models")) for m in runner.PRELOAD)


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


def test_workers_keep_freed_memory_for_reuse():
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    proc = ctx.Process(target=lambda: queue.put(runner.tune_allocator()))
    proc.start()
    assert queue.get(timeout=60) == runner.ALLOCATOR
    proc.join()
