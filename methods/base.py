"""What a fine-tuning method does at run time: it decides which weights train and how the model is wrapped.

A method is declared in a file (methods/spec.py, methods/zoo/); its `kind` picks the behaviour here or in
methods/<kind>.py. The shared loop (bench/execute/train.py) calls, in order: `load_kwargs` (before loading, e.g. int8
loading), `apply` (freeze/wrap), `forward` (each training step), `on_step` (after every optimiser step),
`finish` (checks and extra figures), `save` (what the method must store; its tensor bytes are recorded).
A method whose `trains` is False (kind none: zero-shot) has no training loop: the model is scored as loaded.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path

import torch

from bench.core.errors import SkipRun  # noqa: F401  (re-exported: methods raise it)
from methods.spec import MethodSpec


@dataclass
class RunContext:
    task: object  # suites.base.Task
    budget: object  # suites.base.Budget
    total_steps: int
    device: torch.device
    head_names: list[str]
    precision: str = "fp32"  # fp16 trains through a grad scaler, which skips the steps whose gradients overflowed


class Method:
    uses_peft: bool = False
    can_merge: bool = False  # whether a merged copy can be timed (latency_merged_p50_ms)
    trains: bool = True  # False: nothing trains, the worker runs no training loop (kind none: zero-shot)

    def __init__(self, spec: MethodSpec):
        self.spec = spec

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def label(self) -> str:
        return self.spec.label

    def check_applies(self, model: torch.nn.Module, ctx: RunContext) -> None:
        """SkipRun with the declared reason where the method does not apply (architecture family, device)."""
        fam = family(model)
        if fam in self.spec.not_on:
            raise SkipRun(f"{self.spec.name} does not apply to {fam} models ({type(model).__name__}): "
                          f"{self.spec.not_on[fam]}")
        self.check_device(ctx)

    def check_device(self, ctx: RunContext) -> None:
        """SkipRun where the method declares other devices (checked before loading too: no model needed)."""
        if self.spec.devices and ctx.device.type not in self.spec.devices:
            why = f": {self.spec.devices_reason}" if self.spec.devices_reason else ""
            raise SkipRun(f"{self.spec.name} runs on {', '.join(self.spec.devices)} only, not {ctx.device.type}{why}")

    reserved_positions: int = 0  # positions of the model's table that the method's own tokens take
    added_positions: int = 0  # virtual tokens prepended to every input: each step computes over them too

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
        """Checks after training, and what the record gets: `info` (from the file too: an experiment folder's
        resets) and `metrics`."""
        return {"info": copy.deepcopy(self.spec.info), "metrics": {}}

    def merged_copy(self, model: torch.nn.Module) -> torch.nn.Module | None:
        """A copy with the adapter folded into the base weights (what a deployment serves), or None."""
        return None

    def save(self, model: torch.nn.Module, folder: Path) -> None:
        """Store what must be kept to reuse the result: the trainable tensors (peft: the adapter)."""
        from safetensors.torch import save_file
        folder.mkdir(parents=True, exist_ok=True)
        tensors = {n: p.detach().contiguous().cpu() for n, p in model.named_parameters() if p.requires_grad}
        save_file(tensors, str(folder / "trainable.safetensors"))


def family(model: torch.nn.Module) -> str:
    """The architecture family a method file declares targets for: `decoder` (a causal LM: it answers in words
    through its pretrained LM head), `transformer` (attention projections among its linear layers: an encoder
    with a task head), `cnn` (convolutions, no attention), else `other`."""
    if is_causal_lm(model):
        return "decoder"
    if attention_pair(model):
        return "transformer"
    if any(isinstance(m, torch.nn.Conv2d) for m in model.modules()):
        return "cnn"
    return "other"


def attention_pair(model: torch.nn.Module) -> list[str] | None:
    """The query/value projections among the model's linear layers, by their own names (renamed architectures
    keep working); the `attention` target keyword of a method file."""
    linear_leaves = {n.rsplit(".", 1)[-1] for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)}
    for pair in (["query", "value"], ["q_proj", "v_proj"], ["q_lin", "v_lin"]):
        if set(pair) <= linear_leaves:
            return pair
    return None


def is_causal_lm(model: torch.nn.Module) -> bool:
    """Whether the model is a causal LM: its class is one transformers' AutoModelForCausalLM builds (Llama's
    *ForCausalLM, GPT-2's *LMHeadModel, ...), a peft wrapper looked through."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    name = type(base).__name__
    if name.endswith("ForCausalLM"):
        return True
    try:
        from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES
    except ImportError:
        return False
    return any(name == v or (isinstance(v, (list, tuple)) and name in v)
               for v in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES.values())


def head_names(model: torch.nn.Module) -> list[str]:
    """Top-level module names of the task head (transformers' *For...Classification models). A causal LM has
    none: it answers through its pretrained LM head (tied to its input embeddings in SmolLM2), nothing new to
    train or to keep in peft's modules_to_save."""
    if is_causal_lm(model):
        return []
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
        total += n
        if param.requires_grad:
            trainable += n
            # peft prefixes names (base_model.model.) and copies heads (modules_to_save.default)
            short = name.removeprefix("base_model.model.")
            if in_modules(short, heads):
                head += n
    return {"trainable_params": trainable, "total_params": total,
            "trainable_pct": 100.0 * trainable / total, "head_params": head}


def norm_layers(model: torch.nn.Module) -> list[str]:
    """The leaf names of the model's normalisation layers, found by class: nn.LayerNorm or any *LayerNorm /
    *RMSNorm class (BERT: `LayerNorm`; Llama: `input_layernorm`, `post_attention_layernorm`, `norm`); the
    `layernorm` target keyword on transformers and decoders."""
    names = {n.rsplit(".", 1)[-1] for n, m in model.named_modules()
             if n and (isinstance(m, torch.nn.LayerNorm) or type(m).__name__.endswith(("LayerNorm", "RMSNorm")))}
    return sorted(names)


def pointwise_convs(model: torch.nn.Module) -> list[str]:
    return [n for n, m in model.named_modules()
            if isinstance(m, torch.nn.Conv2d) and m.kernel_size == (1, 1) and m.groups == 1]
