"""A method as declared in a file: what it is, not how it runs. Reading one needs no torch.

A method file is YAML (`methods/zoo/<name>.yaml`, or any path the user passes to `--methods`). Fields:

  description: one line, shown by `bench list`
  kind:        full | head | bitfit | peft | none  (how it runs: methods/<kind>.py; none: nothing trains)
  peft_type:   a peft PeftType name (kind peft): LORA, ADALORA, IA3, LOHA, LOKR, VERA, OFT, BOFT, FOURIERFT,
               LN_TUNING, PREFIX_TUNING, PROMPT_TUNING, P_TUNING, ...
  config:      keyword arguments of that peft config (r, lora_alpha, use_dora, ...)
  targets:     target modules per architecture family (transformer | cnn | decoder): a keyword picked from the
               model's own modules (attention, pointwise, all-linear, layernorm: its normalisation layers by class,
               peft-default: peft's own default for the model type) or a list of names / a regex
  family_config: extra config keywords per family (IA3's feedforward_modules)
  not_on:      family -> why the method does not apply there (the run is recorded `skipped` with it)
  devices:     devices it runs on (default: any)
  devices_reason: why it runs on those devices only (the skip reason on any other)
  quantize_base: int8 (freeze the base in int8: bitsandbytes on transformers, per-channel int8 convs on CNNs)
               | int4 (bitsandbytes 4-bit NF4, double quantisation, bf16 compute: QLoRA's base)
  lr:          default learning rate (a task may override it; --lr overrides both)
  sources:     where each default came from: `lr`, or a config key -> one line (which commit set it, on what data
               it was chosen). Provenance only: it is in no config id, and editing it re-tunes nothing.

A peft `adapter_config.json` is accepted as it is: its `peft_type`, `target_modules` and the other keys
become the method (kind peft); no `target_modules`: peft's default for the model type. So is a folder laid out
as peft's `method_comparison` declares an experiment: `adapter_config.json` (absent: full fine-tuning) and an
optional `training_params.json`, whose `optimizer_kwargs.lr` is the method's rate (lr_source `experiment`). The
fields that tie a config to the base model it was written for, or to its run's step count (RESET_FIELDS), are
dropped, so peft fills them for this model and the budget sets the schedule; the record's `info` names them
and the training parameters not used (`info.experiment`, or `info.adapter_config` for a bare JSON file).
"""
from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field
from pathlib import Path

from bench.core.errors import UsageError

KINDS = ("full", "head", "bitfit", "peft", "none")
FAMILIES = ("transformer", "cnn", "decoder")
QUANTIZED_BASES = ("int8", "int4")
HASHED_FAMILIES = ("transformer", "cnn")  # MethodSpec.declared(): the families config ids always hashed
FIELDS = {"description", "kind", "peft_type", "config", "targets", "family_config", "not_on", "devices",
          "devices_reason", "quantize_base", "lr", "name", "sources"}
# peft config fields written for the base model an adapter was made for (prompt methods: its width and depth),
# or for its run's step count (AdaLoRA's schedule): another model or budget needs its own, so they are dropped
# (peft fills the first for this model; methods/adalora.py sets the schedule from the budget).
RESET_FIELDS = {"token_dim", "num_layers", "num_attention_heads", "num_transformer_submodules"}
RESET_FIELDS_OF = {"ADALORA": {"total_step", "tinit", "tfinal", "deltaT"}}
EXPERIMENT_FILES = ("adapter_config.json", "training_params.json")
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
    devices_reason: str = ""
    quantize_base: str | None = None
    source: str = ""  # the file it came from
    overrides: dict = field(default_factory=dict)  # --set FIELD=VALUE applied to it
    sources: dict = field(default_factory=dict)  # default -> where it came from (not hashed: provenance)
    lr_from: str = ""  # "experiment": `lr` is the rate of a peft experiment's training_params.json
    info: dict = field(default_factory=dict)  # what the run's record `info` gets from the file (what was reset)

    @property
    def label(self) -> str:
        """The name shown in tables: `lora`, or `lora[r=16]` under --set overrides."""
        if not self.overrides:
            return self.name
        return f"{self.name}[{','.join(f'{k}={_show(v)}' for k, v in self.overrides.items())}]"

    def declared(self, family: str | None = None) -> dict:
        """Everything that defines the method (not where the file lies): what config ids hash.

        The per-family fields hold the families config ids have always hashed (transformer, cnn); a later
        family's entries (decoder) are added, under its name, only when asked for (`family="decoder"`, a run on
        a causal LM), so adding a family to a method file changes no earlier run's id."""
        out = {"name": self.name, "kind": self.kind, "peft_type": self.peft_type, "config": self.config,
               "targets": {f: v for f, v in self.targets.items() if f in HASHED_FAMILIES},
               "family_config": {f: v for f, v in self.family_config.items() if f in HASHED_FAMILIES},
               "quantize_base": self.quantize_base, "lr": self.lr}
        if family and family not in HASHED_FAMILIES:
            own = {k: v for k, v in (("targets", self.targets.get(family)),
                                     ("family_config", self.family_config.get(family))) if v is not None}
            if own:
                out[family] = own
        return out

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
    """Read a method file: YAML (ours) or JSON (a peft adapter_config.json), or a peft experiment folder."""
    path = Path(path)
    if path.is_dir():
        return from_experiment(path)
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
    if data.get("quantize_base") not in (None, *QUANTIZED_BASES):
        raise UsageError(f"{where}: unknown quantize_base {data['quantize_base']!r} "
                          f"(valid: {', '.join(QUANTIZED_BASES)})")
    sources = data.get("sources") or {}
    defaults = {"lr", *(data.get("config") or {}), *(k for v in (data.get("family_config") or {}).values() for k in v)}
    if not isinstance(sources, dict) or not all(isinstance(v, str) for v in sources.values()):
        raise UsageError(f"{where}: sources must map a default (lr or a config key) to one line of text")
    stray = sorted(set(sources) - defaults)
    if stray:
        raise UsageError(f"{where}: sources name {', '.join(stray)}, which the file does not set "
                          f"(valid: {', '.join(sorted(defaults))})")
    return MethodSpec(name=name, kind=kind, description=data.get("description", ""), lr=float(data.get("lr", 1e-3)),
                      peft_type=(data.get("peft_type") or None) and str(data["peft_type"]).upper(),
                      config=dict(data.get("config") or {}), targets=dict(data.get("targets") or {}),
                      family_config=dict(data.get("family_config") or {}), not_on=dict(data.get("not_on") or {}),
                      devices=data.get("devices"), devices_reason=str(data.get("devices_reason") or ""),
                      quantize_base=data.get("quantize_base"), source=source, sources=dict(sources))


