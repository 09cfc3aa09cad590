"""Every metric a run records, declared once: its unit and which direction is better.

Reports, tables and (later) regression gates read directions from here, so a new metric only needs a
line in this table. Names not listed fall back to a prefix rule (task metrics such as `f1_PER`).
"""
from __future__ import annotations

import math
import statistics
from dataclasses import dataclass


@dataclass(frozen=True)
class Metric:
    unit: str
    higher_is_better: bool | None  # None: informational, no better direction
    kind: str  # "task", "size", "memory", "speed", "info"


METRICS: dict[str, Metric] = {
    # task quality
    "accuracy": Metric("ratio", True, "task"),
    "majority_rate": Metric("ratio", None, "info"),  # accuracy of always guessing the commonest class
    "entity_f1": Metric("ratio", True, "task"),
    "entity_precision": Metric("ratio", True, "task"),
    "entity_recall": Metric("ratio", True, "task"),
    # classification: the unweighted mean over classes of per-class F1 (imbalanced data), and what always guessing
    # the commonest class scores on it; per-class precision_/recall_/f1_<class> fall back to _PREFIXES
    "macro_f1": Metric("ratio", True, "task"),
    "majority_macro_f1": Metric("ratio", None, "info"),
    # generation (suites/causal_lm.py): micro F1 over generated (type, text) entity pairs; answers that are no
    # class / parse not at all; the label words' likelihood ranking beside the generated answer
    "span_f1": Metric("ratio", True, "task"),
    "span_precision": Metric("ratio", True, "task"),
    "span_recall": Metric("ratio", True, "task"),
    "invalid_rate": Metric("ratio", False, "task"),
    "ll_accuracy": Metric("ratio", True, "task"),
    # what fine-tuning cost on general text: causal-LM loss after training minus before (nats per token)
    "forgetting": Metric("nats", False, "task"),
    "general_loss_before": Metric("nats", None, "info"),
    "general_loss_after": Metric("nats", None, "info"),
    # a generator's inference (bench/meters/generation.py): batch-1 time to first token and per output token, with
    # the adapter, merged, and the base model alone; the adapter's overhead over the base; generated tokens/s
    **{f"{w}{v}_ms_{q}": Metric("ms", False, "speed") for w in ("ttft", "tpot") for v in ("", "_merged", "_base")
       for q in ("p50", "p95")},
    "ttft_overhead_pct": Metric("%", False, "speed"),
    "tpot_overhead_pct": Metric("%", False, "speed"),
    "generated_tokens_per_s": Metric("tokens/s", True, "speed"),
    "generated_tokens": Metric("count", None, "info"),
    "generation_s": Metric("s", None, "info"),
    # 95% bootstrap interval over evaluation examples: informational (the gate uses the paired test)
    **{f"{m}_ci_{e}": Metric("ratio", None, "info") for m in ("accuracy", "entity_f1", "macro_f1", "span_f1")
       for e in ("low", "high")},
    # tuning trials' dev-split scores (never gated: tuning folders stay out of the history)
    **{f"dev_{m}": Metric("ratio", None, "info") for m in ("accuracy", "entity_f1", "entity_precision",
                                                          "entity_recall", "majority_rate", "macro_f1",
                                                          "majority_macro_f1", "span_f1", "span_precision",
                                                          "span_recall", "invalid_rate", "ll_accuracy")},
    "best_step": Metric("count", None, "info"),  # --early-stopping: the step whose state was kept
    "train_loss": Metric("nats", False, "task"),
    "train_task_loss": Metric("nats", False, "task"),
    # parameters and size
    "trainable_params": Metric("count", None, "size"),
    "total_params": Metric("count", None, "size"),
    "trainable_pct": Metric("%", False, "size"),
    "head_params": Metric("count", None, "size"),
    "adapter_tensor_mb": Metric("MB", False, "size"),  # tensor bytes of what the method saves
    "adapter_folder_mb": Metric("MB", None, "size"),  # the saved folder, model card and JSON included
    "effective_trainable_params": Metric("count", None, "size"),  # AdaLoRA: what its final rank pattern uses
    "peft_trainable_params": Metric("count", None, "size"),
    "adapted_layers": Metric("count", None, "info"),
    "base_int8_mb": Metric("MB", None, "size"),
    "base_float_mb": Metric("MB", None, "size"),
    "base_int8_share": Metric("ratio", None, "size"),
    # memory
    "rss_loaded_mb": Metric("MB", False, "memory"),
    "peak_rss_increase_mb": Metric("MB", False, "memory"),
    "cuda_max_allocated_mb": Metric("MB", False, "memory"),
    "cuda_max_reserved_mb": Metric("MB", False, "memory"),
    # ... in three windows: loading and wrapping, training, evaluation and latency
    **{f"peak_{w}_mb": Metric("MB", False, "memory") for w in ("load", "train", "infer")},
    **{f"cuda_peak_{w}_{k}_mb": Metric("MB", False, "memory") for w in ("load", "train", "infer")
       for k in ("allocated", "reserved")},
    # speed
    "train_examples_per_s": Metric("examples/s", True, "speed"),
    "train_tokens_per_s": Metric("tokens/s", True, "speed"),
    "train_compute_examples_per_s": Metric("examples/s", True, "speed"),  # batch preparation left out
    "train_flops_per_example": Metric("FLOP", None, "info"),  # forward + backward, counted
    "train_flops_per_s": Metric("FLOP/s", True, "speed"),
    "train_mfu": Metric("ratio", True, "speed"),  # of the measured peak at the run's precision
    "train_mfu_datasheet": Metric("ratio", True, "speed"),  # of the GPU's datasheet peak
    "peak_flops_per_s": Metric("FLOP/s", None, "info"),
    "energy_j": Metric("J", False, "speed"),  # timed training steps, from NVML or RAPL
    "examples_per_kj": Metric("examples/kJ", True, "speed"),
    "infer_examples_per_s": Metric("examples/s", True, "speed"),  # forward only, evaluation batch size
    "train_cpu_s": Metric("s", False, "speed"),
    "train_wall_s": Metric("s", False, "speed"),
    "train_data_s": Metric("s", False, "speed"),  # batch preparation during the timed steps
    "train_data_share": Metric("ratio", None, "info"),  # of timed training time spent waiting for batches
    "latency_p50_ms": Metric("ms", False, "speed"),
    "latency_p95_ms": Metric("ms", False, "speed"),
    "latency_merged_p50_ms": Metric("ms", False, "speed"),  # the adapter merged into a copy of the base
    "latency_merged_p95_ms": Metric("ms", False, "speed"),
    "eval_examples_per_s": Metric("examples/s", True, "speed"),
    "eval_batch_ms": Metric("ms", False, "speed"),
    "wall_time_s": Metric("s", False, "speed"),
    # runner starting the run -> its worker ready: the harness's start-up (the grid's first run waits for the fork
    # server), not the method's speed, so never gated
    "worker_start_s": Metric("s", None, "info"),
    # what other processes took during the timed training windows (see `contended`)
    "contention": Metric("ratio", None, "info"),  # share of the CPU time the run's threads needed, /proc/stat
    "gpu_other_processes": Metric("count", None, "info"),  # CUDA: other processes NVML listed on the GPU
    # bookkeeping
    "steps": Metric("count", None, "info"),
    "train_examples": Metric("count", None, "info"),
    "eval_examples": Metric("count", None, "info"),
    "timed_steps": Metric("count", None, "info"),
    "timed_windows": Metric("count", None, "info"),
    "lr": Metric("1", None, "info"),
    "ranks_reallocated": Metric("bool", None, "info"),
    "adalora_rank_initial": Metric("count", None, "info"),
    "adalora_rank_final": Metric("count", None, "info"),
    "truncated_words": Metric("count", None, "info"),
    "empty_words": Metric("count", None, "info"),  # NER words the tokenizer gave no piece (scored as O)
}

