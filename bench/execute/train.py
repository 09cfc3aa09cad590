"""The one training loop every method shares: plain PyTorch, AdamW, linear warm-up/decay.

AdamW is torch's fused implementation wherever it runs (CPU and CUDA in this torch): the default foreach
step plus clipping took 97 of a 233 ms full fine-tuning step on MiniLM, the fused one 31 ms (STACK.md), and
HF Trainer, what users would run instead, uses it too. The choice is recorded in every run's config id.
"""
from __future__ import annotations

import contextlib
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

import torch
from transformers import Trainer, get_linear_schedule_with_warmup  # imported with the worker, not in a window

from bench.meters import flops
from bench.meters.energy import EnergyMeter
from bench.meters.precision import autocast, grad_scaler
from bench.meters.windows import WindowTimer
from bench.results.identity import WEIGHT_DECAY
from suites.base import to_device


@dataclass
class TrainStats:
    steps: int = 0
    final_loss: float = float("nan")  # what the optimiser minimised (AdaLoRA adds a regulariser)
    final_task_loss: float = float("nan")  # cross-entropy alone, comparable across methods
    timed_steps: int = 0
    timed_examples: int = 0
    timed_tokens: int = 0
    timed_units: int = 0  # padded tokens (text) or examples (images): what a step's FLOPs scale with
    timed_wall_s: float = 0.0  # the timed windows, batch preparation included
    timed_cpu_s: float = 0.0
    timed_data_s: float = 0.0  # of timed_wall_s: producing the batches (decode, augment, collate)
    windows: int = 0
    flops_per_step: float = 0.0  # FLOPs a step spends on the weights alone, whatever the batch (BOFT)
    flops_per_unit: float | None = None  # forward + backward FLOPs per padded token (or example), counted
    energy_j: float | None = None  # over the timed windows; None: see energy_source
    energy_source: str = ""
    contention: float | None = None  # share of the CPU other processes took in the timed windows (0..1)
    contention_unavailable: str | None = None  # why there is no contention figure
    gpu_other_processes: int | None = None  # CUDA: the most other processes on the GPU at a window's end
    stopped_early: bool = False  # on_step_end asked to stop
    loss_curve: list[tuple[int, float]] = field(default_factory=list)
    optimizer: str = ""  # the AdamW implementation that ran


def padded_units(batch: dict, added_positions: int = 0) -> int:
    """What a step's FLOPs scale with: padded token positions, with the virtual tokens a prompt method prepends
    to each input (counted per token alone, a short first batch made prompt tuning's FLOPs per example read
    twice too high), or examples (images)."""
    ids = batch.get("input_ids")
    return ids.shape[0] * (ids.shape[-1] + added_positions) if ids is not None else len(batch["labels"])


def parameter_groups(model: torch.nn.Module) -> list[dict]:
    """AdamW's weight decay as HF Trainer applies it (its own rule): not on biases and normalisation weights,
    which are exactly what BitFit and LN tuning train, so decaying them would handicap those methods."""
    decay = set(Trainer.get_decay_parameter_names(None, model))  # reads nothing from the trainer itself
    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    groups = [{"params": [p for n, p in trainable if n in decay], "weight_decay": WEIGHT_DECAY},
              {"params": [p for n, p in trainable if n not in decay], "weight_decay": 0.0}]
    return [g for g in groups if g["params"]]


def optimizer_kwargs(params: list, device: torch.device) -> dict:
    """fused=True where every trainable tensor is a floating-point tensor on a device fused AdamW supports."""
    ok = device.type in ("cpu", "cuda") and all(p.is_floating_point() and p.device.type == device.type
                                                for p in params)
    return {"fused": True} if ok else {"foreach": True}


def fetch_timed(batches: Iterable) -> Iterator[tuple[object, float]]:
    """Yield (batch, seconds it took to produce): shows when data preparation, not the model, sets the pace."""
    it = iter(batches)
    while True:
        t0 = time.perf_counter()
        try:
            batch = next(it)
        except StopIteration:
            return
        yield batch, time.perf_counter() - t0


