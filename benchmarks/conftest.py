"""`make bench`: the harness's own overhead (pytest-benchmark). Not collected by `make test` (testpaths = tests)."""
import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True, scope="session")
def isolated(tmp_path_factory):
    """Never write into the user's caches or history; no injected faults."""
    with pytest.MonkeyPatch.context() as mp:
        for name in ("BENCH_HISTORY_DB", "BENCH_FAULT", "BENCH_WORKER_START"):
            mp.delenv(name, raising=False)
        mp.setenv("BENCH_CACHE_DIR", str(tmp_path_factory.mktemp("bench-cache")))
        yield


def local_dir(name: str) -> Path:
    value = os.environ.get(name)
    if not value or not Path(value).is_dir():
        pytest.skip(f"{name} not set (make bench sets it to ../shared/...)")
    return Path(value)
