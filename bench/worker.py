"""One run (task x method x seed) in its own process: load, apply method, train, evaluate, measure.

Invoked by the runner as `python -m bench.worker SPEC.json RESULT.json`. Always writes a record: a
`failed` or `skipped` one when something goes wrong, so the grid never loses a run silently.
"""
from __future__ import annotations

import json
import os
import random
import sys
import tempfile
import time
import traceback
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from bench import faults
from bench.env import environment
from bench.identity import IDENTITY
from bench.measure import PeakMemory, current_rss_mb, percentile, time_call_ms
from bench.runner import now, partial_path
from bench.train import train
from methods import SkipRun, build
from methods.base import RunContext, count_params, head_names
from methods.spec import MethodSpec
from suites import get_task
from suites.base import to_device


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SkipRun("device cuda requested but torch.cuda.is_available() is False")
    return device


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def execute(spec: dict, record: dict, checkpoint=lambda record: None) -> None:
    """Fill `record` in place, so whatever was measured before a failure is kept. `checkpoint(record)` saves
    it once the model and device are resolved, for the parent to use if this process dies."""
    wall0 = time.perf_counter()
    device = pick_device(spec["device"])
    record["device"] = str(device)
    record["env"] = environment(device)
    seed_everything(spec["seed"])
    task = get_task(spec["suite"], spec["task"])
    method = faults.wrap(build(MethodSpec(**spec["method_spec"])))  # the method itself unless a test injects faults
    budget = task.budget(spec["budget"])
    lr = spec["lr"]  # resolved by the parent: it is part of the config id
    record["config"] = spec.get("config", {})
    # What a reader of the record needs without the suite registry: the headline metric and the task's caveat.
    record["info"]["task"] = {"metric": task.metric, "note": task.note}
    record["info"]["lr_source"] = spec.get("lr_source")
    ref = spec.get("model") or task.default_model
    record["model"] = ref
    checkpoint(record)
    path = task.resolve_model(ref, Path(spec["model_dir"]) if spec.get("model_dir") else None)

    train_ds, eval_ds = task.load_data(Path(spec["data_dir"]) if spec.get("data_dir") else None, budget)
    steps = budget.steps(len(train_ds))
    ctx = RunContext(task=task, budget=budget, total_steps=steps, device=device, head_names=[])
    model, processor = task.load_model(path, **method.load_kwargs(ctx))
    if getattr(task, "eval_max_length", None):  # virtual tokens take positions from the model's table
        task.eval_max_length -= method.reserved_positions
    ctx.head_names = head_names(model)
    train_examples = task.encode(train_ds, processor, budget, train=True)
    eval_examples = task.encode(eval_ds, processor, budget, train=False)
    model = method.apply(model, ctx)
    task.after_method(model)
    if not getattr(model, "is_loaded_in_8bit", False):
        model.to(device)  # quantised models were placed at load time
    metrics = record["metrics"]
    metrics.update(count_params(model, ctx.head_names), lr=lr, steps=steps,
                   train_examples=len(train_examples), eval_examples=len(eval_examples))
    if method.uses_peft:  # checked equal to ours when the method was applied
        metrics["peft_trainable_params"], _ = model.get_nb_trainable_parameters()

    peak = PeakMemory(device)
    metrics["rss_loaded_mb"] = current_rss_mb()
    peak.reset()
    # Step progress goes to the run's log (or the terminal with --verbose); sparse when not a terminal.
    with tqdm(total=steps, desc=f"{task.name}/{method.name} train", unit="step",
              mininterval=0.5 if sys.stderr.isatty() else 15) as bar:
        stats = train(model, task.train_batches(train_examples, processor, budget, spec["seed"]), task=task,
                      method=method, total_steps=steps, lr=lr, device=device, warmup_steps=budget.warmup_steps,
                      log_every=budget.log_every, progress=bar)
    metrics.update(peak.read())
    metrics["peak_rss_increase_mb"] = metrics["peak_rss_mb"] - metrics["rss_loaded_mb"]
    record["info"]["peak_memory_source"] = peak.source
    record["loss_curve"] = stats.loss_curve
    record["info"]["optimizer"] = stats.optimizer
    metrics.update(train_loss=stats.final_loss, train_task_loss=stats.final_task_loss,
                   timed_steps=stats.timed_steps, train_wall_s=stats.timed_wall_s, train_cpu_s=stats.timed_cpu_s,
                   train_data_s=stats.timed_data_s)
    if stats.timed_steps:
        metrics["train_data_share"] = stats.timed_data_s / (stats.timed_data_s + stats.timed_wall_s)
        metrics["train_examples_per_s"] = stats.timed_examples / stats.timed_wall_s
        if stats.timed_tokens:  # image tasks have no tokens
            metrics["train_tokens_per_s"] = stats.timed_tokens / stats.timed_wall_s
    extra = method.finish(model, ctx)
    metrics.update(extra.get("metrics", {}))
    record["info"].update(extra.get("info", {}))

    model.eval()
    batches = task.eval_batches(eval_examples, processor, budget.eval_batch_size)
    t0 = time.perf_counter()
    metrics.update(task.evaluate(model, batches, device))
    eval_s = time.perf_counter() - t0
    metrics["eval_examples_per_s"] = len(eval_examples) / eval_s
    metrics["eval_batch_ms"] = 1000 * eval_s / len(batches)  # mean per batch at the evaluation batch size
    metrics.update(latency(model, task, eval_examples, processor, budget, device))
    merged = method.merged_copy(model)
    if merged is not None:  # what a deployed, merged adapter costs: no adapter detour per layer
        merged.eval()
        metrics.update({f"latency_merged_{k.removeprefix('latency_')}": v
                        for k, v in latency(merged, task, eval_examples, processor, budget, device).items()})
        del merged

    with tempfile.TemporaryDirectory() as tmp:
        method.save(model, Path(tmp) / "saved")
        metrics.update(saved_sizes(Path(tmp) / "saved"))
    metrics["wall_time_s"] = time.perf_counter() - wall0


