"""What a fine-tuning method is: it decides which weights train and how the model is wrapped.

The shared loop (bench/train.py) calls, in order: `load_kwargs` (before loading, e.g. int8 loading),
`apply` (freeze/wrap), `forward` (each training step), `on_step` (after every optimiser step),
`finish` (checks and extra figures), `save` (what the method must store; its size on disk is recorded).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import save_file


from bench.errors import SkipRun  # noqa: F401  (re-exported: methods raise it)


@dataclass
class RunContext:
    task: object  # suites.base.Task
    budget: object  # suites.base.Budget
    total_steps: int
    device: torch.device
    head_names: list[str]


class Method:
    name: str = ""
    default_lr: float = 1e-3
    description: str = ""
    uses_peft: bool = False

    def load_kwargs(self, ctx: RunContext) -> dict:
        return {}

    def apply(self, model: torch.nn.Module, ctx: RunContext) -> torch.nn.Module:
        raise NotImplementedError

    def forward(self, model: torch.nn.Module, batch: dict):
        """The training forward pass (its `.loss` is what the optimiser minimises)."""
        return model(**batch)

    def on_step(self, model: torch.nn.Module, step: int) -> None:
        pass

    def finish(self, model: torch.nn.Module, ctx: RunContext) -> dict:
        return {}

    def save(self, model: torch.nn.Module, folder: Path) -> None:
        """Store what must be kept to reuse the result: the trainable tensors (peft: the adapter)."""
        if self.uses_peft:
            model.save_pretrained(folder)
            return
        folder.mkdir(parents=True, exist_ok=True)
        tensors = {n: p.detach().contiguous().cpu() for n, p in model.named_parameters() if p.requires_grad}
        save_file(tensors, str(folder / "trainable.safetensors"))


def head_names(model: torch.nn.Module) -> list[str]:
    """Top-level module names of the task head (transformers' *For...Classification models)."""
    for name in ("classifier", "score", "head", "fc"):
        if isinstance(getattr(model, name, None), torch.nn.Module):
            return [name]
    raise ValueError(f"cannot find the task head of {type(model).__name__}")


def freeze_all_but(model: torch.nn.Module, keep) -> None:
    """requires_grad = keep(name, param) for every parameter."""
    for name, param in model.named_parameters():
        param.requires_grad_(bool(keep(name, param)))


def in_modules(name: str, modules: list[str]) -> bool:
    return any(name == m or name.startswith(m + ".") for m in modules)


def count_params(model: torch.nn.Module, heads: list[str]) -> dict:
    """Trainable / total parameters, the same way peft's get_nb_trainable_parameters counts them."""
    trainable = total = head = 0
    for name, param in model.named_parameters():
        n = param.numel()
        if param.__class__.__name__ == "Params4bit":  # packed two per byte (peft counts it so too)
            n *= 2
        total += n
        if param.requires_grad:
            trainable += n
            # peft prefixes names (base_model.model.) and copies heads (modules_to_save.default)
            short = name.removeprefix("base_model.model.")
            if in_modules(short, heads):
                head += n
    return {"trainable_params": trainable, "total_params": total,
            "trainable_pct": 100.0 * trainable / total, "head_params": head}


def lora_targets(model: torch.nn.Module) -> list[str] | str:
    """Attention projections for transformers, pointwise convs for CNNs, else all linear layers.

    Picked from the model's own module names so that renamed architectures keep working.
    """
    linear_leaves = {n.rsplit(".", 1)[-1] for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)}
    for pair in (["query", "value"], ["q_proj", "v_proj"], ["q_lin", "v_lin"]):
        if set(pair) <= linear_leaves:
            return pair
    pointwise = [n for n, m in model.named_modules()
                 if isinstance(m, torch.nn.Conv2d) and m.kernel_size == (1, 1) and m.groups == 1]
    if pointwise:
        return pointwise
    return "all-linear"