def from_adapter_config(config: dict, path: Path) -> MethodSpec:
    """A peft adapter_config.json as it is: its type and keyword arguments; target_modules for every family
    (none given: peft's default for the model type). The fields tied to another base model or step count are
    dropped and named in `info.adapter_config.reset`."""
    if not isinstance(config, dict) or "peft_type" not in config:
        raise UsageError(f"{str(path)!r} has no peft_type: not a peft adapter_config.json")
    peft_type = str(config["peft_type"]).upper()
    kwargs = {k: v for k, v in config.items() if k not in ADAPTER_ONLY_KEYS and k != "peft_type" and v is not None}
    reset = sorted(k for k in kwargs if k in RESET_FIELDS | RESET_FIELDS_OF.get(peft_type, set()))
    for key in reset:
        del kwargs[key]
    targets = kwargs.pop("target_modules", None) or "peft-default"
    info = {"file": str(path)}
    if reset:
        info["reset"] = reset
    if config.get("base_model_name_or_path"):
        info["base_model"] = config["base_model_name_or_path"]  # what it was written for (not loaded)
    return MethodSpec(name=_name_of(path), kind="peft", peft_type=peft_type, config=kwargs,
                      targets={f: targets for f in FAMILIES},
                      description=f"peft {config['peft_type']} from {path.name}", source=str(path),
                      info={"adapter_config": info} if len(info) > 1 else {})


def from_experiment(folder: Path) -> MethodSpec:
    """A peft `method_comparison` experiment folder: its adapter_config.json (absent: full fine-tuning) and
    training_params.json, whose `optimizer_kwargs.lr` is the rate; the folder's name is the method's."""
    adapter, params = (folder / name for name in EXPERIMENT_FILES)
    if not adapter.is_file() and not params.is_file():
        raise UsageError(f"{str(folder)!r} is not a peft experiment folder (no {' or '.join(EXPERIMENT_FILES)})")
    training = _read_json(params) if params.is_file() else {}
    if not isinstance(training, dict) or not isinstance(training.get("optimizer_kwargs", {}), dict):
        raise UsageError(f"{str(params)!r}: expected a JSON object with an optimizer_kwargs object, as peft's "
                          f"method_comparison writes it")
    name = folder.resolve().name
    if adapter.is_file():
        spec = from_adapter_config(_read_json(adapter), adapter)
        experiment = {k: v for k, v in spec.info.pop("adapter_config", {}).items() if k != "file"}
    else:
        spec, experiment = MethodSpec(name=name, kind="full"), {}
    optimizer = training.get("optimizer_kwargs", {})
    ignored = [k for k in training if k != "optimizer_kwargs"] + \
        [f"optimizer_kwargs.{k}" for k in optimizer if k != "lr"]
    spec.name, spec.source = name, str(folder)
    spec.description = (f"peft experiment {name}: " + (f"peft {spec.peft_type}" if spec.kind == "peft" else
                                                       "full fine-tuning (no adapter_config.json)"))
    info = {"folder": str(folder), **experiment}
    if "lr" in optimizer:
        try:
            spec.lr, spec.lr_from = float(optimizer["lr"]), "experiment"
        except (TypeError, ValueError) as e:
            raise UsageError(f"{str(params)!r}: optimizer_kwargs.lr {optimizer['lr']!r} is not a number") from e
    else:  # peft's own runs fall back on their default_training_params.json, written for another model
        from methods import METHODS  # the zoo's rate for the same method (lr_source default)
        same = next((s for s in METHODS.values() if (s.kind, s.peft_type) == (spec.kind, spec.peft_type)
                     and not s.quantize_base), None)
        if same is not None:
            spec.lr = same.lr
            info["lr_from_zoo"] = same.name
    if ignored:
        info["ignored_training_params"] = ignored
    spec.info = {"experiment": info}
    return spec


def _read_json(path: Path):
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise UsageError(f"cannot read {str(path)!r} ({e.strerror})") from e
    except json.JSONDecodeError as e:
        raise UsageError(f"{str(path)!r} is not valid JSON ({e})") from e


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
