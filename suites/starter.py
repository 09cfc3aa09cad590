"""`bench task new`: a starter task file from a look at the data (torch-free).

Given a data file, a folder or a Hub id, it finds the splits (a training file and its evaluation sibling:
`train.csv` + `test.csv`, `tickets_train.jsonl` + `tickets_test.jsonl`; a folder's split files, e.g. the Hub layout
`data/train-*.parquet`; an image folder's `train/` and `test/` subfolders), reads the training split with datasets'
builders (suites/sources.py), guesses the kind, the columns and the metric, and writes a task file whose comments say
how each guess was made and what was unsure. The file is loaded with suites/taskfile.py and its data checked (the
checks `bench run` makes) before it is kept; every problem is one UsageError or DataError line.
"""
from __future__ import annotations

import glob
import json
import os
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from bench.core.errors import DataError, UsageError
from suites import sources, taskfile

TEXT_MODEL = "sentence-transformers/all-MiniLM-L6-v2"
IMAGE_MODEL, IMAGE_MODEL_LOCAL = "google/mobilenet_v2_1.0_224", "vision/mobilenet_v2_1.0_224-imagenet"
TRAIN_WORDS = ("train", "training")
EVAL_WORDS = ("test", "testing", "validation", "valid", "val", "eval", "evaluation", "dev")  # preference order
DEV_WORDS = ("validation", "valid", "val", "dev")  # a dev split beside a test split
SPLIT = re.compile(r"(?<![A-Za-z])(" + "|".join(sorted(TRAIN_WORDS + EVAL_WORDS, key=len, reverse=True))
                   + r")(?![A-Za-z])", re.IGNORECASE)
TEXT_NAMES = ("text", "sentence", "body", "content", "review", "message", "description", "document", "utterance")
LABEL_NAMES = ("label", "labels", "class", "category", "target", "queue", "intent")
TOKEN_NAMES = ("tokens", "words")
TAG_NAMES = ("ner_tags", "tags", "ner", "labels", "label", "tag")
IMAGE_NAMES = ("image", "img", "picture", "photo")
SAMPLE = 2000  # rows read for column lengths and list shapes (labels are counted over all training rows)
HUB_SAMPLE = 500  # rows streamed from the Hub
MAX_CLASSES = 50
PAIR_MIN_CHARS = 20
IMBALANCED = 3.0  # commonest : rarest training class beyond this: macro_f1 is the headline


@dataclass
class Found:
    """Where the splits are: {role: absolute file, glob or folder} (local files), or a Hub id."""

    sources: dict[str, str] = field(default_factory=dict)
    hub: str = ""
    local: str = ""  # the data dir's subfolder holding the Hub dataset's <split>.parquet
    splits: dict[str, str] = field(default_factory=dict)  # Hub split names by role
    name: str = ""  # the task's default name
    folder: Path = Path(".")  # where the task file goes by default
    notes: list[str] = field(default_factory=list)


@dataclass
class Guess:
    kind: str = "text-classification"
    columns: dict[str, str] = field(default_factory=dict)
    metric: str = "accuracy"
    rows: int | None = None
    classes: list[tuple[str, int]] = field(default_factory=list)  # (name, training count), commonest first
    notes: list[str] = field(default_factory=list)  # how each guess was made
    unsure: list[str] = field(default_factory=list)  # what to look at
    inspected: bool = True