_PREFIXES = {p: Metric("ratio", True, "task") for p in ("f1_", "precision_", "recall_")}  # per class or entity type


def metric_info(name: str) -> Metric:
    if name in METRICS:
        return METRICS[name]
    for prefix, info in _PREFIXES.items():
        if name.startswith(prefix):
            return info
    return Metric("", None, "info")


def best_first(metric: str, value: float) -> tuple[bool, float]:
    """Sort key of a value of `metric`: the best first (the highest unless the metric declares lower better),
    a missing one (None, NaN) last."""
    if value is None or math.isnan(value):
        return True, 0.0
    return False, value if metric_info(metric).higher_is_better is False else -value


def mean_std(values) -> tuple[float, float, int]:
    """Mean, sample standard deviation (NaN with fewer than two) and count of the values that are numbers (None
    and NaN left out): how every table, verdict and ranking averages runs over seeds."""
    numbers = [float(v) for v in values if v is not None and not math.isnan(float(v))]
    if not numbers:
        return math.nan, math.nan, 0
    return statistics.fmean(numbers), statistics.stdev(numbers) if len(numbers) > 1 else math.nan, len(numbers)


# Figures that rest on a reference the harness measured or counted: MFU = FLOPs per example x examples/s / the GEMM
# peak measured on the host, achieved FLOP/s on the FLOP count. Runs whose references differ by more than the
# tolerance (a peak re-measured on another machine or measured another way, a FLOP count an older harness made
# another way) have figures that are not comparable although their speeds are: such figures are neither averaged
# nor gated (train_examples_per_s is).
REFERENCES_OF = {"train_mfu": ("peak_flops_per_s", "train_flops_per_example"),
                 "train_mfu_datasheet": ("train_flops_per_example",),
                 "train_flops_per_s": ("train_flops_per_example",)}
# One host's peak re-measured moves a few per cent (444-456 GFLOP/s), a configuration's FLOPs per example up to 5%
# from seed to seed (padding); measured or counted another way, 2x (223 vs 453 GFLOP/s; BOFT 2,535 vs 1,250 MFLOP).
REFERENCE_TOLERANCE = 0.10


