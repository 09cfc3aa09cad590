"""kind: peft — any peft method, built from its declared type and keyword arguments.

What the file does not say is picked from the model: the target modules (by architecture family and
keyword, methods/spec.py), the head to keep trainable (`modules_to_save`), the peft task type where a
prompt-based method needs one. Checks that keep a figure honest:
- a method that adapts zero layers fails its run (it would train the head alone under a misleading name);
- our trainable-parameter count must equal peft's own;
- DoRA skips layers with an all-zero output channel (their weight norm is 0, DoRA would divide by it).
With `quantize_base: int8` the frozen base is held in int8 (methods/int8.py) under the adapter; with `int4`,
in bitsandbytes' 4-bit NF4 (methods/int4.py: QLoRA's base).
"""
from __future__ import annotations

import copy

import torch

from methods import int4, int8
from methods.base import Method, SkipRun, attention_pair, count_params, family, norm_layers, pointwise_convs

PROMPT_TYPES = {"PREFIX_TUNING", "PROMPT_TUNING", "P_TUNING", "MULTITASK_PROMPT_TUNING"}
INPUT_PROMPT_TYPES = PROMPT_TYPES - {"PREFIX_TUNING"}  # they lengthen the input, so the logits too
NO_MERGE = PROMPT_TYPES | {"ADAPTION_PROMPT", "POLY"}


QUANTIZERS = {"int8": int8, "int4": int4}  # quantize_base -> its module: load_kwargs, quantize_base, figures