def new(data: str, out: str | None = None, name: str | None = None, model: str | None = None, force: bool = False,
        say=print) -> Path:
    """Write the task file for `data` (its path is returned), saying each guess with `say`."""
    if not data or not data.strip():
        raise UsageError("--data is empty (expected a data file, a folder, or a Hub dataset id)")
    found = find(data)
    name = name or found.name
    target = Path(out).expanduser() if out else found.folder / f"{_filename(name)}.yaml"
    if target.suffix not in (".yaml", ".yml"):
        raise UsageError(f"--out {out}: a task file ends in .yaml or .yml (that is how --tasks knows a path)")
    if target.is_dir():
        raise UsageError(f"--out {out}: is a folder (expected a task file, e.g. {_shown(target / (name + '.yaml'))})")
    if target.exists() and not force:
        raise UsageError(f"{_shown(target)} exists; pass --out FILE to write another file, or --force to overwrite it")
    for note in found.notes:
        say(note)
    import datasets
    bars = datasets.is_progress_bar_enabled()
    datasets.disable_progress_bars()  # a few lines to read, not the builders' bars
    try:
        guess = inspect(found, say)
        for line in guess.notes:
            say(f"  {line}")
        for line in guess.unsure:
            say(f"  unsure: {line}")
        text = render(found, guess, name, model, target.parent.resolve(), data)
        target.parent.mkdir(parents=True, exist_ok=True)
        before = target.read_bytes() if target.exists() else None
        target.write_text(text)
        try:
            summary = verify(target, found, guess)
        except Exception:  # nothing is left that does not pass the checks (an overwritten file comes back)
            if before is None:
                target.unlink()
            else:
                target.write_bytes(before)
            raise
    finally:
        if bars:
            datasets.enable_progress_bars()
    say(f"wrote {_shown(target)}: {summary}")
    if not guess.inspected:
        say(f"  check kind, data.splits and columns in {_shown(target)} before running it (marked CHECK)")
    say(f"next: python -m bench run --tasks {_quote(_shown(target))} --methods head,lora --budget quick")
    return target


# --- where the splits are ----------------------------------------------------------------------------------------

def find(data: str) -> Found:
    path = Path(data).expanduser()
    if path.is_file():
        return _file(path.resolve())
    if path.is_dir():
        return _folder(path.resolve())
    if path.suffix.lower() in sources.BUILDERS or data.startswith((".", "/", "~")) or data.count("/") > 1 \
            or not re.fullmatch(r"[\w.-]+(/[\w.-]+)?", data):
        raise DataError(f"--data {data}: no such file or folder (expected a data file: {sources.FORMATS}; or a Hub "
                        f"dataset id such as owner/name)")
    return _hub(data)


def _file(path: Path) -> Found:
    if path.suffix.lower() not in sources.BUILDERS:
        raise DataError(f"{_shown(path)}: unknown format {path.suffix or '(no suffix)'!r} (expected {sources.FORMATS})")
    match = _last_split(path.stem)
    if match:
        def named(word: str) -> Path:
            return path.with_name(path.stem[:match.start()] + _like(word, match.group(0)) + path.stem[match.end():]
                                  + path.suffix)
        looked = _shown(path.parent / (path.stem[:match.start()] + "{" + ",".join(EVAL_WORDS) + "}"
                                       + path.stem[match.end():] + path.suffix))
        stem = "_".join(part for part in (path.stem[:match.start()].rstrip("-_. "),
                                          path.stem[match.end():].lstrip("-_. ")) if part)
    else:
        def named(word: str) -> Path:
            options = [path.with_name(f"{path.stem}{sep}{word}{path.suffix}") for sep in ("_", "-")]
            return next((p for p in options if p.is_file()), options[0])
        looked = _shown(path.parent / (path.stem + "{_,-}{" + ",".join(EVAL_WORDS) + "}" + path.suffix))
        stem = path.stem
    word = match.group(1).lower() if match else "train"
    train = path if word in TRAIN_WORDS else next((p for p in map(named, TRAIN_WORDS) if p.is_file()), None)
    if train is None:
        raise DataError(f"{_shown(path)} looks like a {word} split and no training file is beside it (looked for "
                        f"{', '.join(_shown(named(w)) for w in TRAIN_WORDS)}); give the training file")
    roles = _roles({w: named(w) for w in EVAL_WORDS}, Path.is_file)
    if "eval" not in roles:
        raise DataError(f"{_shown(path)}: no evaluation file beside it (looked for {looked}); a task needs one: "
                        f"split some rows off into e.g. {_shown(named('test'))}")
    notes = [f"data: {_shown(train)} (train), {_shown(roles['eval'])} (eval, found beside it)"
             + (f", {_shown(roles['dev'])} (dev)" if "dev" in roles else "")]
    if not re.search(r"[A-Za-z]", stem) or stem.lower() == "data":
        stem = _folder_name(path.parent)
    return Found(sources={"train": str(train), **{r: str(p) for r, p in roles.items()}}, name=stem,
                 folder=path.parent, notes=notes)


