"""What makes two runs "the same run": a configuration id plus the seed.

A run's configuration is everything that produced its figures: the method as declared (after --set), the
learning rate, the budget's definition (not only its name), the model's identity (its reference and a hash
of its weight files), the data's identity (a hash and the row count of every file read, or the Hub dataset
and revision), the device asked for, the precision, TF32, the CPU matmul library and the CPU threads (these three
when not the default: a CPU run given a share of the machine's cores, `--parallel 2`, sums its matmuls and
convolutions in another order, and CIFAR-10 full fine-tuning scored 0.841 at 1 thread against 0.830 at 2).
`config_id` hashes it, so runs under a changed configuration are never averaged with, gated against, or resumed
as older runs, and a re-run of the same configuration replaces the earlier record instead of counting as one more
seed (`store.latest_runs`).
Computing it reads no model into memory and imports no torch: the parent knows it before any run starts.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from pathlib import Path

IDENTITY = ("run_id", "invocation", "config_id", "suite", "task", "method", "seed", "budget")  # in every record
PRECISION = "fp32"  # the default; --precision bf16|fp16 autocasts (bench/meters/precision.py)
OPTIMIZER = "adamw-fused"  # bench/execute/train.py falls back to foreach (and records it) where fused cannot run
WEIGHT_DECAY = 0.01  # AdamW, as HF Trainer applies it: not on biases and normalisation weights (train.py)
_file_hashes: dict[tuple, str] = {}


def config_id(config: dict) -> str:
    """A short, stable hash of a run's configuration (12 hex digits)."""
    return hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()[:12]


def family_of(task) -> str | None:
    """The architecture family whose method entries a task's runs hash beyond the always-hashed ones (methods/spec.py
    `declared`): `decoder` for causal-LM tasks (earlier runs' ids unchanged), else None."""
    return "decoder" if getattr(task, "kind", "") == "causal-lm" else None


def run_config(task, method, lr: float, budget: str, model_ref: str | None, model_dir: Path | None,
               data_dir: Path | None, device: str, score_on: str = "eval", precision: str = PRECISION,
               tf32: str = "off", cpu_matmul: str = "default", cpu_threads: int | None = None) -> dict:
    """Everything that defines a run but its seed (see the module docstring); `method` is a MethodSpec."""
    extra = {"scored_on": "dev"} if score_on == "dev" else {}  # tuning trials: never the same run as `bench run`
    # untimed_steps under its first name, warmup_steps: the config id hashes the key, and ids must not change
    fields = {("warmup_steps" if k == "untimed_steps" else k): v for k, v in dataclasses.asdict(task.budget(budget)).items()}
    # A task file's declarations (its caveat aside) are part of the configuration: an edited task is a new one.
    extra.update({"task_file": task.digest} if getattr(task, "digest", "") else {})
    return {**extra, "suite": task.suite, "task": task.name, "method": method.declared(family=family_of(task)), "lr": lr,
            "budget":
            {"name": budget, **fields},
            "model": task.model_identity(model_ref or task.default_model, model_dir),
            "data": task.data_identity(data_dir, score_on), "device": device, "precision": precision,
            "optimizer": OPTIMIZER, "weight_decay": {"rate": WEIGHT_DECAY, "excludes": "biases, norms"},
            **({"tf32": "on"} if tf32 == "on" else {}),  # "off", how earlier runs ran, keeps their ids
            **({"cpu_matmul": cpu_matmul} if cpu_matmul != "default" else {}),  # likewise
            **({"cpu_threads": cpu_threads} if cpu_threads else {})}  # None: all the machine's cores, as before


def file_sha256(path: str | os.PathLike) -> str:
    """sha256 of a file, cached by (path, size, modification time) for the life of the process."""
    stat = os.stat(path)
    key = (str(path), stat.st_size, stat.st_mtime_ns)
    if key not in _file_hashes:
        digest = hashlib.sha256()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
        _file_hashes[key] = digest.hexdigest()
    return _file_hashes[key]


def run_key(record: dict) -> tuple:
    """(config id, seed). Records written before config ids existed fall back to their identity fields."""
    cid = record.get("config_id") or tuple(str(record.get(k)) for k in ("suite", "task", "method", "budget",
                                                                          "model", "device"))
    return cid, record.get("seed")


def differences(a: dict, b: dict, prefix: str = "") -> list[str]:
    """What changed between two configurations, as `field: old -> new` (nested fields dotted)."""
    out = []
    for key in sorted(set(a) | set(b), key=str):
        x, y = a.get(key), b.get(key)
        name = f"{prefix}{key}"
        if isinstance(x, dict) and isinstance(y, dict):
            out += differences(x, y, name + ".")
        elif x != y:
            out.append(f"{name}: {_short(x)} -> {_short(y)}")
    return out


def _short(value) -> str:
    text = json.dumps(value, default=str) if not isinstance(value, str) else value
    return text if len(text) <= 40 else text[:16] + "..." + text[-8:]
