"""Frozen Conv2d / Linear weights held in int8, dequantised on the fly: the int8 base where bitsandbytes has none.

bitsandbytes (like torch's dynamic quantisation) replaces only nn.Linear; in a CNN that is the classifier
alone, which trains. Here each frozen conv and linear layer of the body keeps its weight as int8 with
one float32 scale per output channel (symmetric: scale = max|w| / 127) and rebuilds the float weight in
every forward pass. The float weight is dropped, so the model really holds int8.

The layers stay subclasses of nn.Conv2d / nn.Linear, so peft wraps them with its ordinary LoRA layers
(adapters in float32) and transformers' TF-style padding still reads their stride and kernel size.
Built through the ordinary constructor (peft builds its adapter convs with `type(base_layer)(...)`)
they are plain float layers: only `quantize_weight()` turns one into int8.
"""
from __future__ import annotations

import torch
from torch import nn

BACKEND = "per-channel-int8 (methods/int8_weights.py)"


def quantize_per_channel(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(int8 values, float32 scales shaped [out, 1, ...]) with weight ~= values * scales."""
    w = weight.detach().float()
    absmax = w.abs().amax(dim=tuple(range(1, w.dim())), keepdim=True)
    scale = (absmax / 127).clamp_min(torch.finfo(torch.float32).tiny)  # an all-zero channel stays zero
    return torch.round(w / scale).clamp(-127, 127).to(torch.int8), scale


class Int8WeightMixin:
    """`weight` reads the float parameter until `quantize_weight()`, then int8 values times scales."""

    @property
    def weight(self) -> torch.Tensor:
        params = self._parameters
        if "weight_int8" in params:
            return params["weight_int8"].to(self.weight_scale.dtype) * self.weight_scale
        if "weight" in params:
            return params["weight"]
        raise AttributeError("weight")  # during __init__, before the parameter exists

    def quantize_weight(self) -> None:
        values, scale = quantize_per_channel(self._parameters.pop("weight"))
        # A frozen Parameter (not a buffer), so parameter counts and byte counts see the base weight.
        self.weight_int8 = nn.Parameter(values, requires_grad=False)
        self.register_buffer("weight_scale", scale)


class Int8Conv2d(Int8WeightMixin, nn.Conv2d):
    pass


class Int8Linear(Int8WeightMixin, nn.Linear):
    pass


INT8_CLASS = {nn.Conv2d: Int8Conv2d, nn.Linear: Int8Linear}


def quantize_frozen_weights(model: nn.Module, keep_float: list[str]) -> int:
    """Turn every nn.Conv2d / nn.Linear outside the modules `keep_float` (the trainable head) into its int8
    form and freeze it; returns how many layers were quantised."""
    count = 0
    for name, module in model.named_modules():
        if type(module) not in INT8_CLASS or any(name == k or name.startswith(k + ".") for k in keep_float):
            continue
        module.weight.requires_grad_(False)
        module.__class__ = INT8_CLASS[type(module)]  # same state, new forward-time weight (cf. torch parametrize)
        module.quantize_weight()
        count += 1
    return count


def int8_layers(model: nn.Module) -> list[str]:
    return [n for n, m in model.named_modules() if isinstance(m, Int8WeightMixin) and "weight_int8" in m._parameters]