def _folder(root: Path) -> Found:
    if any(p.suffix.lower() in sources.IMAGE_SUFFIXES for p in root.rglob("*") if p.is_file()):
        return _image_folder(root)
    files = [p for p in sources.files_of(str(root)) if p.suffix.lower() in sources.BUILDERS]
    if not files:
        raise DataError(f"{_shown(root)}: no data files in the folder (expected {sources.FORMATS})")
    groups: dict[str, list[Path]] = {}
    for p in files:
        parts = [p.stem] + [d for d in reversed(p.relative_to(root).parent.parts)]
        word = next((m.group(1).lower() for m in map(_last_split, parts) if m), None)
        if word:
            groups.setdefault(word, []).append(p)
    listed = ", ".join(str(p.relative_to(root)) for p in files[:6]) + (", ..." if len(files) > 6 else "")
    train = next((groups[w] for w in TRAIN_WORDS if w in groups), None)
    if train is None:
        raise DataError(f"{_shown(root)}: no training file (expected files named by split, e.g. train.csv and "
                        f"test.csv, or data/train-*.parquet; found {listed})")
    roles = _roles({w: groups[w] for w in EVAL_WORDS if w in groups}, lambda files: True)
    if "eval" not in roles:
        raise DataError(f"{_shown(root)}: no evaluation file (looked for files named "
                        f"{'|'.join(EVAL_WORDS)} beside the training files; found {listed})")
    out = {"train": _pattern(train, files, "train"), **{r: _pattern(g, files, r) for r, g in roles.items()}}
    notes = [f"data: {', '.join(f'{_shown(Path(s))} ({r})' for r, s in out.items())}"]
    name, folder = _named_folder(root)
    return Found(sources=out, name=name, folder=folder, notes=notes)


def _image_folder(root: Path) -> Found:
    def subfolders(folder: Path) -> dict[str, Path]:
        return {d.name.lower(): d for d in sorted(folder.iterdir()) if d.is_dir() and not d.name.startswith(".")}
    here = subfolders(root)
    base = root
    if not any(w in here for w in TRAIN_WORDS) and root.name.lower() in TRAIN_WORDS:
        base, here = root.parent, subfolders(root.parent)  # given photos/train: its siblings are the other splits
    train = next((here[w] for w in TRAIN_WORDS if w in here), None)
    roles = _roles({w: here[w] for w in EVAL_WORDS if w in here}, lambda d: True)
    if train is None or "eval" not in roles:
        looked = f"{_shown(base)}/{{{','.join(TRAIN_WORDS)}}}/ and {_shown(base)}/{{{','.join(EVAL_WORDS)}}}/"
        raise DataError(f"{_shown(root)}: an image folder needs a training and an evaluation folder, each with one "
                        f"subfolder per class (looked for {looked}; found "
                        f"{', '.join(d + '/' for d in here) or 'no subfolders'})")
    out = {"train": str(train), **{r: str(d) for r, d in roles.items()}}
    notes = [f"data: an image folder: {', '.join(f'{_shown(Path(s))}/ ({r})' for r, s in out.items())}"]
    name, folder = _named_folder(base)
    return Found(sources=out, name=name, folder=folder, notes=notes)


def _hub(hub_id: str) -> Found:
    name = re.sub(r"[^\w.-]", "_", hub_id.rsplit("/", 1)[-1]) or "task"
    return Found(hub=hub_id, name=name, folder=Path.cwd(),
                 notes=[f"data: no file or folder named {hub_id} here: taken as a Hub dataset id"])


def _roles(candidates: dict, exists) -> dict:
    """eval: the first of EVAL_WORDS present; dev: a validation split beside a test split."""
    present = [w for w in EVAL_WORDS if w in candidates and exists(candidates[w])]
    if not present:
        return {}
    roles = {"eval": candidates[present[0]]}
    if present[0] in ("test", "testing"):
        dev = next((w for w in DEV_WORDS if w in present), None)
        if dev:
            roles["dev"] = candidates[dev]
    return roles


