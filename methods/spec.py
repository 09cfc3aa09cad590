"""A method as declared in a file: what it is, not how it runs. Reading one needs no torch.

A method file is YAML (`methods/zoo/<name>.yaml`, or any path the user passes to `--methods`). Fields:

  description: one line, shown by `bench list`
  kind:        full | head | bitfit | peft         (how it runs: methods/<kind>.py)
  peft_type:   a peft PeftType name (kind peft): LORA, ADALORA, IA3, LOHA, LOKR, VERA, OFT, BOFT, FOURIERFT,
               LN_TUNING, PREFIX_TUNING, PROMPT_TUNING, P_TUNING, ...
  config:      keyword arguments of that peft config (r, lora_alpha, use_dora, ...)
  targets:     target modules per architecture family (transformer | cnn): a keyword picked from the model's own
               module names (attention, pointwise, all-linear, layernorm) or a list of names / a regex
  family_config: extra config keywords per family (IA3's feedforward_modules)
  not_on:      family -> why the method does not apply there (the run is recorded `skipped` with it)
  devices:     devices it runs on (default: any)
  quantize_base: int8 (freeze the base in int8: bitsandbytes on transformers, per-channel int8 convs on CNNs)
  lr:          default learning rate (a task may override it; --lr overrides both)

A peft `adapter_config.json` is accepted as it is: its `peft_type`, `target_modules` and the other keys
become the method (kind peft).
"""
from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field
from pathlib import Path

from bench.core.errors import UsageError

KINDS = ("full", "head", "bitfit", "peft")
FAMILIES = ("transformer", "cnn")
FIELDS = {"description", "kind", "peft_type", "config", "targets", "family_config", "not_on", "devices",
          "quantize_base", "lr", "name"}
# peft adapter_config.json keys that describe the saved adapter, not how to build it.
ADAPTER_ONLY_KEYS = {"base_model_name_or_path", "revision", "inference_mode", "auto_mapping", "peft_version",
                     "task_type", "modules_to_save"}


@dataclass
class MethodSpec:
    name: str
    kind: str
    description: str = ""
    lr: float = 1e-3
    peft_type: str | None = None
    config: dict = field(default_factory=dict)
    targets: dict = field(default_factory=dict)
    family_config: dict = field(default_factory=dict)
    not_on: dict = field(default_factory=dict)
    devices: list[str] | None = None
    quantize_base: str | None = None
    source: str = ""  # the file it came from
    overrides: dict = field(default_factory=dict)  # --set FIELD=VALUE applied to it

    @property
    def label(self) -> str:
        """The name shown in tables: `lora`, or `lora[r=16]` under --set overrides."""
        if not self.overrides:
            return self.name
        return f"{self.name}[{','.join(f'{k}={_show(v)}' for k, v in self.overrides.items())}]"

    def declared(self) -> dict:
        """Everything that defines the method (not where the file lies): what config ids hash."""
        return {"name": self.name, "kind": self.kind, "peft_type": self.peft_type, "config": self.config,
                "targets": self.targets, "family_config": self.family_config, "quantize_base": self.quantize_base,
                "lr": self.lr}

    def key_hyperparameters(self) -> str:
        keys = ("r", "init_r", "target_r", "lora_alpha", "use_dora", "use_rslora", "init_lora_weights",
                "block_size", "boft_block_size", "n_frequency", "num_virtual_tokens", "projection_prng_key")
        shown = [f"{k}={_show(self.config[k])}" for k in keys if k in self.config]
        if self.quantize_base:
            shown.insert(0, f"base={self.quantize_base}")
        return " ".join(shown)

    def with_overrides(self, overrides: dict) -> "MethodSpec":
        """A copy with FIELD=VALUE overrides: `lr`, a top-level field, or a peft config key (`r`, `lora_alpha`)."""
        spec = copy.deepcopy(self)
        for key, value in overrides.items():
            if key == "lr":
                spec.lr = float(value)
            elif key in ("description",):
                setattr(spec, key, value)
            else:
                spec.config[key] = value
            spec.overrides[key] = value
        return spec


def _show(value) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def load(path: str | Path) -> MethodSpec:
    """Read a method file: YAML (ours) or JSON (a peft adapter_config.json)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise UsageError(f"cannot read method file {str(path)!r} ({e.strerror})") from e
    if path.suffix == ".json":
        return from_adapter_config(json.loads(text), path)
    import yaml
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as e:
        raise UsageError(f"method file {str(path)!r} is not valid YAML ({str(e).splitlines()[0]})") from e
    return from_dict(data, name=data.get("name") or _name_of(path), source=str(path))


def _name_of(path: Path) -> str:
    return path.parent.name if path.name == "adapter_config.json" else path.stem


def from_dict(data: dict, name: str, source: str = "") -> MethodSpec:
    unknown = sorted(set(data) - FIELDS)
    where = f"method file {source!r}" if source else f"method {name!r}"
    if unknown:
        raise UsageError(f"{where}: unknown field(s) {', '.join(unknown)} (valid: {', '.join(sorted(FIELDS))})")
    kind = data.get("kind")
    if kind not in KINDS:
        raise UsageError(f"{where}: unknown kind {kind!r} (valid: {', '.join(KINDS)})")
    if kind == "peft" and not data.get("peft_type"):
        raise UsageError(f"{where}: kind peft needs a peft_type (e.g. LORA, IA3, LOHA)")
    for mapping in ("targets", "family_config", "not_on"):
        bad = sorted(set(data.get(mapping) or {}) - set(FAMILIES))
        if bad:
            raise UsageError(f"{where}: unknown architecture family {', '.join(bad)} in {mapping} "
                              f"(valid: {', '.join(FAMILIES)})")
    if data.get("quantize_base") not in (None, "int8"):
        raise UsageError(f"{where}: unknown quantize_base {data['quantize_base']!r} (valid: int8)")
    return MethodSpec(name=name, kind=kind, description=data.get("description", ""), lr=float(data.get("lr", 1e-3)),
                      peft_type=(data.get("peft_type") or None) and str(data["peft_type"]).upper(),
                      config=dict(data.get("config") or {}), targets=dict(data.get("targets") or {}),
                      family_config=dict(data.get("family_config") or {}), not_on=dict(data.get("not_on") or {}),
                      devices=data.get("devices"), quantize_base=data.get("quantize_base"), source=source)


def from_adapter_config(config: dict, path: Path) -> MethodSpec:
    """A peft adapter_config.json as it is: its type and keyword arguments; target_modules for every family."""
    if "peft_type" not in config:
        raise UsageError(f"{str(path)!r} has no peft_type: not a peft adapter_config.json")
    kwargs = {k: v for k, v in config.items() if k not in ADAPTER_ONLY_KEYS and k != "peft_type" and v is not None}
    targets = kwargs.pop("target_modules", None)
    return MethodSpec(name=_name_of(path), kind="peft", peft_type=str(config["peft_type"]).upper(), config=kwargs,
                      targets={f: targets for f in FAMILIES} if targets else {},
                      description=f"peft {config['peft_type']} from {path.name}", source=str(path))


def parse_value(text: str):
    """--set values: numbers, booleans and null as YAML reads them; anything else a string."""
    import yaml
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        return text
    if isinstance(value, str):  # YAML 1.1 reads 1e-3 (no dot) as a string
        try:
            return float(value)
        except ValueError:
            pass
    return value
