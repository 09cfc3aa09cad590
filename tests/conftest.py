import os
import subprocess
import sys
from pathlib import Path

import pytest

# Tests never reach the Hub: fail fast instead of retrying for ~20 s.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True, scope="session")
def isolated_from_the_user(tmp_path_factory):
    """Tests never write into the user's history database or caches and never inherit injected faults; workers
    are forked from a pre-imported server (BENCH_WORKER_START=forkserver: well under a second per run instead of
    ~6 s of imports), except where a test asks for the default cold start."""
    with pytest.MonkeyPatch.context() as mp:
        for name in ("BENCH_HISTORY_DB", "BENCH_FAULT"):
            mp.delenv(name, raising=False)
        mp.setenv("BENCH_CACHE_DIR", str(tmp_path_factory.mktemp("bench-cache")))
        mp.setenv("BENCH_TUNED_DIR", str(tmp_path_factory.mktemp("tuned")))  # never the project's tuned rates
        mp.setenv("HF_DATASETS_CACHE", str(tmp_path_factory.mktemp("datasets-cache")))
        mp.setenv("BENCH_WORKER_START", "forkserver")
        yield


def run_bench(*args, env=None, check=False, fresh_process=False) -> subprocess.CompletedProcess:
    """Run the real CLI (`bench.cli.main`, what `python -m bench` calls) and return its exit code and output.

    In this process by default, so that every grid of the session forks its runs from one fork server that
    imported torch, transformers and peft once (~4 s saved per call; each run still gets a fresh process, with
    this call's environment). `fresh_process=True` runs `python -m bench` in a subprocess, as a user would: for
    what one process cannot share (Ray, another worker start method)."""
    if fresh_process:
        proc = subprocess.run([sys.executable, "-m", "bench", *args], cwd=REPO, env={**os.environ, **(env or {})},
                              capture_output=True, text=True, timeout=900)
    else:
        proc = _run_in_process(list(args), env or {})
    if check and proc.returncode != 0:
        raise AssertionError(f"bench {' '.join(args)} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}")
    return proc


def _run_in_process(args: list[str], env: dict) -> subprocess.CompletedProcess:
    import contextlib
    import io
    import traceback

    from bench import cli
    stdout, stderr = io.StringIO(), io.StringIO()
    with pytest.MonkeyPatch.context() as mp, contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        for name, value in env.items():
            mp.setenv(name, value)
        mp.chdir(REPO)
        try:
            code = cli.main(args)
        except SystemExit as exc:  # argparse's usage errors
            code = exc.code if isinstance(exc.code, int) else 1
        except Exception:  # what the interpreter would print before exiting 1
            traceback.print_exc()
            code = 1
    return subprocess.CompletedProcess(["python", "-m", "bench", *args], code, stdout.getvalue(), stderr.getvalue())


@pytest.fixture(scope="session")
def smoke_grid(tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    """One `bench run --suite smoke`: every method on every smoke task (sentiment, ner, images), with its report,
    shared by every test that only reads a complete grid. Tests must not write into it. The images task needs
    the local data and models (BENCH_DATA_DIR / BENCH_MODEL_DIR); without them its runs are `skipped`."""
    out = tmp_path_factory.mktemp("smoke-grid") / "all"
    # two runs at once: the grid is start-up and evaluation bound (37 s against 54 s one at a time)
    return out, run_bench("run", "--suite", "smoke", "--out", str(out), "--parallel", "2", check=True)


def applies(method: str, family: str = "transformer", device: str = "cpu") -> bool:
    """Whether a registered method runs on this architecture family and device (else it is recorded skipped)."""
    from methods import METHODS
    spec = METHODS[method]
    return family not in spec.not_on and (not spec.devices or device in spec.devices)


def smoke_table(smoke_grid, task: str):
    """The wide table of one smoke task from the shared grid."""
    import pandas as pd
    wide = pd.read_parquet(smoke_grid[0] / "results_wide.parquet")
    return wide[wide.task == task].reset_index(drop=True)


@pytest.fixture(scope="session")
def data_dir() -> Path:
    value = os.environ.get("BENCH_DATA_DIR")
    if not value or not Path(value).is_dir():
        pytest.skip("real data not available: set BENCH_DATA_DIR (CI uses ../shared/data)")
    return Path(value)


@pytest.fixture(scope="session")
def model_dir() -> Path:
    value = os.environ.get("BENCH_MODEL_DIR")
    if not value or not Path(value).is_dir():
        pytest.skip("local models not available: set BENCH_MODEL_DIR (CI uses ../shared/models)")
    return Path(value)