def _pattern(files: list[Path], every: list[Path], role: str) -> str:
    """One source for a split's files: the file, or a glob that matches them and nothing else."""
    if len(files) == 1:
        return str(files[0])
    suffixes = {p.suffix.lower() for p in files}
    parents = {p.parent for p in files}
    if len(suffixes) > 1:
        raise DataError(f"the {role} files mix formats ({', '.join(sorted(suffixes))}); expected one per split")
    if len(parents) == 1:
        parent, suffix = parents.pop(), files[0].suffix
        prefixes = {_prefix(p.stem) for p in files}
        candidates = ([f"{prefix}*{suffix}" for prefix in prefixes] if len(prefixes) == 1 else []) + [f"*{suffix}"]
        for candidate in candidates:
            pattern = os.path.join(glob.escape(str(parent)), candidate)
            if sorted(Path(p) for p in glob.glob(pattern)) == sorted(files):
                return pattern
    raise DataError(f"the {role} files ({', '.join(_shown(p) for p in files[:3])}, ...) are not one glob's matches; "
                    f"write the task file by hand (data.{role}: a file, a glob or a folder)")


def _prefix(stem: str) -> str:
    match = _last_split(stem)
    if not match:
        return ""
    end = match.end() + (1 if stem[match.end():match.end() + 1] in ("-", "_", ".") else 0)
    return glob.escape(stem[:end])


def _last_split(text: str):
    matches = list(SPLIT.finditer(text))
    return matches[-1] if matches else None


def _like(word: str, model: str) -> str:
    return word.upper() if model.isupper() else word.capitalize() if model[:1].isupper() else word


def _named_folder(root: Path) -> tuple[str, Path]:
    """(the task's name, where its file goes) for a data folder: named after it, beside it; a folder named like a
    split is named after its parent, and its file goes there."""
    if root.name.lower() in TRAIN_WORDS + EVAL_WORDS + ("data",):
        return _folder_name(root.parent), root.parent
    return root.name, root.parent


def _folder_name(folder: Path) -> str:
    while folder.name.lower() in TRAIN_WORDS + EVAL_WORDS + ("data",) and folder.parent != folder:
        folder = folder.parent
    return folder.name or "task"


# --- what the data holds -------------------------------------------------------------------------------------------

def inspect(found: Found, say=print) -> Guess:
    if found.hub:
        ds, how = _hub_sample(found)
        if ds is None:
            guess = Guess(inspected=False, columns={"text": "text", "label": "label"})
            found.splits = {"train": "train", "eval": "test"}
            guess.notes.append(f"not inspected: {how}")
            guess.unsure.append("kind, splits and columns are placeholders (kind text-classification, columns "
                                "text and label, splits train and test)")
            return guess
        say(how)
    else:
        ds = sources.load({"train": found.sources["train"]}, ["train"])["train"]
    return guess_columns(ds)


def _hub_sample(found: Found):
    """(the training split or a sample of it, how it was read), or (None, why not)."""
    import datasets

    from bench.core import resolve
    data_dir = resolve.data_dir(None)
    mirror = data_dir / found.name if data_dir else None
    if mirror is not None and (mirror / "train.parquet").is_file():
        names = sorted(p.stem for p in mirror.glob("*.parquet"))
        found.local, found.splits = found.name, _hub_splits(names)
        ds = datasets.load_dataset("parquet", data_files={"train": str(mirror / "train.parquet")}, split="train")
        return ds, f"read from the data dir's copy {_shown(mirror)} (splits {', '.join(names)})"
    try:
        stream = datasets.load_dataset(found.hub, streaming=True)
        names = list(stream)
        found.splits = _hub_splits(names)
        train = stream[found.splits["train"]]
        for column, feature in (train.features or {}).items():
            if isinstance(feature, datasets.Image):
                train = train.cast_column(column, datasets.Image(decode=False))
        rows = list(train.take(HUB_SAMPLE))
        ds = datasets.Dataset.from_list(rows, features=train.features)
    except Exception as e:  # offline, gated, a config to choose: say so, write placeholders
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        return None, f"could not read {found.hub} ({type(e).__name__}: {first[:200]})"
    return ds, (f"read {len(ds)} rows of {found.hub} split {found.splits['train']} from the Hub "
                f"(splits {', '.join(names)})")


