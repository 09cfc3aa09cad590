"""One run (task x method x seed) in its own process, in phases: load, apply the method, train, evaluate,
measure, save (`execute` reads top to bottom).

Invoked by the runner as `python -m bench.execute.worker SPEC.json RESULT.json`. Always writes a record: a
`failed` or `skipped` one when something goes wrong, so the grid never loses a run silently.
"""
from __future__ import annotations

import gc
import json
import os
import random
import statistics
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from bench.execute import faults
from bench.execute.allocator import INFERENCE_MALLOPT, tune_allocator
from bench.execute.process import now, partial_path
from bench.execute.train import TrainStats, train
from bench.meters.environment import environment
from bench.meters.flops import choose_cpu_matmul, device_peak
from bench.meters.precision import autocast, set_tf32
from bench.meters.precision import check as check_precision
from bench.meters.windows import ForwardTimer, PeakMemory, current_rss_mb, percentile, time_call_ms
from bench.results.identity import IDENTITY
from bench.results.predictions import save as save_predictions
from methods import SkipRun, build
from methods.base import Method, RunContext, count_params, head_names
from methods.spec import MethodSpec
from suites import checks, task_of
from suites.base import Budget, Task, TaskData, to_device


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


@dataclass(frozen=True)
class Setting:
    """Where and how a run computes, resolved before anything is loaded."""

    device: torch.device
    precision: str  # fp32 | bf16 | fp16: autocast in training and inference
    tf32: str  # on | off


@dataclass(frozen=True)
class Loaded:
    """A run's task, method, data and encoded examples: everything it works with but the model, which the
    method wraps next. The model travels apart so that nothing holds the unwrapped one once it is replaced."""

    task: Task
    method: Method
    budget: Budget
    ctx: RunContext
    data: TaskData  # the raw splits stay alive for the whole run, as the encoded examples do
    processor: Any  # tokenizer or image preprocessing
    train_examples: list[dict]
    eval_examples: list[dict]
    eval_max_length: int | None  # LoadedModel.eval_max_length less the method's reserved positions
    steps: int
    lr: float
    seed: int
    score_on: str  # "eval", or "dev" for a tuning trial: the evaluation split is never opened


@dataclass(frozen=True)
class Trained:
    """What the training loop reports (bench/execute/train.py) and, with early stopping, the dev curve."""

    stats: TrainStats
    early_stopping: dict | None


@dataclass(frozen=True)
class Evaluated:
    """One pass over the scored split: predictions, scores and how long the pass took."""

    predictions: dict
    scores: dict
    seconds: float
    batches: list  # kept for the rest of the inference window, as they always were
    infer_examples_per_s: float | None  # forward passes alone, timed inside the pass


def execute(spec: dict, record: dict, checkpoint=lambda record: None) -> None:
    """Fill `record` in place, so whatever was measured before a failure is kept. `checkpoint(record)` saves
    it once the model and device are resolved, for the parent to use if this process dies.

    The phases run top to bottom: load, apply, train, evaluate, measure, save. The memory windows open and
    close here, around the work each one measures."""
    wall0 = time.perf_counter()
    phase = Phases(record["info"])  # where the run's wall time goes: info.phases_s
    metrics = record["metrics"]
    setting = prepare(spec, record)
    peak = PeakMemory(setting.device)
    peak.reset()  # the load window: data, model, encoding and the method's wrapping
    loaded, model = load(spec, record, setting, checkpoint)
    general = general_text(spec, loaded, model, setting)  # forgetting's "before": the untouched base model
    model = apply(loaded, model, setting, metrics)
    stopper = early_stopping(spec, loaded, setting)
    metrics.update(peak.window("load"))
    phase("load")

    peak.reset()  # the training window
    metrics["rss_loaded_mb"] = current_rss_mb()
    trained = train_model(loaded, model, setting, stopper) if loaded.steps else Trained(TrainStats(), None)
    if trained.early_stopping is not None:
        record["info"]["early_stopping"] = trained.early_stopping
        metrics["best_step"] = trained.early_stopping["best_step"]
    metrics.update(peak.window("train"))
    record_training(record, loaded, model, setting, trained, peak.source)
    phase("train")

    tune_allocator(INFERENCE_MALLOPT)  # glibc's steady state, or evaluation's freed memory stays in the peak
    peak.reset()  # the inference window: evaluation and latency
    # Evaluation and latency run under the training precision's autocast.
    with autocast(setting.device, setting.precision):
        evaluated = evaluate(loaded, model, setting)
        if loaded.score_on == "dev":  # a tuning trial: dev scores only, named so, and no deployment measurements
            metrics.update({f"dev_{k}": v for k, v in evaluated.scores.items()})
            phase("eval")
            metrics["wall_time_s"] = time.perf_counter() - wall0
            return
        record_evaluation(spec, record, loaded, evaluated)
        phase("eval")
        metrics.update(measure(loaded, model, setting))
        figures, how = generation(loaded, model, setting, evaluated)  # a generator's own costs (causal LMs)
        metrics.update(figures)
        if how:
            record["info"]["generation_latency"] = how
        metrics.update(peak.window("infer"))
        phase("latency")
        metrics.update(uncertainty(loaded.task, evaluated.predictions))  # after the windows: see `uncertainty`
        if general is not None:  # after the windows too: a measurement's own
            metrics.update(forgetting(loaded, model, setting, general))
            phase("forgetting")
        merged = measure_merged(loaded, model, setting)
        if merged is not None:
            metrics.update(merged)
            phase("merged_latency")

    metrics.update(save(loaded, model))
    phase("save")
    metrics["wall_time_s"] = time.perf_counter() - wall0


