"""Fault injection for tests, driven by the BENCH_FAULT environment variable (never set in real use).

With BENCH_FAULT unset, `wrap` returns the method untouched: nothing here runs on a real run, and nothing
here sits in the training loop. With it set, the targeted method is wrapped in a FaultyMethod that misbehaves.

BENCH_FAULT is a comma-separated list of `action:method[:arg]`:
  raise:lora      - the lora run raises an error after loading (-> a `failed` row)
  crash:lora      - the lora worker process dies hard (-> a `failed` row written by the parent)
  kill:lora       - the lora worker is killed by SIGKILL (as the out-of-memory killer does)
  killparent:lora - the process that started the lora worker (under Ray: the Ray worker) is killed
  hang:lora       - the lora worker hangs before training (-> `--timeout` gives a `failed: timeout` row)
  sleep:lora:0.05 - every lora training step sleeps 0.05 s (a planted speed regression)
  lr0:lora        - lora trains on zero gradients, as at learning rate 0 (a planted accuracy regression
                    that leaves the run's configuration unchanged)
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


def wrap(method):
    """The method itself, or a FaultyMethod around it when BENCH_FAULT targets it."""
    faults = _faults(method.name)
    return FaultyMethod(method, faults) if faults else method


class FaultyMethod:
    def __init__(self, inner, faults: dict[str, str]):
        self.inner, self.faults = inner, faults

    def __getattr__(self, name):  # everything not overridden below is the real method's
        return getattr(self.inner, name)

    def apply(self, model, ctx):
        model = self.inner.apply(model, ctx)
        if "raise" in self.faults:
            raise RuntimeError(f"injected failure for {self.inner.name} (BENCH_FAULT)")
        if "crash" in self.faults:
            os._exit(77)
        if "kill" in self.faults:
            os.kill(os.getpid(), signal.SIGKILL)
        if "killparent" in self.faults:
            os.kill(os.getppid(), signal.SIGKILL)
        if "hang" in self.faults:
            while True:
                time.sleep(3600)
        return model

    def forward(self, model, batch):
        out = self.inner.forward(model, batch)
        if "lr0" in self.faults:
            out.loss = out.loss * 0.0  # zero gradients: AdamW then moves no weight
        return out

    def on_step(self, model, step: int) -> None:
        self.inner.on_step(model, step)
        if self.faults.get("sleep"):
            time.sleep(float(self.faults["sleep"]))
