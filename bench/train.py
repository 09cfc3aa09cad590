"""The one training loop every method shares: plain PyTorch, AdamW, linear warm-up/decay.

AdamW is torch's fused implementation wherever it runs (CPU and CUDA in this torch): the default foreach
step plus clipping took 97 of a 233 ms full fine-tuning step on MiniLM, the fused one 31 ms (STACK.md), and
HF Trainer, what users would run instead, uses it too. The choice is recorded in every run's config id.
"""
from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from transformers import get_linear_schedule_with_warmup

from bench.measure import StepTimer
from suites.base import to_device


@dataclass
class TrainStats:
    steps: int = 0
    final_loss: float = float("nan")  # what the optimiser minimised (AdaLoRA adds a regulariser)
    final_task_loss: float = float("nan")  # cross-entropy alone, comparable across methods
    timed_steps: int = 0
    timed_examples: int = 0
    timed_tokens: int = 0
    timed_wall_s: float = 0.0
    timed_cpu_s: float = 0.0
    timed_data_s: float = 0.0  # producing the timed steps' batches (decode, augment, collate), outside the step timer
    loss_curve: list[tuple[int, float]] = field(default_factory=list)
    optimizer: str = ""  # the AdamW implementation that ran


def task_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy for sequence ([B, C] vs [B]) and token ([B, T, C] vs [B, T]) classification."""
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), labels.reshape(-1), ignore_index=-100)


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
          warmup_steps: int, log_every: int, progress=None) -> TrainStats:
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=0.01, **optimizer_kwargs(params, device))
    stats = TrainStats(optimizer="adamw-fused" if optimizer.defaults.get("fused") else "adamw-foreach")
    scheduler = get_linear_schedule_with_warmup(optimizer, int(0.06 * total_steps), total_steps)
    timer = StepTimer(device)
    task.train_mode(model)
    running = []
    for step, (batch, data_s) in enumerate(fetch_timed(batches), start=1):
        timed = step > warmup_steps
        stats.timed_data_s += data_s if timed else 0.0
        with timer.section(timed):
            batch = to_device(batch, device)
            out = method.forward(model, batch)
            out.loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            optimizer.step()
            method.on_step(model, step)  # AdaLoRA: after step(), before zero_grad()
            optimizer.zero_grad(set_to_none=True)
            scheduler.step()
        if timed:
            stats.timed_steps += 1
            stats.timed_examples += len(batch["labels"])
            stats.timed_tokens += task.real_tokens(batch)
        loss = out.loss.item()
        tl = task_loss(out.logits.detach(), batch["labels"]).item()
        if loss != loss:  # NaN: stop now rather than report a metric from a broken model
            raise FloatingPointError(f"training loss became NaN at step {step}")
        running.append(tl)
        if step % log_every == 0 or step == total_steps:
            stats.loss_curve.append((step, sum(running) / len(running)))
            running = []
        stats.steps, stats.final_loss, stats.final_task_loss = step, loss, tl
        if progress is not None:
            progress.update(1)
            progress.set_postfix(loss=f"{tl:.3f}", refresh=False)
    stats.timed_wall_s, stats.timed_cpu_s = timer.wall, timer.cpu
    return stats
