"""Bad data gets one clear line before any model loads: the file, the field, and what was expected.

`labelled` also turns a label column into class indices with names (string labels, plain integers) the same way for
every split, so a user's CSV reaches the kinds' code as the shipped Parquet files do. Data that is already a
`ClassLabel` with the training split's names passes through untouched (same rows, same fingerprint, same encode
cache), so the shipped tasks read exactly what they read before task files.
"""
from __future__ import annotations

from collections import Counter

from bench.core.errors import DataError

IMBALANCE = 10.0  # commonest : rarest training class beyond this is a warning (never an error)
MIN_DEV = 20  # a dev set carved from training smaller than this cannot rank learning rates
TEXT_TYPES = ("string", "large_string")


def present(split, columns: list[str], where: str) -> None:
    missing = [c for c in columns if c not in split.column_names]
    if missing:
        raise DataError(f"{where}: no column {', '.join(repr(c) for c in missing)} (columns: "
                        f"{', '.join(split.column_names)})")


def not_empty(split, where: str) -> None:
    if len(split) == 0:
        raise DataError(f"{where}: the split is empty (expected at least one row)")


def text(split, column: str, where: str) -> None:
    dtype = getattr(split.features[column], "dtype", type(split.features[column]).__name__)
    if dtype not in TEXT_TYPES:
        raise DataError(f"{where}: column {column!r} is {dtype}, expected text (strings)")
    if any(v is None for v in split[column]):
        row = split[column].index(None)
        raise DataError(f"{where}: column {column!r} is empty in row {row} (expected text in every row)")


def word_lists(split, tokens: str, tags: str, where: str) -> None:
    """Token classification: a list of words and a list of tags per row, of equal length."""
    for column, what in ((tokens, "a list of words"), (tags, "a list of tags")):
        if _inner(split.features[column]) is None:
            raise DataError(f"{where}: column {column!r} is {_type_name(split.features[column])}, expected "
                            f"{what} per row")
    words = _inner(split.features[tokens])
    if getattr(words, "dtype", None) not in TEXT_TYPES:
        raise DataError(f"{where}: column {tokens!r} holds {_type_name(words)}, expected lists of words (strings)")
    for row, (w, t) in enumerate(zip(split[tokens], split[tags])):
        if w is None or t is None or len(w) != len(t):
            raise DataError(f"{where}: row {row} has {0 if w is None else len(w)} words and "
                            f"{0 if t is None else len(t)} tags in {tokens!r}/{tags!r} (expected one tag per word)")


def labelled(ds, column: str, train: str, where: dict[str, str], declared: list[str] | None = None,
             per_word: bool = False):
    """(ds with `column` as class indices whose feature names them, the class names).

    Names come from the training split's ClassLabel feature, else from `declared`, else from the sorted distinct
    values of the training split. A label in another split that training never has is an error naming it."""
    import datasets
    feature = ds[train].features[column]
    inner = _inner(feature) if per_word else feature
    if per_word and inner is None:
        raise DataError(f"{where[train]}: column {column!r} is {_type_name(feature)}, expected a list of tags per row")
    if isinstance(inner, datasets.ClassLabel):
        names = list(inner.names)
    elif not declared and any(isinstance(_inner(s.features[column]) if per_word else s.features[column],
                                         datasets.ClassLabel) for s in ds.values()):
        named = next(r for r, s in ds.items() if isinstance(_inner(s.features[column]) if per_word
                                                             else s.features[column], datasets.ClassLabel))
        raise DataError(f"{where[train]}: column {column!r} carries no class names while {named} names them; give "
                        f"every split the same ClassLabel feature, or declare `labels:` in a task file")
    elif declared:
        names = [str(n) for n in declared]
    else:
        values = {v for v in _values(ds[train], column, per_word, where[train])}
        names = [str(v) for v in sorted(values)]
    if len(names) < 2:
        raise DataError(f"{where[train]}: column {column!r} has {len(names)} class ({', '.join(names)}); "
                        f"a classifier needs at least 2")
    label = datasets.ClassLabel(names=names)
    out = {}
    for role, split in ds.items():
        f = split.features[column]
        f = _inner(f) if per_word else f
        if isinstance(f, datasets.ClassLabel) and list(f.names) == names:
            if not per_word and min(split[column]) < 0:  # GLUE-style test splits: labels withheld as -1
                raise DataError(f"{where[role]}: column {column!r} holds -1 (labels withheld, as in GLUE's test "
                                f"splits); expected a labelled split: evaluate on another one")
            out[role] = split  # already what the kinds read: untouched
            continue
        index = _index(f, names, declared is not None and not isinstance(inner, datasets.ClassLabel))
        seen = Counter(_values(split, column, per_word, where[role], f))
        unknown = [v for v in seen if index(v) is None]
        if unknown:
            origin = "the declared labels" if declared and not isinstance(inner, datasets.ClassLabel) else "training"
            raise DataError(f"{where[role]}: label {unknown[0]!r} in column {column!r} never appears in {origin} "
                            f"(labels: {', '.join(names)})")
        convert = (lambda vs: [[index(x) for x in v] for v in vs]) if per_word else (lambda vs: [index(v) for v in vs])
        target = datasets.Sequence(label) if per_word else label
        features = split.features.copy()
        features[column] = target
        out[role] = split.map(lambda batch: {column: convert(_named(batch[column], f, per_word))}, batched=True,
                              features=features, desc=f"labels of {role}")
    return datasets.DatasetDict(out), names


