"""What the fork server imports once (bench/execute/runner.py): what every run imports, and never CUDA.

A process forked from one that has initialised CUDA cannot use CUDA ("Cannot re-initialize CUDA in forked
subprocess"), and a server that had would fail every GPU run. peft imports bitsandbytes where it is installed,
and bitsandbytes' import asks torch for each GPU's compute capability, which initialises CUDA. So with a CUDA
build of torch the server imports with bitsandbytes hidden (and torch's CUDA checks through NVML); a run that
needs it (int8) imports it in its own process. With a CPU-only torch nothing can initialise CUDA, and the server
imports bitsandbytes as a cold run would (48 MB of RSS that every run carries), so forked runs read like cold ones.
"""
from __future__ import annotations

import contextlib
import os
import sys

STARTED_WITH = dict(os.environ)  # the runner's environment when it started the server (runner._adopt_environment)
MODULES = ["bench.execute.worker", "peft", "datasets"]  # what every run imports (README: "Start-up")
CUDA_INITIALISING = ["bitsandbytes"]  # imports that initialise CUDA where torch has it


@contextlib.contextmanager
def hidden(names: list[str]):
    """`import name` raises ImportError inside (peft then goes on without it); importable again after."""
    absent = [n for n in names if n not in sys.modules]
    sys.modules.update({n: None for n in absent})
    try:
        yield
    finally:
        for n in absent:
            del sys.modules[n]


def preload(hide: list[str]) -> None:
    import importlib
    with hidden(hide):
        for name in MODULES:
            importlib.import_module(name)
    if hide:  # peft caches whether bitsandbytes is there: an answer given while hidden must not reach the runs
        from peft import import_utils
        import_utils.is_bnb_available.cache_clear()
        import_utils.is_bnb_4bit_available.cache_clear()


def cuda_build() -> bool:
    import torch
    return bool(torch.version.cuda or torch.version.hip)


if cuda_build():
    os.environ.setdefault("PYTORCH_NVML_BASED_CUDA_CHECK", "1")  # is_available() without initialising CUDA
    preload(CUDA_INITIALISING)
else:
    preload([])
