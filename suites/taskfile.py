"""A task is a YAML file (suites/tasks/<name>.yaml, or any path given to --tasks). Reading it needs no torch.

Fields (docs/your-own-task.md has them with examples):
  name          the task's name in tables and records (default: the file's name)
  kind          text-classification | token-classification | image-classification (the code lives in the kinds)
  description   one line for `bench list`
  data          where the splits come from, either
                  {train: SRC, eval: SRC, dev: SRC}   local files: a CSV/TSV/JSON/JSONL/Parquet file, a glob, or a
                                                      folder of images with one subfolder per class; relative to
                                                      the task file; dev is optional (absent: carved from train)
                  {hub: ID, config:, revision:, data_dir:, local: SUBDIR, splits: {train:, eval:, dev:}}
                                                      a Hub dataset (or a local folder in its layout), read from
                                                      <data dir>/SUBDIR/<split>.parquet when a data dir holds it
  columns       which columns the kind reads: text (+ text_pair) and label; tokens and tags; image and label
  labels        class names, when the data's label feature carries none (else: the sorted distinct training values)
  dev_examples  how many training rows to carve as the dev set when there is no dev split (default 1000, at most
                a fifth of training)
  metric        the headline metric: accuracy or macro_f1 (classification), entity_f1 (token classification)
  model         the default model (Hub id or folder; --model overrides it); model_local: its folder name under
                the models dir, when that differs from the id
  budgets       {smoke|quick|full: {train_examples, epochs, batch_size, max_length, eval_examples, ...}}; absent
                budgets are derived from the training split's size (suites/base.py `default_budgets`)
  lr_overrides  {method: rate} a task's model needs whatever the tuning (the smoke tasks' random models)
  note          a caveat printed with the task's results
  suite         the suite a task given by path belongs to in records (default: custom)
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from pathlib import Path

from bench.core.errors import UsageError
from suites.base import Budget, Task

FIELDS = ("name", "kind", "description", "data", "columns", "labels", "dev_examples", "metric", "model",
          "model_local", "budgets", "lr_overrides", "note", "suite")
# causal-lm only (suites/causal_lm.py): how a row becomes a prompt and an answer, and the general text of `forgetting`
GENERATION_FIELDS = ("prompt", "answer", "answers", "chat_template", "max_new_tokens", "forgetting",
                     "latency_prompt_tokens", "latency_new_tokens")
FORGETTING_FIELDS = ("hub", "config", "revision", "data_dir", "local", "split", "column", "examples")
KINDS = ("text-classification", "token-classification", "image-classification", "causal-lm")
METRICS = {"text-classification": ("accuracy", "macro_f1"), "token-classification": ("entity_f1",),
           "image-classification": ("accuracy", "macro_f1"), "causal-lm": ("accuracy", "span_f1")}
# Each kind's columns: role -> (the kind's field, default column name, required).
COLUMNS = {
    "text-classification": {"text": ("text_column", "text", True), "text_pair": ("text_pair_column", None, False),
                            "label": ("label_column", "label", True)},
    "token-classification": {"tokens": ("tokens_column", "tokens", True), "tags": ("tags_column", "tags", True)},
    "image-classification": {"image": ("image_column", "image", True), "label": ("label_column", "label", True)},
    # a class answered in words (text + label), or entities listed as text (tokens + tags)
    "causal-lm": {"text": ("text_column", None, False), "label": ("label_column", "label", False),
                  "tokens": ("tokens_column", None, False), "tags": ("tags_column", None, False)},
}
ROLES = ("train", "eval", "dev")
HUB_FIELDS = ("hub", "config", "revision", "data_dir", "local", "splits")
BUDGET_FIELDS = tuple(f.name for f in dataclasses.fields(Budget))
BUDGETS = ("smoke", "quick", "full")
DEFAULT_SUITE = "custom"
UNDIGESTED = ("note", "description")  # editing a caveat is not a new configuration


def kind_class(kind: str):
    """The code of a kind (imported here: a file's fields are checked without it)."""
    if kind == "text-classification":
        from suites.text_classification import TextClassificationTask
        return TextClassificationTask
    if kind == "token-classification":
        from suites.token_classification import TokenClassificationTask
        return TokenClassificationTask
    if kind == "causal-lm":
        from suites.causal_lm import CausalLMTask
        return CausalLMTask
    from suites.image_classification import ImageClassificationTask
    return ImageClassificationTask


def load(path: str | Path, suite: str | None = None) -> Task:
    """The task a file declares; every problem with the file is one UsageError naming the file and the field."""
    path = Path(path).expanduser()
    try:
        text = path.read_text()
    except OSError as e:
        raise UsageError(f"cannot read task file {str(path)!r} ({e.strerror})") from e
    import yaml
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as e:
        raise UsageError(f"task file {str(path)!r} is not valid YAML ({str(e).splitlines()[0]})") from e
    if not isinstance(data, dict):
        raise UsageError(f"{path}: expected a mapping of fields (valid: {', '.join(FIELDS)})")
    return from_dict(data, path, suite)


def from_dict(data: dict, path: Path, suite: str | None = None) -> Task:
    where = str(path)
    kind = data.get("kind")
    valid = FIELDS + (GENERATION_FIELDS if kind == "causal-lm" else ())
    unknown = sorted(set(data) - set(valid))
    if unknown:
        raise UsageError(f"{where}: unknown field(s) {', '.join(unknown)} (valid{' for kind ' + kind if kind in KINDS else ''}: "
                         f"{', '.join(valid)})")
    if kind not in KINDS:
        raise UsageError(f"{where}: {'unknown kind ' + repr(kind) if kind else 'no kind'} (valid: {', '.join(KINDS)})")
    metric = data.get("metric", METRICS[kind][0])
    if metric not in METRICS[kind]:
        raise UsageError(f"{where}: metric {metric!r} does not fit kind {kind} (valid: {', '.join(METRICS[kind])})")
    if not data.get("model"):
        raise UsageError(f"{where}: no model (expected a Hub id or a model folder, e.g. "
                         f"sentence-transformers/all-MiniLM-L6-v2)")
    fields = dict(name=str(data.get("name") or path.stem.split(".")[0]), suite=suite or data.get("suite") or DEFAULT_SUITE,
                  metric=metric, default_model=_model(str(data["model"]), path),
                  note=str(data.get("note") or "").strip(), source=str(path.resolve()),
                  digest=hashlib.sha256(json.dumps({k: v for k, v in data.items() if k not in UNDIGESTED},
                                                   sort_keys=True, default=str).encode()).hexdigest()[:16])
    if data.get("model_local"):
        fields["model_local_names"] = {str(data["model"]): str(data["model_local"])}
    fields.update(_columns(kind, data.get("columns") or {}, where))
    if kind == "causal-lm":
        fields.update(_generation(data, fields, metric, where))
    fields.update(_data(data.get("data"), path, where))
    if "labels" in data:
        labels = data["labels"]
        if not isinstance(labels, list) or len(labels) < 2:
            raise UsageError(f"{where}: labels must be a list of at least 2 class names, got {labels!r}")
        fields["labels"] = [str(x) for x in labels]
    if "dev_examples" in data:
        fields["dev_examples"] = _positive_int(data["dev_examples"], f"{where}: dev_examples")
    if "lr_overrides" in data:
        rates = data["lr_overrides"] or {}
        bad = {k: v for k, v in rates.items() if not _number(v) or v <= 0} if isinstance(rates, dict) else rates
        if bad:
            raise UsageError(f"{where}: lr_overrides must map method names to rates > 0, got {bad!r}")
        fields["lr_overrides"] = {str(k): float(v) for k, v in rates.items()}
    fields["budgets"] = _budgets(data.get("budgets"), where)
    fields["tuned_folder"] = "" if _shipped(path) else str(path.resolve().parent / "tuned")
    return kind_class(kind)(**fields)  # no budgets: derived from the data's size on first use (Task.budget)


def _model(ref: str, path: Path) -> str:
    """A model folder relative to the task file is resolved against it; anything else is a Hub id or a name under
    the models dir, as --model takes it."""
    beside = (path.parent / ref).expanduser()
    return str(beside.resolve()) if beside.is_dir() else ref


def _columns(kind: str, columns: dict, where: str) -> dict:
    if not isinstance(columns, dict):
        raise UsageError(f"{where}: columns must map roles to column names (valid roles for {kind}: "
                         f"{', '.join(COLUMNS[kind])})")
    unknown = sorted(set(columns) - set(COLUMNS[kind]))
    if unknown:
        raise UsageError(f"{where}: unknown column role(s) {', '.join(unknown)} for kind {kind} "
                         f"(valid: {', '.join(COLUMNS[kind])})")
    out = {}
    for role, (field, default, _) in COLUMNS[kind].items():
        value = columns.get(role, default)
        if value is not None:
            out[field] = str(value)
    return out


def _generation(data: dict, fields: dict, metric: str, where: str) -> dict:
    """A causal-LM task's prompt, answer and forgetting fields; its columns are text + label, or tokens + tags."""
    entities = bool(fields.get("tokens_column") or fields.get("tags_column"))
    if entities and not (fields.get("tokens_column") and fields.get("tags_column")) or \
            not entities and not fields.get("text_column"):
        raise UsageError(f"{where}: kind causal-lm needs columns text (+ label) for class answers, or tokens + tags "
                         f"for entity answers")
    if metric != ("span_f1" if entities else "accuracy"):
        raise UsageError(f"{where}: metric {metric!r} does not fit {'entity' if entities else 'class'} answers "
                         f"(valid: {'span_f1' if entities else 'accuracy'})")
    out = {}
    for key in ("prompt", "answer"):
        if key in data:
            value = str(data[key])
            if "{answer}" not in value and key == "answer" or key == "prompt" and not re.search(r"{(text|sentence)}",
                                                                                                 value):
                raise UsageError(f"{where}: {key} must hold {'{answer}' if key == 'answer' else '{text} or {sentence}'}"
                                 f", got {value!r}")
            out[key] = value
    if "answers" in data:
        if not isinstance(data["answers"], dict):
            raise UsageError(f"{where}: answers must map class names to answer words, got {data['answers']!r}")
        out["answers"] = {str(k): str(v) for k, v in data["answers"].items()}
    if "chat_template" in data:
        out["chat_template"] = bool(data["chat_template"])
    for key in ("max_new_tokens", "latency_prompt_tokens", "latency_new_tokens"):
        if key in data:
            out[key] = _positive_int(data[key], f"{where}: {key}")
    if data.get("forgetting"):
        f = data["forgetting"]
        unknown = sorted(set(f) - set(FORGETTING_FIELDS)) if isinstance(f, dict) else ["(not a mapping)"]
        if unknown or not f.get("column") or not (f.get("hub") or f.get("local")):
            raise UsageError(f"{where}: forgetting needs column and hub or local"
                             + (f"; unknown field(s) {', '.join(unknown)} (valid: {', '.join(FORGETTING_FIELDS)})"
                                if unknown else ""))
        out["forgetting"] = dict(f)
    return out


def _data(data, path: Path, where: str) -> dict:
    if not isinstance(data, dict) or not data:
        raise UsageError(f"{where}: no data (expected data: {{train: FILE, eval: FILE}} or data: {{hub: DATASET_ID}})")
    if "hub" in data or "local" in data:
        unknown = sorted(set(data) - set(HUB_FIELDS))
        if unknown:
            raise UsageError(f"{where}: unknown data field(s) {', '.join(unknown)} (valid with hub: "
                             f"{', '.join(HUB_FIELDS)})")
        splits = data.get("splits") or {}
        bad = sorted(set(splits) - set(ROLES))
        if bad:
            raise UsageError(f"{where}: unknown split role(s) {', '.join(bad)} in data.splits (valid: {', '.join(ROLES)})")
        hub = str(data.get("hub") or "")
        local_hub = (path.parent / hub) if hub else None
        kwargs = {k: data[k] for k in ("revision", "data_dir") if data.get(k)}
        return dict(hub_id=str(local_hub.resolve()) if local_hub is not None and local_hub.is_dir() else hub,
                    hub_config=data.get("config"), hub_kwargs=kwargs, data_subdir=str(data.get("local") or ""),
                    train_split=str(splits.get("train", "train")), eval_split=str(splits.get("eval", "test")),
                    dev_split=str(splits["dev"]) if splits.get("dev") else None)
    unknown = sorted(set(data) - set(ROLES))
    if unknown:
        raise UsageError(f"{where}: unknown data field(s) {', '.join(unknown)} (valid: {', '.join(ROLES)} for local "
                         f"files, or {', '.join(HUB_FIELDS)} for a dataset)")
    for role in ("train", "eval"):
        if not data.get(role):
            raise UsageError(f"{where}: data has no {role} split (expected data.{role}: a file, glob or folder)")
    files = {role: _beside(str(data[role]), path) for role in ROLES if data.get(role)}
    same = [r for r in files if r != "train" and files[r] == files["train"]] + \
        (["dev"] if "dev" in files and files["dev"] == files["eval"] else [])
    if same:
        raise UsageError(f"{where}: data.{same[0]} names the same files as data."
                         f"{'eval' if same[0] == 'dev' and files['dev'] == files['eval'] else 'train'} "
                         f"({files[same[0]]}); expected separate splits (leave dev out to carve it from train)")
    return dict(data_files=files, train_split="train", eval_split="eval", dev_split="dev" if "dev" in files else None)


def _beside(source: str, path: Path) -> str:
    p = Path(source).expanduser()
    return str(p if p.is_absolute() else (path.parent / p).resolve())


def _budgets(budgets, where: str) -> dict[str, Budget]:
    if budgets is None:
        return {}
    if not isinstance(budgets, dict):
        raise UsageError(f"{where}: budgets must map {', '.join(BUDGETS)} to settings")
    out = {}
    for name, settings in budgets.items():
        if name not in BUDGETS:
            raise UsageError(f"{where}: unknown budget {name!r} (valid: {', '.join(BUDGETS)})")
        if settings is not None and not isinstance(settings, dict):
            raise UsageError(f"{where}: budgets.{name} must map fields to values (valid: {', '.join(BUDGET_FIELDS)}), "
                             f"got {settings!r}")
        unknown = sorted(set(settings or {}) - set(BUDGET_FIELDS))
        if unknown:
            raise UsageError(f"{where}: budgets.{name}: unknown field(s) {', '.join(unknown)} "
                             f"(valid: {', '.join(BUDGET_FIELDS)})")
        for field, value in (settings or {}).items():
            nullable = field in ("train_examples", "eval_examples")
            if not (value is None and nullable) and (not _number(value) or value <= 0
                                                     or (field != "epochs" and not isinstance(value, int))):
                raise UsageError(f"{where}: budgets.{name}.{field} must be a "
                                 f"{'number' if field == 'epochs' else 'whole number'} > 0"
                                 f"{' or null (all)' if nullable else ''}, got {value!r}")
        out[name] = Budget(**(settings or {}))
    return out


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _positive_int(value, what: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise UsageError(f"{what} must be a whole number >= 1, got {value!r}")
    return value


def _shipped(path: Path) -> bool:
    return path.resolve().parent == SHIPPED


SHIPPED = Path(__file__).resolve().parent / "tasks"