def saved_sizes(folder: Path) -> dict:
    """Tensor bytes of what the method saved (the fair size: peft also writes a model card and JSON, which
    made a 3 kB head look larger than a 10 kB config file), and the whole folder beside it."""
    from safetensors.torch import load_file
    tensor_bytes = sum(t.nbytes for path in folder.rglob("*.safetensors") for t in load_file(path).values())
    folder_bytes = sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())
    return {"adapter_size_mb": tensor_bytes / 2**20, "adapter_tensor_mb": tensor_bytes / 2**20,
            "adapter_folder_mb": folder_bytes / 2**20}


@torch.inference_mode()
def latency(model, task, examples, processor, budget, device) -> dict:
    """Batch-1 forward latency over the first `latency_samples` eval examples, after 3 warm-up calls."""
    samples = [to_device(task.collate([e], processor), device) for e in examples[:budget.latency_samples]]
    inputs = [{k: v for k, v in s.items() if k != "labels"} for s in samples]
    for x in inputs[:3]:
        model(**x)
    times = [time_call_ms(lambda: model(**x), device) for x in inputs]
    return {"latency_p50_ms": percentile(times, 50), "latency_p95_ms": percentile(times, 95)}


def run(spec: dict, checkpoint=lambda record: None) -> dict:
    record = {k: spec.get(k) for k in IDENTITY}
    record.update(status="ok", error=None, model=spec.get("model"), device=spec.get("device"),
                  started_at=now(), metrics={}, info={}, loss_curve=[], env={})
    t0 = time.perf_counter()
    try:
        execute(spec, record, checkpoint)
    except SkipRun as exc:
        record.update(status="skipped", error=str(exc))
    except Exception as exc:  # record any failure as a row; the traceback goes to the run's log
        traceback.print_exc()
        record.update(status="failed", error=f"{type(exc).__name__}: {exc}")
    record["metrics"].setdefault("wall_time_s", time.perf_counter() - t0)
    record["finished_at"] = now()
    return record


def _write_json(record: dict, path: Path) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(record, default=str))
    os.replace(tmp, path)  # the parent never reads a half-written file


def main(argv: list[str]) -> int:
    spec = json.loads(Path(argv[0]).read_text())
    if os.environ.get("BENCH_TORCH_THREADS"):  # the run's CPU reservation (parallel or Ray runs)
        torch.set_num_threads(int(os.environ["BENCH_TORCH_THREADS"]))
    record = run(spec, checkpoint=lambda r: _write_json(r, partial_path(argv[1])))
    _write_json(record, Path(argv[1]))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