# An int8 base's matmuls are counted as float FLOPs (or not at all, inside int8 kernels) and divided by a float
# peak: such a run's FLOP/s is not comparable with a float run's, and its MFU with no run's (not even its own
# kind's: the peak is not that of the kernels it ran).
INT8_FLOAT_COUNTED = ("train_mfu", "train_mfu_datasheet", "train_flops_per_s")
INT8_ALONE = ("train_mfu", "train_mfu_datasheet")


def int8_base(record: dict) -> bool:
    """Whether the run held its frozen base in int8 (`quantize_base: int8`), as its record says: the int8 figures
    (`base_int8_mb`), the backend (`info.int8_backend`) or the method's configuration."""
    mb = (record.get("metrics") or {}).get("base_int8_mb")
    if mb is not None and mb == mb:  # a wide table's empty cell is NaN
        return True
    method = (record.get("config") or {}).get("method")
    return bool((record.get("info") or {}).get("int8_backend")) or \
        (isinstance(method, dict) and method.get("quantize_base") == "int8")


def reference_spread(metric: str, records: list[dict]) -> str | None:
    """Why `metric` is not comparable among `records` (neither averaged nor gated), or None: an int8 base
    (`int8 base: FLOPs counted as float`; its FLOP/s only where float runs are among them), else the first
    reference that differs by more than the tolerance, with its range (`peak_flops_per_s 223-453 GFLOP/s`)."""
    if metric in INT8_FLOAT_COUNTED:
        measured = [r for r in records if (v := (r.get("metrics") or {}).get(metric)) is not None and v == v]
        int8 = sum(int8_base(r) for r in measured)
        if int8 and int8 < len(measured):
            return f"int8 and float bases mixed ({int8} of {len(measured)} runs int8): int8 FLOPs counted as float"
        if int8 and metric in INT8_ALONE:
            return "int8 base: FLOPs counted as float"
    for name in REFERENCES_OF.get(metric, ()):
        values = [float(v) for r in records if (v := (r.get("metrics") or {}).get(name)) is not None and v == v]
        if len(values) >= 2 and max(values) - min(values) > REFERENCE_TOLERANCE * max(values):
            scale, unit = (1e9, "GFLOP/s") if name == "peak_flops_per_s" else (1e6, "MFLOP")
            return f"{name} {min(values) / scale:,.0f}-{max(values) / scale:,.0f} {unit}"
    return None


# A run whose accuracy is within this many points of always guessing the commonest class learned
# (next to) nothing: its other figures describe a failed fine-tune, not the method.
NEAR_CHANCE_POINTS = 0.03


def chance_level(metric: str, majority_rate: float = float("nan"),
                 majority_macro_f1: float = float("nan")) -> float:
    """What a model that learned nothing scores: the majority-class rate for accuracy; for macro F1 what the
    same constant predictor scores on it (`majority_macro_f1`, recorded beside it); 0 for entity F1 (a constant `O`
    tagger finds no entity); NaN for metrics without a known floor."""
    if metric == "accuracy":
        return majority_rate
    if metric == "macro_f1":
        return majority_macro_f1
    return 0.0 if metric.endswith("f1") else float("nan")


def near_chance(value: float, chance: float) -> bool:
    """Within NEAR_CHANCE_POINTS of the chance level (see chance_level)."""
    return bool(value == value and chance == chance and value <= chance + NEAR_CHANCE_POINTS)


def recorded_task_info(records: list[dict]) -> dict:
    """The task facts the newest run recorded (`info.task`: headline metric, caveat); empty for records older
    than that field."""
    return next((r["info"]["task"] for r in reversed(records) if (r.get("info") or {}).get("task")), {})


def headline_metric(records: list[dict]) -> str | None:
    """The metric the runs recorded as their headline; for older records the first quality metric with a
    "higher is better" direction they recorded. Read from the records alone, so an old folder renders the
    same whatever the registries say today."""
    if recorded := recorded_task_info(records).get("metric"):
        return recorded
    for r in records:
        for name in r.get("metrics") or {}:
            info = metric_info(name)
            if info.kind == "task" and info.higher_is_better:
                return name
    return None


# A busy machine must not pass for a slow method. `contention` (bench/meters/contention.py): the share of the CPU
# time a run's threads needed that other processes took during its timed training windows; above this, its speed
# figures describe the machine as much as the method (the peak GEMM's cached figure obeys the same threshold).
CONTENDED_ABOVE = 0.10


def contended(record: dict) -> str | None:
    """Why a run's speed figures do not describe the method alone (other processes took more than CONTENDED_ABOVE
    of its CPU time, or used its GPU, while its timed steps ran); None for a quiet run or one that could not tell.
    Reads `metrics` only, so a wide table's row ({"metrics": row}, NaN for absent) serves too."""
    metrics = record.get("metrics") or {}
    share, others = metrics.get("contention"), metrics.get("gpu_other_processes")
    reasons = []
    if share is not None and share == share and share > CONTENDED_ABOVE:
        reasons.append(f"other processes took {share:.0%} of the CPU during timed steps")
    if others is not None and others == others and others > 0:
        reasons.append(f"{int(others)} other process{'es' if others > 1 else ''} on the GPU")
    return "; ".join(reasons) or None
