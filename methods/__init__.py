"""The method registry: name -> method. A new method is one module here plus one line below."""
from __future__ import annotations

from bench.errors import UnknownName
from methods import adalora, bitfit, full, head, int8_lora, lora
from methods.base import Method, RunContext, SkipRun

METHODS: dict[str, Method] = {m.METHOD.name: m.METHOD for m in (full, head, bitfit, lora, adalora, int8_lora)}


def get_method(name: str) -> Method:
    if name not in METHODS:
        raise UnknownName(f"unknown method {name!r} (valid: {', '.join(METHODS)})")
    return METHODS[name]


__all__ = ["METHODS", "Method", "RunContext", "SkipRun", "get_method"]