def _hub_splits(names: list[str]) -> dict[str, str]:
    lower = {n.lower(): n for n in names}
    train = next((lower[w] for w in TRAIN_WORDS if w in lower), names[0] if names else "train")
    roles = _roles({w: lower[w] for w in EVAL_WORDS if w in lower}, lambda n: True)
    return {"train": train, "eval": roles.get("eval", "test"), **({"dev": roles["dev"]} if "dev" in roles else {})}


def guess_columns(ds) -> Guess:
    import datasets
    features = ds.features
    if len(ds) == 0:
        raise DataError("the training split is empty (expected at least one row)")
    images = [c for c, f in features.items() if isinstance(f, datasets.Image)]
    sample = ds.select(range(min(len(ds), SAMPLE))).remove_columns(images)
    guess = Guess(rows=len(ds))
    if images:
        return _images(ds, images, guess)
    token = _tokens(sample, guess)
    if token:
        return token
    return _text(ds, sample, guess)


def _images(ds, images: list[str], guess: Guess) -> Guess:
    guess.kind = "image-classification"
    image = _by_name(images, IMAGE_NAMES) or images[0]
    guess.notes.append(f"kind: image-classification (column {image!r} holds images)")
    if len(images) > 1:
        guess.unsure.append(f"image column {image!r} of {', '.join(images)}")
    guess.columns["image"] = image
    others = [c for c in ds.features if c not in images]
    if not others:
        raise DataError(f"no label beside the images (columns: {', '.join(images)}); an image folder needs one "
                        f"subfolder per class: train/<class>/<image>, test/<class>/<image>")
    _label(ds, others, guess)
    return guess


def _tokens(sample, guess: Guess) -> Guess | None:
    import datasets
    lists = {c: _element(f) for c, f in sample.features.items() if _element(f) is not None}
    words = [c for c, e in lists.items() if _is_text(e)]
    if not words:
        return None
    values = {c: sample[c] for c in lists}

    def aligned(a: str, b: str) -> bool:
        return all(x is not None and y is not None and len(x) == len(y) for x, y in zip(values[a], values[b]))

    def distinct(c: str) -> int:
        return len({v for row in values[c] if row for v in row})
    pairs = [(w, t) for w in words for t in lists if t != w and aligned(w, t)
             and (isinstance(lists[t], datasets.ClassLabel) or _is_text(lists[t]) or _is_int(lists[t]))]
    if not pairs:
        return None
    tokens_options = list(dict.fromkeys(w for w, _ in pairs))
    tokens = _by_name(tokens_options, TOKEN_NAMES) or max(tokens_options, key=distinct)
    tag_options = [t for w, t in pairs if w == tokens]
    named = _by_name(tag_options, TAG_NAMES)
    tags = named or min(tag_options, key=distinct)
    guess.kind, guess.metric = "token-classification", "entity_f1"
    guess.columns.update(tokens=tokens, tags=tags)
    guess.notes.append(f"kind: token-classification ({tokens!r} holds a list of words per row and {tags!r} one "
                       f"tag per word)")
    guess.notes.append(f"tokens: {tokens!r}" + (" (named like words)" if _by_name([tokens], TOKEN_NAMES)
                                               else " (the word lists with the most distinct words)"))
    if len(tag_options) > 1:
        guess.unsure.append(f"tags: {tags!r} ({'named like tags' if named else 'the fewest distinct values'}); "
                            f"also one per word: {', '.join(t for t in tag_options if t != tags)}")
    element = lists[tags]
    names = list(element.names) if isinstance(element, datasets.ClassLabel) else \
        sorted({str(v) for row in values[tags] if row for v in row})
    counts = Counter(v for row in values[tags] if row for v in row)
    if isinstance(element, datasets.ClassLabel):
        counts = Counter({element.names[k]: n for k, n in counts.items()})
    guess.classes = [(str(k), n) for k, n in counts.most_common()]
    guess.notes.append(f"tags: {tags!r}, {len(names)} distinct in the first {len(sample)} rows: "
                       f"{_listed(names)}; metric entity_f1 (seqeval, entity micro F1)")
    if _is_int(element):
        guess.unsure.append(f"tags in {tags!r} are numbers without names: entity_f1 needs IOB names (O, B-PER, "
                            f"I-PER, ...); add labels: [...] in index order")
    elif not all(n == "O" or re.match(r"[BIES][-_]", n) for n in names):
        guess.unsure.append(f"tags in {tags!r} do not all look like IOB (O, B-X, I-X): entity_f1 scores B-/I- spans")
    return guess