def prepare(spec: dict, record: dict) -> Setting:
    """The device and numerics of the run (TF32, the CPU matmul library), recorded."""
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
    return Setting(device, precision, tf32)


def load(spec: dict, record: dict, setting: Setting, checkpoint) -> tuple[Loaded, torch.nn.Module]:
    """The task, the method, the data (cut to the budget), the model and the encoded examples."""
    seed_everything(spec["seed"])
    task = task_of(spec)
    method = faults.wrap(build(MethodSpec(**spec["method_spec"])))  # the method itself unless a test injects faults
    budget = task.budget(spec["budget"])
    record["config"] = spec.get("config", {})
    # What a reader of the record needs without the suite registry: the headline metric and the task's caveat.
    record["info"]["task"] = {"metric": task.metric, "note": task.note, "kind": task.kind,
                              **({"file": task.source} if task.source else {})}
    record["info"]["lr_source"] = spec.get("lr_source")
    ref = spec.get("model") or task.default_model
    record["model"] = ref
    checkpoint(record)
    path = task.resolve_model(ref, _folder(spec, "model_dir"))
    if (Path(path) / "gguf.json").is_file():  # a GGUF model converted to float: say what the weights are
        made = json.loads((Path(path) / "gguf.json").read_text())
        record["info"]["weights"] = f"dequantised from {made['file_type']} ({made['file']}, sha256 {made['sha256'][:12]})"

    score_on = spec.get("score_on", "eval")  # "dev" for tuning trials: the evaluation split is never opened
    data = task.load_data(_folder(spec, "data_dir"), budget, score_on)
    warning = checks.imbalance(data.train, task.class_column(), data.label_names, task.per_word)
    if warning:  # the report prints it beside the task's caveat
        record["info"]["task"]["warnings"] = [warning]
        print(f"warning: {task.name}: {warning}", file=sys.stderr)
    record["info"]["scored_on"] = task.dev_description(len(data.scored)) if score_on == "dev" else \
        f"the {task.eval_split} split ({len(data.scored)} examples)"
    steps = budget.steps(len(data.train)) if method.trains else 0  # zero-shot: the untouched model is scored
    ctx = RunContext(task=task, budget=budget, total_steps=steps, device=setting.device, head_names=[],
                     precision=setting.precision)
    loaded_model = task.load_model(path, data.label_names, **method.load_kwargs(ctx))
    model, processor, eval_max_length = loaded_model.model, loaded_model.processor, loaded_model.eval_max_length
    del loaded_model  # the method may replace the model: nothing else may hold it
    if eval_max_length:  # virtual tokens take positions from the model's table
        eval_max_length -= method.reserved_positions
    ctx.head_names = head_names(model)
    train_examples = task.encode(data.train, processor, budget, train=True)
    eval_examples = task.encode(data.scored, processor, budget, train=False, eval_max_length=eval_max_length)
    return Loaded(task=task, method=method, budget=budget, ctx=ctx, data=data, processor=processor,
                  train_examples=train_examples, eval_examples=eval_examples, eval_max_length=eval_max_length,
                  steps=steps, lr=spec["lr"],  # resolved by the parent: it is part of the config id
                  seed=spec["seed"], score_on=score_on), model