def train(model, batches, *, task, method, total_steps: int, lr: float, device: torch.device,
          untimed_steps: int, log_every: int, progress=None, precision: str = "fp32",
          on_step_end=None) -> TrainStats:
    """Train for the batches given. Time runs in windows of steps, synchronised with the device only at their
    ends: a window closes at each loss log point (reading losses syncs the GPU) and around `on_step_end(step,
    model) -> bool`, called after every optimizer step outside the timed windows (True stops training). The
    first max(untimed_steps, 1) steps are untimed; the first two of them have their forward + backward FLOPs counted."""
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(parameter_groups(model), lr=lr, **optimizer_kwargs(params, device))
    stats = TrainStats(optimizer="adamw-fused" if optimizer.defaults.get("fused") else "adamw-foreach")
    scheduler = get_linear_schedule_with_warmup(optimizer, int(0.06 * total_steps), total_steps)
    scaler = grad_scaler(device, precision)
    timer, energy = WindowTimer(device), EnergyMeter(device)
    untimed = max(untimed_steps, 1)  # the FLOP counter slows the steps it watches: never time them
    counted = []  # (padded units, FLOPs) of the counted steps: the first two untimed ones
    task.train_mode(model)
    running, pending = [], []  # losses as tensors until a window closes: .item() per step would sync the GPU

    def flush():
        values = torch.stack([torch.stack([a.float(), b.float()]) for _, a, b in pending]).tolist()
        nonlocal running
        for (step, _, _), (loss, tl) in zip(pending, values):
            if loss != loss:  # NaN: stop rather than report a metric from a broken model
                raise FloatingPointError(f"training loss became NaN at step {step}")
            running.append(tl)
            if step % log_every == 0 or step == total_steps:
                stats.loss_curve.append((step, sum(running) / len(running)))
                running = []
            stats.steps, stats.final_loss, stats.final_task_loss = step, loss, tl
        if progress is not None:
            progress.update(len(pending))
            progress.set_postfix(loss=f"{stats.final_task_loss:.3f}", refresh=False)
        pending.clear()

    for step, (batch, data_s) in enumerate(fetch_timed(batches), start=1):
        timed = step > untimed  # a timed step's window opened before its batch was fetched (see the end)
        if timed:
            stats.timed_steps += 1
            stats.timed_data_s += data_s
            stats.timed_examples += len(batch["labels"])
            stats.timed_tokens += task.real_tokens(batch)  # on the host copy: no device sync
            stats.timed_units += padded_units(batch, method.added_positions)
        counting = step <= min(untimed, 2)  # untimed only: the counter slows the steps it watches
        on_device = to_device(batch, device)
        with flops.counter() if counting else contextlib.nullcontext() as counter:
            with autocast(device, precision):
                out = method.forward(model, on_device)
            (scaler.scale(out.loss) if scaler else out.loss).backward()
        if counting:
            counted.append((padded_units(batch, method.added_positions), counter.get_total_flops()))
        if scaler:
            scaler.unscale_(optimizer)  # clip the true gradients
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        if scaler:
            scaler.step(optimizer)  # skipped when the scaled gradients overflowed
            scaler.update()
        else:
            optimizer.step()
        method.on_step(model, step)  # AdaLoRA: after step(), before zero_grad()
        optimizer.zero_grad(set_to_none=True)
        scheduler.step()
        pending.append((step, out.loss.detach(), task.loss(out.logits.detach(), on_device["labels"])))
        if step % log_every == 0 or step == total_steps or on_step_end is not None or not timed:
            timer.stop()
            energy.stop()
            flush()
            if on_step_end is not None:
                if on_step_end(step, model):
                    stats.stopped_early = True
                    break
                task.train_mode(model)  # the hook may have evaluated
        if untimed <= step < total_steps and not timer.running:  # the next batch's preparation counts in its step's time
            timer.start()
            energy.start()
    timer.stop()
    energy.stop()
    if pending:
        flush()
    stats.timed_wall_s, stats.timed_cpu_s, stats.windows = timer.wall, timer.cpu, timer.windows
    stats.energy_j, stats.energy_source = energy.joules, energy.source
    stats.contention, stats.contention_unavailable = timer.contention, timer.contention_unavailable
    stats.gpu_other_processes = timer.gpu_other_processes
    stats.flops_per_unit, stats.flops_per_step = split_flops(counted)
    return stats


def split_flops(counted: list[tuple[int, float]]) -> tuple[float | None, float]:
    """(FLOPs per padded unit, FLOPs per step) from counted (units, FLOPs) steps. Most FLOPs grow with the batch,
    but some methods also compute on their weights once per step, whatever the batch (BOFT multiplies out its
    butterfly factors): charged per unit, a short first batch made BOFT's MFU read 0.72. Two steps of different
    sizes separate the two parts; otherwise (or where attention's growth makes the fit's constant negative)
    everything is charged per unit."""
    counted = [(u, f) for u, f in counted if u and f]
    if len(counted) >= 2 and counted[0][0] != counted[1][0]:
        (u1, f1), (u2, f2) = counted[:2]
        per_unit = (f2 - f1) / (u2 - u1)
        per_step = f1 - per_unit * u1
        if per_unit > 0 and per_step > 0.01 * f1:  # a constant under 1% of a step is attention's curvature
            return per_unit, per_step
    if not counted:
        return None, 0.0
    return sum(f for _, f in counted) / sum(u for u, _ in counted), 0.0
