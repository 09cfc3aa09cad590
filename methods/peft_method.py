"""kind: peft — any peft method, built from its declared type and keyword arguments.

What the file does not say is picked from the model: the target modules (by architecture family and
keyword, methods/spec.py), the head to keep trainable (`modules_to_save`), the peft task type where a
prompt-based method needs one. Checks that keep a figure honest:
- a method that adapts zero layers fails its run (it would train the head alone under a misleading name);
- our trainable-parameter count must equal peft's own;
- DoRA skips layers with an all-zero output channel (their weight norm is 0, DoRA would divide by it).
With `quantize_base: int8` the frozen base is held in int8 (methods/int8.py) under the adapter.
"""
from __future__ import annotations

import copy

import torch

from methods import int8
from methods.base import Method, SkipRun, attention_pair, count_params, family, pointwise_convs

PROMPT_TYPES = {"PREFIX_TUNING", "PROMPT_TUNING", "P_TUNING", "MULTITASK_PROMPT_TUNING"}
INPUT_PROMPT_TYPES = PROMPT_TYPES - {"PREFIX_TUNING"}  # they lengthen the input, so the logits too
NO_MERGE = PROMPT_TYPES | {"ADAPTION_PROMPT", "POLY"}


class PeftMethod(Method):
    uses_peft = True

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
        classifier returns logits for those positions too, and its loss would not line up with the labels."""
        labels = batch.get("labels")
        if self.added_positions and labels is not None and labels.dim() == 2:
            batch = {**batch, "labels": torch.nn.functional.pad(labels, (self.added_positions, 0), value=-100)}
        return model(**batch)

    def load_kwargs(self, ctx):
        return int8.load_kwargs(ctx) if self.spec.quantize_base == "int8" else {}

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
            kwargs["target_modules"] = self.targets(model, fam)
            kwargs["modules_to_save"] = list(ctx.head_names)  # a fresh list: peft appends to the one it gets
            if kwargs.get("use_dora"):
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
                   "layernorm": lambda: ["LayerNorm"] if fam == "transformer" else r".*\.normalization$"}
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
        config = PEFT_TYPE_TO_CONFIG_MAPPING[self.spec.peft_type](**self.peft_config(model, ctx))
        return get_peft_model(model, config)

    def apply(self, model, ctx):
        self.check_applies(model, ctx)
        if self.spec.quantize_base == "int8":
            model = int8.quantize_base(model, ctx)
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
        out = {"info": {"peft_config": serialised_config(model)}, "metrics": {}}
        if not self.prompt_based:
            out["metrics"]["adapted_layers"] = len(adapted_layers(model))
        if self.spec.quantize_base == "int8":
            extra = int8.figures(model)
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