def _text(ds, sample, guess: Guess) -> Guess:
    features = ds.features
    strings = [c for c, f in features.items() if _is_text(f)]
    start = len(guess.notes)  # the kind and text notes go before the label's
    label = _label_by_feature(ds, guess)
    texts = [c for c in strings if c != label]
    if not texts:
        raise DataError(f"found no text column (columns: {_described(features)}); expected a column of text, a list "
                        f"of words and one of tags per row, or images")
    mean = {c: sum(len(v) for v in sample[c] if v) / max(len(sample), 1) for c in texts}
    longest = max(texts, key=lambda c: mean[c])
    named = _by_name(texts, TEXT_NAMES)
    text = longest
    if named and named != longest and mean[named] >= mean[longest] / 2:
        text = named
        guess.unsure.append(f"text: {named!r} (named like text, mean {mean[named]:.0f} characters) rather than the "
                            f"longer {longest!r} (mean {mean[longest]:.0f})")
    how = "named like text and the longest" if text == named == longest else \
        "named like text" if text == named else "the longest text column"
    guess.notes[start:start] = ["kind: text-classification (no list or image columns)",
                                f"text: {text!r} ({how}, mean {mean[text]:.0f} characters)"]
    rest = [c for c in texts if c != text and mean[c] > PAIR_MIN_CHARS]
    if label is None:
        label = _label(ds, [c for c in features if c not in (text,) and c not in rest] + rest, guess)
        rest = [c for c in rest if c != label]
    pair = max(rest, key=lambda c: mean[c]) if rest else None
    if pair:
        order = list(features)
        first, second = sorted((text, pair), key=order.index)
        guess.unsure.append(f"text_pair: {pair!r} (a second text column, mean {mean[pair]:.0f} characters; the pair "
                            f"in the data's column order: text {first!r}, text_pair {second!r}): delete text_pair to "
                            f"classify {text!r} alone")
        text, pair = first, second
    guess.columns = {"text": text, **({"text_pair": pair} if pair else {}), "label": label}
    return guess


def _label_by_feature(ds, guess: Guess) -> str | None:
    """The label column by its feature (a ClassLabel) or its name; None: guess it from its values later."""
    import datasets
    columns = [c for c, f in ds.features.items() if isinstance(f, datasets.ClassLabel)]
    if columns:
        return _set_label(ds, _by_name(columns, LABEL_NAMES) or columns[0], "a ClassLabel: its names are the classes",
                          guess)
    named = _by_name([c for c, f in ds.features.items() if _is_scalar(f)], LABEL_NAMES)
    if named:
        return _set_label(ds, named, "named like a label", guess)
    flags = [c for c, f in ds.features.items() if getattr(f, "dtype", None) == "bool"]
    true_false = _by_name(flags, LABEL_NAMES) or (flags[0] if flags else None)
    if true_false:
        return _set_label(ds, true_false, "true/false values: the classes are False and True", guess)
    return None


def _label(ds, columns: list[str], guess: Guess) -> str:
    """The label column among `columns`: by feature or name, else the one with few distinct values."""
    found = _label_by_feature(ds.select_columns(columns), guess)
    if found:
        return found
    options = []
    for c in columns:
        if _is_scalar(ds.features[c]):
            n = len(set(ds[c]))
            if 2 <= n <= MAX_CLASSES and n < len(ds) / 2:
                options.append((n, c))
    if not options:
        raise DataError(f"found no label column (columns: {_described(ds.features)}); expected a ClassLabel, a column "
                        f"named {'/'.join(LABEL_NAMES)}, or one with at most {MAX_CLASSES} distinct values")
    options.sort()
    label = options[0][1]
    if len(options) > 1:
        guess.unsure.append(f"label: {label!r} ({options[0][0]} distinct values, the fewest); also few: "
                            f"{', '.join(f'{c!r} ({n})' for n, c in options[1:])}")
    return _set_label(ds, label, f"{options[0][0]} distinct values in {len(ds)} rows", guess)


