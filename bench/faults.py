"""Fault injection for tests, driven by the BENCH_FAULT environment variable (never set in real use).

BENCH_FAULT is a comma-separated list of `action:method[:arg]`:
  raise:lora      - the lora run raises an error after loading (-> a `failed` row)
  crash:lora      - the lora worker process dies hard (-> a `failed` row written by the parent)
  kill:lora       - the lora worker is killed by SIGKILL (as the out-of-memory killer does)
  killparent:lora - the process that started the lora worker (under Ray: the Ray worker) is killed
  hang:lora       - the lora worker hangs before training (-> `--timeout` gives a `failed: timeout` row)
  sleep:lora:0.05 - every lora training step sleeps 0.05 s (a planted speed regression)
  lr0:lora        - lora trains with learning rate 0 (a planted accuracy regression)
"""
from __future__ import annotations

import os
import signal
import time


def _faults(method: str) -> dict[str, str]:
    out = {}
    for item in filter(None, os.environ.get("BENCH_FAULT", "").split(",")):
        action, _, rest = item.partition(":")
        target, _, arg = rest.partition(":")
        if target == method:
            out[action] = arg
    return out


def before_training(method: str) -> None:
    f = _faults(method)
    if "raise" in f:
        raise RuntimeError(f"injected failure for {method} (BENCH_FAULT)")
    if "crash" in f:
        os._exit(77)
    if "kill" in f:
        os.kill(os.getpid(), signal.SIGKILL)
    if "killparent" in f:
        os.kill(os.getppid(), signal.SIGKILL)
    if "hang" in f:
        while True:
            time.sleep(3600)


def after_step(method: str) -> None:
    seconds = _faults(method).get("sleep")
    if seconds:
        time.sleep(float(seconds))


def learning_rate(method: str, lr: float) -> float:
    return 0.0 if "lr0" in _faults(method) else lr