class PeftMethod(Method):
    uses_peft = True
    task_type: str | None = None  # the task's peft task type (SEQ_CLS, TOKEN_CLS, CAUSAL_LM), set by apply

    @property
    def prompt_based(self) -> bool:
        return self.spec.peft_type in PROMPT_TYPES

    @property
    def reserved_positions(self) -> int:
        return int(self.spec.config.get("num_virtual_tokens", 0)) if self.prompt_based else 0

    @property
    def added_positions(self) -> int:
        return int(self.spec.config.get("num_virtual_tokens", 0)) if self.spec.peft_type in INPUT_PROMPT_TYPES else 0

    @property
    def can_merge(self) -> bool:
        return self.spec.peft_type not in NO_MERGE and not self.spec.quantize_base

    def forward(self, model, batch):
        """Token labels get an ignored label for each virtual token that an input prompt prepends: peft's token
        classifier returns logits for those positions too, and its loss would not line up with the labels. A
        causal LM's labels are not padded here: peft's PeftModelForCausalLM prepends the ignored labels itself."""
        labels = batch.get("labels")
        if self.added_positions and self.task_type != "CAUSAL_LM" and labels is not None and labels.dim() == 2:
            batch = {**batch, "labels": torch.nn.functional.pad(labels, (self.added_positions, 0), value=-100)}
        return model(**batch)

    def load_kwargs(self, ctx):
        if not self.spec.quantize_base:
            return {}
        self.check_device(ctx)  # before a quantised load that the run would skip anyway
        return QUANTIZERS[self.spec.quantize_base].load_kwargs(ctx)

    def peft_config(self, model, ctx) -> dict:
        """The peft config's keyword arguments for this model: declared config + targets + head."""
        fam = family(model)
        kwargs = copy.deepcopy(self.spec.config)
        kwargs.update(copy.deepcopy(self.spec.family_config.get(fam, {})))
        if self.prompt_based:
            task_type = getattr(ctx.task, "peft_task_type", None)
            if task_type is None:
                raise SkipRun(f"{self.spec.name} adds virtual tokens to a text model's input; {type(model).__name__} "
                              f"({fam}) takes images")
            kwargs["task_type"] = task_type  # peft keeps the head trainable itself for these
        else:
            targets = self.targets(model, fam)
            if targets is not None:
                kwargs["target_modules"] = targets
            kwargs["modules_to_save"] = list(ctx.head_names)  # a fresh list: peft appends to the one it gets
            if kwargs.get("use_dora") and targets is not None:
                dead = zero_norm_layers(model, kwargs["target_modules"])
                if dead:
                    kwargs["exclude_modules"] = sorted(set(kwargs.get("exclude_modules") or []) | set(dead))
        return kwargs

    def targets(self, model, fam: str):
        declared = self.spec.targets.get(fam)
        if declared is None:
            raise SkipRun(f"{self.spec.name} declares no target modules for {fam} models ({type(model).__name__})")
        keyword = {"attention": lambda: attention_pair(model), "pointwise": lambda: pointwise_convs(model),
                   "all-linear": lambda: "all-linear",
                   "layernorm": lambda: r".*\.normalization$" if fam == "cnn" else norm_layers(model)}
        if declared == "peft-default":
            return None  # peft picks its default target modules for the model type
        if isinstance(declared, str) and declared in keyword:
            found = keyword[declared]()
            if not found:
                raise SkipRun(f"{self.spec.name}: {type(model).__name__} has no {declared} modules to adapt")
            return found
        return declared  # a list of module names, or a regex string

    def build(self, model, ctx):
        from peft import get_peft_model
        from peft.mapping import PEFT_TYPE_TO_CONFIG_MAPPING
        if self.spec.peft_type not in PEFT_TYPE_TO_CONFIG_MAPPING:
            raise SkipRun(f"peft has no method type {self.spec.peft_type!r} "
                          f"(known: {', '.join(sorted(PEFT_TYPE_TO_CONFIG_MAPPING))})")
        kwargs = self.peft_config(model, ctx)
        config = PEFT_TYPE_TO_CONFIG_MAPPING[self.spec.peft_type](**kwargs)
        try:
            return get_peft_model(model, config)
        except ValueError as e:
            if "n_frequency" in str(e):  # FourierFT: more coefficients than a small layer has weights
                raise SkipRun(f"{self.spec.name} does not fit {type(model).__name__}: {e}") from e
            if self.prompt_based or "target_modules" in kwargs or "target_modules" not in str(e):
                raise
            model_type = getattr(getattr(model, "config", None), "model_type", type(model).__name__)
            raise SkipRun(f"{self.spec.name} names no target_modules and peft has no default for {model_type} "
                          f"models") from e

    def apply(self, model, ctx):
        self.task_type = getattr(ctx.task, "peft_task_type", None)
        self.check_applies(model, ctx)
        if self.spec.quantize_base:
            model = QUANTIZERS[self.spec.quantize_base].quantize_base(model, ctx)
        model = self.build(model, ctx)
        if not self.prompt_based and not adapted_layers(model):
            raise RuntimeError(f"{self.spec.name} adapted 0 layers of {type(model.base_model.model).__name__}: "
                               f"only the head would train")
        ours = count_params(model, ctx.head_names)["trainable_params"]
        theirs, _ = model.get_nb_trainable_parameters()
        if ours != theirs:
            raise RuntimeError(f"trainable parameters: we count {ours}, peft counts {theirs}")
        return model

    def finish(self, model, ctx):
        out = super().finish(model, ctx)
        out["info"]["peft_config"] = serialised_config(model)
        if not self.prompt_based:
            out["metrics"]["adapted_layers"] = len(adapted_layers(model))
        if self.spec.quantize_base:
            extra = QUANTIZERS[self.spec.quantize_base].figures(model)
            out["metrics"].update(extra["metrics"])
            out["info"].update(extra["info"])
        return out

    def merged_copy(self, model):
        if not self.can_merge:
            return None
        return copy.deepcopy(model).merge_and_unload()

    def save(self, model, folder):
        model.save_pretrained(folder)


def adapted_layers(model) -> list[str]:
    from peft.tuners.tuners_utils import BaseTunerLayer
    return [n for n, m in model.named_modules() if isinstance(m, BaseTunerLayer)]


def serialised_config(model) -> dict:
    """The adapter's config as peft writes it to adapter_config.json."""
    import json
    config = model.peft_config["default"].to_dict()
    return json.loads(json.dumps(config, default=lambda v: sorted(v) if isinstance(v, set) else str(v)))


def zero_norm_layers(model, targets) -> list[str]:
    """Target layers with an all-zero output channel: DoRA divides by each channel's weight norm."""
    import re
    names = []
    for name, module in model.named_modules():
        if not isinstance(module, (torch.nn.Linear, torch.nn.Conv2d)):
            continue
        if isinstance(targets, str):
            hit = targets == "all-linear" or re.fullmatch(targets, name)
        else:
            hit = any(name == t or name.endswith("." + t) for t in targets)
        if hit and (module.weight.detach().flatten(1).norm(dim=1) == 0).any():
            names.append(name)
    return names