def _set_label(ds, column: str, how: str, guess: Guess) -> str:
    import datasets
    feature = ds.features[column]
    values = ds[column]
    floats = [v for v in values if isinstance(v, float) and not v.is_integer()]
    if floats:
        raise DataError(f"column {column!r} holds numbers such as {floats[0]} (a regression target?); the bench "
                        f"classifies: expected classes (strings or whole numbers)")
    counts = Counter(v for v in values if v is not None)
    if isinstance(feature, datasets.ClassLabel):
        counts = Counter({feature.names[k] if 0 <= k < len(feature.names) else k: n for k, n in counts.items()})
    guess.classes = [(str(k), n) for k, n in counts.most_common()]
    guess.columns["label"] = column
    guess.notes.append(f"label: {column!r} ({how}); {len(counts)} classes in training: "
                       f"{_listed([f'{k} {n}' for k, n in guess.classes])}")
    if len(counts) > MAX_CLASSES:
        guess.unsure.append(f"label {column!r} has {len(counts)} distinct values: is it the class?")
    if _is_int(feature) and set(counts) == set(range(len(counts))):
        guess.notes.append("classes are numbers 0..K-1: add labels: [name0, name1, ...] (index order) to name them")
    if len(counts) >= 2:
        most, least = guess.classes[0][1], guess.classes[-1][1]
        if most / least > IMBALANCED:
            guess.metric = "macro_f1"
            guess.notes.append(f"metric: macro_f1 (training classes are imbalanced {most / least:.0f}:1, beyond "
                               f"{IMBALANCED:.0f}:1: accuracy would reward guessing {guess.classes[0][0]!r})")
        else:
            guess.notes.append(f"metric: accuracy (training classes within {IMBALANCED:.0f}:1: "
                               f"{most / least:.1f}:1)")
    return column


# --- the file ------------------------------------------------------------------------------------------------------

def render(found: Found, guess: Guess, name: str, model: str | None, folder: Path, given: str) -> str:
    image = guess.kind == "image-classification"
    lines = [f"# Written by `python -m bench task new --data {' '.join(given.split())}`: a starting point,",
             "# edit it freely (the fields: docs/your-own-task.md). How it was guessed:"]
    lines += [f"#   {n}" for n in found.notes + guess.notes]
    lines += [f"# UNSURE: {u}" for u in guess.unsure]
    lines += [f"name: {_scalar(name)}", f"kind: {guess.kind}"]
    classes = f", {len(guess.classes)} classes" if guess.classes and guess.kind != "token-classification" else ""
    lines.append(f"description: {_scalar(f'{name} ({guess.kind}{classes}), written by bench task new')}")
    lines.append("data:")
    if found.hub:
        check = "" if guess.inspected else "  # CHECK: not inspected, the split names are guesses"
        lines.append(f"  hub: {_scalar(found.hub)}")
        if found.local:
            lines.append(f"  local: {_scalar(found.local)}  # <data dir>/{found.local}/<split>.parquet when "
                         f"--data-dir or BENCH_DATA_DIR holds it, else the Hub")
        lines.append(f"  splits: {_flow(found.splits)}{check}")
    else:
        for role, source in found.sources.items():
            lines.append(f"  {role}: {_scalar(_relative(source, folder))}")
    if "dev" not in (found.splits if found.hub else found.sources):
        lines.append("  # no dev split: min(1000, a fifth of train) training rows are carved off for tuning and")
        lines.append("  # early stopping (dev_examples: N to change it; data.dev: a file of your own)")
    check = "" if guess.inspected else "  # CHECK: placeholders, the data was not inspected"
    lines.append(f"columns: {_flow(guess.columns)}{check}")
    if guess.classes and guess.kind != "token-classification":
        lines.append(f"# classes in training ({len(guess.classes)}, most common first): "
                     f"{_listed([f'{k} {n}' for k, n in guess.classes], 20)}")
    lines.append(f"metric: {guess.metric}")
    chosen = model or (IMAGE_MODEL if image else TEXT_MODEL)
    if model and Path(model).expanduser().is_dir():
        chosen = _relative(str(Path(model).expanduser().resolve()), folder)
        chosen = chosen if "/" in chosen else f"./{chosen}"  # a folder beside the file, not a name under the models dir
    lines.append(f"model: {_scalar(chosen)}" + ("" if model else "  # --model overrides it at run time"))
    if image and not model:
        lines.append(f"model_local: {IMAGE_MODEL_LOCAL}  # its folder under the models dir (BENCH_MODEL_DIR)")
    lines.append("# budgets: left out: derived from the training split's size at run time (smoke: 64 rows;")
    lines.append("# quick: up to 4,000 rows, at least 100 steps; full: every row, 3 epochs); add")
    lines.append("# budgets: {quick: {...}} to fix them")
    return "\n".join(lines) + "\n"