def imbalance(split, column: str, names: list[str], per_word: bool = False) -> str | None:
    """A warning when the commonest training class outnumbers the rarest beyond IMBALANCE : 1 (None otherwise)."""
    counts = Counter(_values(split, column, per_word, ""))
    if per_word or len(counts) < 2:
        return None
    (top, most), (low, least) = counts.most_common()[0], counts.most_common()[-1]
    missing = [n for i, n in enumerate(names) if i not in counts]
    if missing:
        return f"class {missing[0]!r} has no training example"
    if most / least > IMBALANCE:
        return (f"class imbalance {most / least:.0f}:1 in training ({names[top]} {most}, {names[low]} {least}); "
                f"accuracy rewards the commonest class: consider metric: macro_f1")
    return None


def dev_carve(rows: int, wanted: int, where: str) -> None:
    """The dev set carved from training: min(wanted, a fifth of training) must reach MIN_DEV."""
    if min(wanted, rows // 5) < MIN_DEV:
        raise DataError(f"{where}: {rows} training rows are too few to carve a dev set of {MIN_DEV} (a fifth of "
                        f"training at most); declare a dev split (data.dev) or add rows")


def images(split, column: str, where: str) -> None:
    """Every image decodes (a folder's files are named), and no file appears twice."""
    import hashlib
    import io

    import datasets
    from PIL import Image
    raw = split.cast_column(column, datasets.Image(decode=False))
    seen: dict[str, str] = {}
    for row, item in enumerate(raw[column]):
        name = item.get("path") or f"row {row}"
        data = item.get("bytes")
        try:
            data = data if data is not None else open(item["path"], "rb").read()
            with Image.open(io.BytesIO(data)) as image:
                image.verify()
        except Exception as e:
            raise DataError(f"{where}: image {name} does not decode ({type(e).__name__}: "
                            f"{str(e).splitlines()[0] if str(e) else ''}); remove or replace it") from e
        digest = hashlib.sha256(data).hexdigest()
        if digest in seen:
            raise DataError(f"{where}: {name} duplicates {seen[digest]} (the same image twice; remove one)")
        seen[digest] = name


def _inner(feature):
    """The element feature of a list column (datasets' List / Sequence / a plain list), else None."""
    import datasets
    if isinstance(feature, list):
        return feature[0] if feature else None
    if isinstance(feature, (datasets.Sequence, getattr(datasets, "List", datasets.Sequence),
                            getattr(datasets, "LargeList", datasets.Sequence))):
        return feature.feature
    return None


def _type_name(feature) -> str:
    return getattr(feature, "dtype", None) or type(feature).__name__


def _named(values, feature, per_word: bool):
    """Values as the training names see them: a ClassLabel's indices turned into its names."""
    import datasets
    if not isinstance(feature, datasets.ClassLabel):
        return values
    return [[feature.names[x] for x in v] for v in values] if per_word else [feature.names[v] for v in values]


def _values(split, column: str, per_word: bool, where: str, feature=None):
    """Every label value of a split (names, for a ClassLabel other than the training one)."""
    values = _named(split[column], feature, per_word) if feature is not None else split[column]
    for row, v in enumerate(values):
        if v is None:
            raise DataError(f"{where}: row {row} has no {column!r} (expected a label in every row)")
        if per_word:
            if not isinstance(v, (list, tuple)):
                raise DataError(f"{where}: row {row} of {column!r} is {v!r}, expected a list of tags")
            yield from v
        else:
            yield v


def _index(feature, names: list[str], declared_ints: bool):
    """A function from a label value to its class index (None: not a known class)."""
    import datasets
    lookup = {n: i for i, n in enumerate(names)}
    if isinstance(feature, datasets.ClassLabel):
        return lambda v: lookup.get(v)

    def index(v):
        if isinstance(v, bool):  # true/false labels: their names are "False" and "True"
            return lookup.get(str(v))
        if not isinstance(v, (int, str, float)):
            return None
        if declared_ints and isinstance(v, int):  # declared names for integer labels: the integer is the index
            return v if 0 <= v < len(names) else None
        return lookup.get(str(v) if not isinstance(v, float) or not v.is_integer() else str(int(v)))
    return index
