"""One run (task x method x seed) in its own process: load, apply method, train, evaluate, measure.

Invoked by the runner as `python -m bench.execute.worker SPEC.json RESULT.json`. Always writes a record: a
`failed` or `skipped` one when something goes wrong, so the grid never loses a run silently.
"""
from __future__ import annotations

import contextlib
import gc
import json
import os
import random
import statistics
import sys
import tempfile
import time
import traceback
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from bench.execute import faults
from bench.execute.allocator import INFERENCE_MALLOPT, tune_allocator
from bench.execute.process import now, partial_path
from bench.execute.train import train
from bench.meters.environment import environment
from bench.meters.flops import choose_cpu_matmul, device_peak
from bench.meters.precision import autocast, set_tf32
from bench.meters.precision import check as check_precision
from bench.meters.windows import ForwardTimer, PeakMemory, current_rss_mb, percentile, time_call_ms
from bench.results.identity import IDENTITY
from bench.results.predictions import save as save_predictions
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
    if device.type == "cuda" and torch.cuda._is_in_bad_fork():  # bench/execute/preload.py keeps CUDA out of the server
        raise RuntimeError("this run was forked from a fork server that had initialised CUDA, so it cannot use the "
                           "GPU; run with BENCH_WORKER_START=spawn")
    return device


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def execute(spec: dict, record: dict, checkpoint=lambda record: None) -> None:
    """Fill `record` in place, so whatever was measured before a failure is kept. `checkpoint(record)` saves
    it once the model and device are resolved, for the parent to use if this process dies."""
    wall0 = time.perf_counter()
    phase = Phases(record["info"])  # where the run's wall time goes: info.phases_s
    device = pick_device(spec["device"])
    record["device"] = str(device)
    record["env"] = environment(device)
    precision, tf32 = spec.get("precision", "fp32"), spec.get("tf32", "off")
    check_precision(precision, tf32)
    if device.type == "cuda":
        set_tf32(tf32 == "on")
    record["info"].update(precision=precision, tf32=tf32)
    matmul = choose_cpu_matmul(spec.get("cpu_matmul", "default"), device)
    if matmul:
        record["info"]["cpu_matmul"] = matmul
    peak = PeakMemory(device)
    peak.reset()  # the load window: data, model, encoding and the method's wrapping
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

    score_on = spec.get("score_on", "eval")  # "dev" for tuning trials: the evaluation split is never opened
    train_ds, eval_ds = task.load_data(Path(spec["data_dir"]) if spec.get("data_dir") else None, budget, score_on)
    record["info"]["scored_on"] = task.dev_description(len(eval_ds)) if score_on == "dev" else \
        f"the {task.eval_split} split ({len(eval_ds)} examples)"
    steps = budget.steps(len(train_ds))
    ctx = RunContext(task=task, budget=budget, total_steps=steps, device=device, head_names=[], precision=precision)
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

    stopper = None
    if spec.get("early_stopping"):  # the dev set: encoded now, scored by the hook outside the timed windows
        _, dev_ds = task.load_data(Path(spec["data_dir"]) if spec.get("data_dir") else None, budget, "dev")
        stopper = EarlyStopping(task, task.eval_batches(task.encode(dev_ds, processor, budget, train=False),
                                                        processor, budget.eval_batch_size),
                                device, spec["early_stopping"]["patience"],
                                spec["early_stopping"].get("eval_every") or max(1, steps // 10))
    metrics.update(peak.window("load"))
    phase("load")
    peak.reset()  # the training window
    metrics["rss_loaded_mb"] = current_rss_mb()
    # Step progress goes to the run's log (or the terminal with --verbose); sparse when not a terminal.
    with tqdm(total=steps, desc=f"{task.name}/{method.name} train", unit="step",
              mininterval=0.5 if sys.stderr.isatty() else 15) as bar:
        stats = train(model, task.train_batches(train_examples, processor, budget, spec["seed"]), task=task,
                      method=method, total_steps=steps, lr=lr, device=device, untimed_steps=budget.untimed_steps,
                      log_every=budget.log_every, progress=bar, precision=precision, on_step_end=stopper)
    if stopper is not None:
        record["info"]["early_stopping"] = stopper.restore_best(model)
        metrics["best_step"] = record["info"]["early_stopping"]["best_step"]
    metrics.update(peak.window("train"))
    # The training window's GPU peaks under their older names, which compare, recommend and the reports read.
    if device.type == "cuda":
        metrics["cuda_max_allocated_mb"] = metrics["cuda_peak_train_allocated_mb"]
        metrics["cuda_max_reserved_mb"] = metrics["cuda_peak_train_reserved_mb"]
    metrics["peak_rss_increase_mb"] = metrics["peak_train_mb"] - metrics["rss_loaded_mb"]
    record["info"]["peak_memory_source"] = peak.source
    record["loss_curve"] = stats.loss_curve
    record["info"]["optimizer"] = stats.optimizer
    metrics.update(train_loss=stats.final_loss, train_task_loss=stats.final_task_loss,
                   timed_steps=stats.timed_steps, timed_windows=stats.windows, train_wall_s=stats.timed_wall_s,
                   train_cpu_s=stats.timed_cpu_s, train_data_s=stats.timed_data_s)
    if stats.timed_steps:
        metrics.update(train_measures(stats, device, precision, tf32, record["info"]))
    extra = method.finish(model, ctx)
    metrics.update(extra.get("metrics", {}))
    record["info"].update(extra.get("info", {}))
    phase("train")

    tune_allocator(INFERENCE_MALLOPT)  # glibc's steady state, or evaluation's freed memory stays in the peak
    peak.reset()  # the inference window: evaluation and latency
    amp = contextlib.ExitStack()  # evaluation and latency run under the training precision's autocast
    amp.enter_context(autocast(device, precision))
    model.eval()
    batches = task.eval_batches(eval_examples, processor, budget.eval_batch_size)
    forward = ForwardTimer(model, device)  # forward-only throughput, timed inside the evaluation pass
    t0 = time.perf_counter()
    predictions, extra = task.predict(forward, batches, device)
    eval_s = time.perf_counter() - t0
    scores = {**task.score(predictions), **extra}
    if score_on == "dev":  # a tuning trial: dev scores only, named so, and no deployment measurements
        metrics.update({f"dev_{k}": v for k, v in scores.items()})
        phase("eval")
        metrics["wall_time_s"] = time.perf_counter() - wall0
        return
    metrics.update(scores)
    metrics.update(uncertainty(task, predictions))
    if spec.get("predictions_path"):
        save_predictions(Path(spec["predictions_path"]), task.eval_order(eval_examples), predictions)
        record["info"]["predictions"] = spec["predictions_rel"]
    metrics["eval_examples_per_s"] = len(eval_examples) / eval_s
    metrics["eval_batch_ms"] = 1000 * eval_s / len(batches)  # mean per batch at the evaluation batch size
    metrics["infer_examples_per_s"] = forward.examples_per_s()
    phase("eval")
    metrics.update(latency(model, task, eval_examples, processor, budget, device))
    metrics.update(peak.window("infer"))
    phase("latency")
    merged = method.merged_copy(model)
    if merged is not None:  # what a deployed, merged adapter costs: no adapter detour per layer
        merged.eval()
        metrics.update({f"latency_merged_{k.removeprefix('latency_')}": v
                        for k, v in latency(merged, task, eval_examples, processor, budget, device).items()})
        del merged
        phase("merged_latency")
    amp.close()

    with tempfile.TemporaryDirectory() as tmp:
        method.save(model, Path(tmp) / "saved")
        metrics.update(saved_sizes(Path(tmp) / "saved"))
    phase("save")
    metrics["wall_time_s"] = time.perf_counter() - wall0


class Phases:
    """`phase(name)` records the seconds since the previous call (or creation) in info["phases_s"][name]."""

    def __init__(self, info: dict):
        self.seconds = info.setdefault("phases_s", {})
        self.last = time.perf_counter()

    def __call__(self, name: str) -> None:
        now = time.perf_counter()
        self.seconds[name] = round(now - self.last, 3)
        self.last = now


class EarlyStopping:
    """`on_step_end` hook of bench/execute/train.py: every `every` steps, score the dev split; stop after `patience`
    scores without a gain; keep a copy of the trainable tensors at the best score, restored after training."""

    def __init__(self, task, batches, device, patience: int, every: int):
        self.task, self.batches, self.device, self.patience, self.every = task, batches, device, patience, every
        self.curve, self.best, self.best_step, self.best_state, self.since_best = [], -float("inf"), 0, None, 0

    def __call__(self, step: int, model) -> bool:
        if step % self.every:
            return False
        model.eval()
        score = self.task.score(self.task.predict(model, self.batches, self.device)[0])[self.task.metric]
        self.curve.append((step, score))
        if score > self.best:
            self.best, self.best_step, self.since_best = score, step, 0
            self.best_state = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
        else:
            self.since_best += 1
        return self.since_best >= self.patience

    def restore_best(self, model) -> dict:
        import torch
        if self.best_state is not None:
            with torch.no_grad():
                for n, p in model.named_parameters():
                    if n in self.best_state:
                        p.copy_(self.best_state[n])
        last = self.curve[-1][0] if self.curve else 0
        return {"patience": self.patience, "eval_every": self.every, "best_step": self.best_step,
                "best_dev_score": self.best, "stopped_at": last, "dev_curve": self.curve}


def uncertainty(task, predictions: dict) -> dict:
    """95% bootstrap interval of the headline metric over evaluation examples (sentences for entity F1)."""
    from bench.judge import stats
    if task.metric not in stats.KNOWN:  # a task with another metric: no interval rather than a failed run
        return {}
    low, high = stats.bootstrap_ci(task.metric, stats.example_stats(task.metric, predictions["gold"],
                                                                     predictions["pred"]))
    return {f"{task.metric}_ci_low": low, f"{task.metric}_ci_high": high}


def saved_sizes(folder: Path) -> dict:
    """Tensor bytes of what the method saved (the fair size: peft also writes a model card and JSON, which
    made a 3 kB head look larger than a 10 kB config file), and the whole folder beside it."""
    from safetensors.torch import load_file
    tensor_bytes = sum(t.nbytes for path in folder.rglob("*.safetensors") for t in load_file(path).values())
    folder_bytes = sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())
    return {"adapter_tensor_mb": tensor_bytes / 2**20,
            "adapter_folder_mb": folder_bytes / 2**20}


LATENCY_REPEATS = 5  # timings per batch-1 sample; its median is the sample's latency


@torch.inference_mode()
def latency(model, task, examples, processor, budget, device) -> dict:
    """Batch-1 forward latency over the first `latency_samples` eval examples, after 3 warm-up calls: the median
    of LATENCY_REPEATS timings per sample, then p50/p95 over samples."""
    samples = [to_device(task.collate([e], processor), device) for e in examples[:budget.latency_samples]]
    inputs = [{k: v for k, v in s.items() if k != "labels"} for s in samples]
    for x in inputs[:3]:
        model(**x)
    times = [statistics.median(time_call_ms(lambda: model(**x), device) for _ in range(LATENCY_REPEATS))
             for x in inputs]
    return {"latency_p50_ms": percentile(times, 50), "latency_p95_ms": percentile(times, 95)}


def train_measures(stats, device, precision: str, tf32: str, info: dict) -> dict:
    """Throughput (headline with batch preparation, compute-only beside it), MFU and energy of the timed steps."""
    wall, n = stats.timed_wall_s, stats.timed_examples
    out = {"train_examples_per_s": n / wall, "train_data_share": stats.timed_data_s / wall}
    if wall > stats.timed_data_s:
        out["train_compute_examples_per_s"] = n / (wall - stats.timed_data_s)
    if stats.timed_tokens:  # image tasks have no tokens
        out["train_tokens_per_s"] = stats.timed_tokens / wall
    if stats.flops_per_unit:
        # Counted on the untimed first steps per padded token (or image), scaled to the timed steps' shapes.
        flops = stats.flops_per_unit * stats.timed_units + stats.flops_per_step * stats.timed_steps
        out.update(train_flops_per_example=flops / n, train_flops_per_s=flops / wall)
        peak = device_peak(device, precision, tf32 == "on")
        info["peak_flops"] = peak
        out["peak_flops_per_s"] = peak["flops_per_s"]
        out["train_mfu"] = out["train_flops_per_s"] / peak["flops_per_s"]
        if peak.get("datasheet_flops_per_s"):
            out["train_mfu_datasheet"] = out["train_flops_per_s"] / peak["datasheet_flops_per_s"]
    else:
        info["mfu"] = "unavailable: the FLOP counter saw no matmul, convolution or attention FLOPs"
    info["energy"] = stats.energy_source
    if stats.energy_j:
        out.update(energy_j=stats.energy_j, examples_per_kj=n / (stats.energy_j / 1000))
    return out


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
    # The imported libraries (~0.5 M objects) are never garbage: freezing them keeps every later gc.collect()
    # (one per memory window) from walking them, ~0.25 s each on 2 cores, most of a smoke run's wall time.
    gc.freeze()
    spec = json.loads(Path(argv[0]).read_text())
    if os.environ.get("BENCH_TUNE_ALLOCATOR"):  # a worker started by Ray: the allocator setting local runs get
        os.environ["BENCH_ALLOCATOR"] = tune_allocator() or "glibc default"
    if os.environ.get("BENCH_TORCH_THREADS"):  # the run's CPU reservation (parallel or Ray runs)
        torch.set_num_threads(int(os.environ["BENCH_TORCH_THREADS"]))
    record = run(spec, checkpoint=lambda r: _write_json(r, partial_path(argv[1])))
    if os.environ.get("BENCH_ALLOCATOR"):
        record["info"]["allocator"] = os.environ["BENCH_ALLOCATOR"]
    _write_json(record, Path(argv[1]))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