def verify(target: Path, found: Found, guess: Guess) -> str:
    """The file loads as `bench run` loads it, and its data passes the data checks: a line saying so."""
    task = taskfile.load(target)
    if not guess.inspected:
        return "loads; its data was not checked (not inspected)"
    if found.hub and not found.local:
        return "loads; its data is checked by `bench run` before any model loads (read from the Hub)"
    from bench.core import resolve
    checked = task.check(resolve.data_dir(None) if found.local else None)
    rows = ", ".join(f"{role} {n:,}" for role, n in checked["rows"].items())
    warnings = "".join(f"; warning: {w}" for w in checked["warnings"])
    return f"loads, data checked ({len(checked['labels'])} classes, rows {rows}){warnings}"


def _relative(source: str, folder: Path) -> str:
    return Path(os.path.relpath(source, folder)).as_posix()


def _scalar(value: str) -> str:
    """A YAML scalar: bare where it reads back as the same string, else double-quoted (JSON)."""
    import yaml
    if re.fullmatch(r"[A-Za-z0-9_./][\w./@ ()*,:+-]*", value) and ": " not in value and " #" not in value \
            and not value.endswith(":"):
        try:
            if yaml.safe_load(value) == value:
                return value
        except yaml.YAMLError:
            pass
    return json.dumps(value)


def _flow(mapping: dict[str, str]) -> str:
    return "{" + ", ".join(f"{k}: {_scalar(str(v))}" for k, v in mapping.items()) + "}"


def _listed(items: list[str], most: int = 10) -> str:
    return ", ".join(map(str, items[:most])) + (f", ... ({len(items) - most} more)" if len(items) > most else "")


def _described(features) -> str:
    return ", ".join(f"{c} ({getattr(f, 'dtype', None) or type(f).__name__})" for c, f in features.items())


def _by_name(columns: list[str], names: tuple[str, ...]) -> str | None:
    lower = {c.lower(): c for c in columns}
    return next((lower[n] for n in names if n in lower), None)


def _element(feature):
    import datasets
    if isinstance(feature, list):
        return feature[0] if feature else None
    kinds = tuple(k for k in (getattr(datasets, "Sequence", None), getattr(datasets, "List", None),
                              getattr(datasets, "LargeList", None)) if isinstance(k, type))
    return feature.feature if isinstance(feature, kinds) else None


def _is_text(feature) -> bool:
    import datasets
    return isinstance(feature, datasets.Value) and feature.dtype in ("string", "large_string")


def _is_int(feature) -> bool:
    import datasets
    return isinstance(feature, datasets.Value) and feature.dtype.startswith(("int", "uint"))


def _is_scalar(feature) -> bool:
    import datasets
    return isinstance(feature, datasets.ClassLabel) or isinstance(feature, datasets.Value) and (
        _is_text(feature) or _is_int(feature) or feature.dtype.startswith("float"))


def _filename(name: str) -> str:
    return re.sub(r"[^\w.-]+", "_", name).strip("._") or "task"


def _shown(path) -> str:
    """A path as short as it reads well: relative to the working folder when inside it."""
    try:
        return str(Path(path).resolve().relative_to(Path.cwd())) or "."
    except ValueError:
        return str(path)


def _quote(text: str) -> str:
    import shlex
    return shlex.quote(text)


__all__ = ["Found", "Guess", "find", "guess_columns", "inspect", "new", "render", "verify"]
