"""The method registry: every file in methods/zoo/ is a method, named by its file. Reading it needs no torch.

A new method is one new file in methods/zoo/ (see methods/spec.py for the fields); a user's own method is a
file passed by path (`--methods lora,path/to/mine.yaml`), or a folder laid out as one of peft's method_comparison
experiments (`--methods path/to/experiment/`). `--set lora.r=4,8,16` turns one method into a sweep.
"""
from __future__ import annotations

import itertools
from pathlib import Path

from bench.core.errors import SkipRun, UsageError
from methods import spec as specs
from methods.spec import MethodSpec

ZOO = Path(__file__).parent / "zoo"
KIND_ORDER = {kind: i for i, kind in enumerate(specs.KINDS)}


def _zoo() -> dict[str, MethodSpec]:
    found = [specs.load(path) for path in sorted(ZOO.glob("*.yaml"))]
    # Code-backed kinds first (full, head, bitfit), then peft methods, plain LoRA leading them.
    found.sort(key=lambda s: (KIND_ORDER[s.kind], s.quantize_base is not None, s.name != "lora", s.name))
    return {s.name: s for s in found}


METHODS: dict[str, MethodSpec] = _zoo()


def is_path(name: str) -> bool:
    return name.endswith((".yaml", ".yml", ".json")) or "/" in name


def get_spec(name: str) -> MethodSpec:
    """A registered method by name, or a method file or peft experiment folder by path."""
    if is_path(name):
        if not Path(name).exists():
            raise UsageError(f"method file {name!r} not found")
        return specs.load(name)
    if name not in METHODS:
        raise UsageError(f"unknown method {name!r} (valid: {', '.join(METHODS)}, or a path to a method file)")
    return METHODS[name]


def resolve(names: list[str], sets: list[str] | None = None) -> list[MethodSpec]:
    """The methods to run: names or files, each expanded by its --set overrides (`lora.r=4,8,16`: three)."""
    chosen = [get_spec(n) for n in names]
    by_name = {s.name: s for s in chosen}
    overrides: dict[str, dict[str, list]] = {}
    for item in sets or []:
        target, _, values = item.partition("=")
        method, _, field = target.partition(".")
        if not values or not field:
            raise UsageError(f"bad --set {item!r} (expected METHOD.FIELD=VALUE[,VALUE...], e.g. lora.r=16)")
        if method not in by_name:
            raise UsageError(f"--set {item!r}: method {method!r} is not among those run "
                              f"(valid: {', '.join(by_name)})")
        overrides.setdefault(method, {})[field] = [specs.parse_value(v) for v in values.split(",")]
    out = []
    for s in chosen:
        fields = overrides.get(s.name, {})
        for combo in itertools.product(*fields.values()):
            out.append(s.with_overrides(dict(zip(fields, combo))))
    labels = [s.label for s in out]
    if len(set(labels)) != len(labels):
        raise UsageError(f"two methods share a name ({', '.join(sorted({x for x in labels if labels.count(x) > 1}))})"
                          f": rename a method file")
    return out


def build(spec: MethodSpec):
    """The run-time behaviour of a declared method (imports torch)."""
    if spec.kind == "full":
        from methods.full import Full
        return Full(spec)
    if spec.kind == "head":
        from methods.head import HeadOnly
        return HeadOnly(spec)
    if spec.kind == "bitfit":
        from methods.bitfit import BitFit
        return BitFit(spec)
    if spec.kind == "none":
        from methods.none import NoTraining
        return NoTraining(spec)
    if spec.peft_type == "ADALORA":
        from methods.adalora import AdaLoRA
        return AdaLoRA(spec)
    from methods.peft_method import PeftMethod
    return PeftMethod(spec)


def get_method(name: str):
    return build(get_spec(name))


__all__ = ["METHODS", "MethodSpec", "SkipRun", "build", "get_method", "get_spec", "resolve"]