def apply(loaded: Loaded, model: torch.nn.Module, setting: Setting, metrics: dict) -> torch.nn.Module:
    """The method wraps or freezes the model; the model goes to the device; what trains is counted."""
    method, ctx = loaded.method, loaded.ctx
    model = method.apply(model, ctx)
    loaded.task.after_method(model)
    if not quantised(model):
        model.to(setting.device)  # quantised models were placed at load time
    metrics.update(count_params(model, ctx.head_names), lr=loaded.lr, steps=loaded.steps,
                   train_examples=len(loaded.train_examples), eval_examples=len(loaded.eval_examples))
    if method.uses_peft:  # checked equal to ours when the method was applied
        metrics["peft_trainable_params"], _ = model.get_nb_trainable_parameters()
    return model


def early_stopping(spec: dict, loaded: Loaded, setting: Setting) -> EarlyStopping | None:
    """With --early-stopping: the dev set, encoded now (in the load window); the hook scores it outside the
    timed training windows."""
    if not spec.get("early_stopping"):
        return None
    task, budget, processor = loaded.task, loaded.budget, loaded.processor
    dev = task.load_data(_folder(spec, "data_dir"), budget, "dev")
    batches = task.eval_batches(task.encode(dev.scored, processor, budget, train=False,
                                            eval_max_length=loaded.eval_max_length),
                                processor, budget.eval_batch_size)
    return EarlyStopping(task, dev, batches, setting.device, spec["early_stopping"]["patience"],
                         spec["early_stopping"].get("eval_every") or max(1, loaded.steps // 10))


def train_model(loaded: Loaded, model: torch.nn.Module, setting: Setting, stopper: EarlyStopping | None) -> Trained:
    """The shared training loop; with early stopping, the best dev state is restored at the end."""
    task, method, budget = loaded.task, loaded.method, loaded.budget
    # Step progress goes to the run's log (or the terminal with --verbose); sparse when not a terminal.
    with tqdm(total=loaded.steps, desc=f"{task.name}/{method.name} train", unit="step",
              mininterval=0.5 if sys.stderr.isatty() else 15) as bar:
        stats = train(model, task.train_batches(loaded.train_examples, loaded.processor, budget, loaded.seed),
                      task=task, method=method, total_steps=loaded.steps, lr=loaded.lr, device=setting.device,
                      untimed_steps=budget.untimed_steps, log_every=budget.log_every, progress=bar,
                      precision=setting.precision, on_step_end=stopper)
    return Trained(stats, stopper.restore_best(model) if stopper is not None else None)


def record_training(record: dict, loaded: Loaded, model: torch.nn.Module, setting: Setting, trained: Trained,
                    peak_source: str) -> None:
    """The training window's figures (memory, throughput, MFU, energy, loss curve) and the method's own
    checks and figures after training."""
    metrics, info, stats, device = record["metrics"], record["info"], trained.stats, setting.device
    # The training window's GPU peaks under their older names, which compare, recommend and the reports read.
    if device.type == "cuda":
        metrics["cuda_max_allocated_mb"] = metrics["cuda_peak_train_allocated_mb"]
        metrics["cuda_max_reserved_mb"] = metrics["cuda_peak_train_reserved_mb"]
    metrics["peak_rss_increase_mb"] = metrics["peak_train_mb"] - metrics["rss_loaded_mb"]
    info["peak_memory_source"] = peak_source
    record["loss_curve"] = stats.loss_curve
    info["optimizer"] = stats.optimizer
    metrics.update(train_loss=stats.final_loss, train_task_loss=stats.final_task_loss,
                   timed_steps=stats.timed_steps, timed_windows=stats.windows, train_wall_s=stats.timed_wall_s,
                   train_cpu_s=stats.timed_cpu_s, train_data_s=stats.timed_data_s)
    if stats.timed_steps:
        metrics.update(train_measures(stats, device, setting.precision, setting.tf32, info))
    extra = loaded.method.finish(model, loaded.ctx)
    metrics.update(extra.get("metrics", {}))
    info.update(extra.get("info", {}))


def evaluate(loaded: Loaded, model: torch.nn.Module, setting: Setting) -> Evaluated:
    """Predict the scored split (evaluation, or dev in a tuning trial) and score it."""
    task = loaded.task
    model.eval()
    batches = task.eval_batches(loaded.eval_examples, loaded.processor, loaded.budget.eval_batch_size)
    forward = ForwardTimer(model, setting.device)  # forward-only throughput, timed inside the evaluation pass
    t0 = time.perf_counter()
    predictions, extra = task.predict(forward, batches, setting.device, loaded.data.label_names)
    seconds = time.perf_counter() - t0
    scores = task.score({**predictions, "classes": loaded.data.label_names})  # per-class figures by name
    return Evaluated(predictions, {**scores, **extra}, seconds, batches, forward.examples_per_s())


def record_evaluation(spec: dict, record: dict, loaded: Loaded, evaluated: Evaluated) -> None:
    """Scores, the predictions file, and evaluation throughput."""
    metrics, n = record["metrics"], len(loaded.eval_examples)
    metrics.update(evaluated.scores)
    if spec.get("predictions_path"):
        save_predictions(Path(spec["predictions_path"]), loaded.task.eval_order(loaded.eval_examples),
                         evaluated.predictions)
        record["info"]["predictions"] = spec["predictions_rel"]
    metrics["eval_examples_per_s"] = n / evaluated.seconds
    # The mean per batch, at the evaluation batch size.
    metrics["eval_batch_ms"] = 1000 * evaluated.seconds / len(evaluated.batches)
    if evaluated.infer_examples_per_s is not None:  # None: evaluation only generated (no plain forward pass)
        metrics["infer_examples_per_s"] = evaluated.infer_examples_per_s


def measure(loaded: Loaded, model: torch.nn.Module, setting: Setting) -> dict:
    """Batch-1 latency of the trained model, as it runs with its adapter."""
    return latency(model, loaded.task, loaded.eval_examples, loaded.processor, loaded.budget, setting.device)


def measure_merged(loaded: Loaded, model: torch.nn.Module, setting: Setting) -> dict | None:
    """What a deployed, merged adapter costs (no adapter detour per layer); None where the method cannot merge."""
    merged = loaded.method.merged_copy(model)
    if merged is None:
        return None
    merged.eval()
    out = {f"latency_merged_{k.removeprefix('latency_')}": v for k, v in
           latency(merged, loaded.task, loaded.eval_examples, loaded.processor, loaded.budget, setting.device).items()}
    if loaded.task.kind == "causal-lm":
        out.update({k.replace("_ms_", "_merged_ms_"): v for k, v in
                    generation_latency(merged, loaded, setting).items() if "_ms_" in k})
    del merged
    return out


def save(loaded: Loaded, model: torch.nn.Module) -> dict:
    """What the method stores to reuse the result, saved to a scratch folder and weighed."""
    with tempfile.TemporaryDirectory() as tmp:
        loaded.method.save(model, Path(tmp) / "saved")
        return saved_sizes(Path(tmp) / "saved")


def generation_latency(model, loaded: Loaded, setting: Setting) -> dict:
    """Batch-1 time to first token (the prefill of a prompt of the task's declared length) and per output token
    (cached decode steps), p50/p95 over the budget's latency samples (bench/meters/generation.py)."""
    from bench.meters import generation as gen
    task, tokenizer = loaded.task, loaded.processor
    text = tokenizer.decode(loaded.eval_examples[0]["input_ids"], skip_special_tokens=True)
    prompt = gen.prompt_of_length(tokenizer, text, task.latency_prompt_tokens)
    return gen.generation_latency(model, prompt, task.latency_new_tokens, loaded.budget.latency_samples,
                                  setting.device)


def generation(loaded: Loaded, model: torch.nn.Module, setting: Setting, evaluated: Evaluated) -> tuple[dict, dict]:
    """A generator's inference costs, in the inference window: TTFT and time per output token with the adapter
    (unmerged), of the base model alone (the adapter switched off: peft methods), the adapter's overhead over the
    base in %, and generated tokens/s at the evaluation batch size (over up to 4 evaluation batches); and how the
    latency was timed (bench/meters/generation.py), for the record's info."""
    if loaded.task.kind != "causal-lm":
        return {}, {}
    from bench.meters import generation as gen
    out = generation_latency(model, loaded, setting)
    info = {"latency_method": out.pop("latency_method"), "prompt_tokens": out.pop("prompt_tokens"),
            "new_tokens": out.pop("new_tokens")}
    if loaded.method.uses_peft and hasattr(model, "disable_adapter"):
        with model.disable_adapter():
            base = generation_latency(model, loaded, setting)
        out.update({k.replace("_ms_", "_base_ms_"): v for k, v in base.items() if "_ms_" in k})
        for what in ("ttft", "tpot"):
            if out.get(f"{what}_ms_p50") and base.get(f"{what}_ms_p50"):
                out[f"{what}_overhead_pct"] = gen.overhead_pct(out[f"{what}_ms_p50"], base[f"{what}_ms_p50"])
    out.update(gen.generation_throughput(model, evaluated.batches[:4], loaded.task.max_new_tokens,
                                         loaded.processor.pad_token_id, setting.device))
    return {k: v for k, v in out.items() if v is not None}, info


def _folder(spec: dict, key: str) -> Path | None:
    return Path(spec[key]) if spec.get(key) else None


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

    def __init__(self, task, dev: TaskData, batches, device, patience: int, every: int):
        self.task, self.batches, self.device, self.patience, self.every = task, batches, device, patience, every
        self.dev = dev  # its label names name the predictions; the split stays alive as the run's own data does
        self.curve, self.best, self.best_step, self.best_state, self.since_best = [], -float("inf"), 0, None, 0

    def __call__(self, step: int, model) -> bool:
        if step % self.every:
            return False
        model.eval()
        predictions, _ = self.task.predict(model, self.batches, self.device, self.dev.label_names)
        score = self.task.score({**predictions, "classes": self.dev.label_names})[self.task.metric]
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


def general_text(spec: dict, loaded: Loaded, model: torch.nn.Module, setting: Setting) -> tuple[list[str], float] | None:
    """(the task's general text, the untouched base model's causal-LM loss on it) for `forgetting`; None for tasks
    that declare none, and in tuning trials (dev scores only)."""
    task = loaded.task
    if loaded.score_on == "dev" or not getattr(task, "forgetting", None):
        return None
    texts = task.general_texts(_folder(spec, "data_dir"))
    if not quantised(model):
        model.to(setting.device)
    return texts, task.general_loss(model, loaded.processor, texts, setting.device)


def quantised(model) -> bool:
    """bitsandbytes placed the model at load time: it must not be moved."""
    return bool(getattr(model, "is_loaded_in_8bit", False) or getattr(model, "is_loaded_in_4bit", False))


def forgetting(loaded: Loaded, model: torch.nn.Module, setting: Setting, general) -> dict:
    """What fine-tuning cost the model on general text, as peft's method_comparison measures it: the causal-LM loss
    on the task's fixed general sample after training minus before (nats per token; > 0: it forgot)."""
    if general is None:
        return {}
    texts, before = general
    model.eval()
    after = loaded.task.general_loss(model, loaded.processor, texts, setting.device)
    return {"forgetting": after - before, "general_loss_before": before, "general_loss_after": after}


def uncertainty(task, predictions: dict) -> dict:
    """95% bootstrap interval of the headline metric over evaluation examples (sentences for entity F1). Called
    after the memory windows: the statistics (scipy) are the harness's memory, not the method's."""
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
    """Throughput (headline with batch preparation, compute-only beside it), MFU, energy and contention of the
    timed steps."""
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
    # A busy machine must not pass for a slow method: what other processes took during the timed windows.
    if stats.contention is not None:
        out["contention"] = stats.contention
    else:
        info["contention"] = stats.contention_unavailable or "unavailable"
    if stats.gpu_other_processes is not None:
        out["gpu_other_processes"] = stats.gpu_other_processes
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
