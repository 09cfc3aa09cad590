"""An on-disk cache of encoded data (tokenised text, decoded images), so a repeated task does no re-encoding.

An entry is keyed by everything that decides what encoding produced: the data (the `datasets.Dataset`
fingerprint, which follows its source files' paths and modification times, or generated content, and every
shuffle/select since), the processor (the tokenizer's full serialised definition, or the image preprocessing
settings), and the task's encoding parameters (columns, length, train/eval, crop margin) with a version that
changes with the encoding code. Entries live in `$BENCH_CACHE_DIR/encoded/` (default
~/.cache/peft-bench/encoded); delete the folder to reclaim the space. `BENCH_ENCODE_CACHE=off` encodes afresh.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import sys
import time
from pathlib import Path
from typing import Any, Callable


def built_once(name: str, build: Callable[[Path], None], marker: str = "config.json") -> Path:
    """The cache folder `name`, made once by `build(folder)` (a tiny model, a converted checkpoint): built in a
    scratch folder beside it and renamed into place, so a concurrent builder either wins or finds it complete;
    `marker` is the file whose presence says it is."""
    folder = cache_root() / name
    if (folder / marker).is_file():
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    import tempfile
    tmp = Path(tempfile.mkdtemp(dir=folder.parent))
    build(tmp)
    try:
        tmp.rename(folder)
    except OSError:  # another process finished first: its folder stands
        pass
    return folder


def cache_root() -> Path:
    """Where every cache of the project lives (encoded data, peak FLOP/s, the smoke tasks' tiny models)."""
    return Path(os.environ.get("BENCH_CACHE_DIR") or Path.home() / ".cache" / "peft-bench")


def cache_dir() -> Path:
    return cache_root() / "encoded"


def enabled() -> bool:
    return os.environ.get("BENCH_ENCODE_CACHE", "on").lower() not in ("off", "0", "no", "false")


def processor_identity(processor) -> dict | None:
    """What defines a processor's output; None when it cannot be identified (then nothing is cached)."""
    backend = getattr(processor, "backend_tokenizer", None)
    if backend is not None:  # a fast tokenizer: its whole pipeline (vocabulary, normaliser, templates) ...
        pipeline = type(backend).from_str(backend.to_str())  # a copy, less the state its last call left
        pipeline.no_truncation(), pipeline.no_padding()
        return {"class": type(processor).__name__,
                "sha256": hashlib.sha256(pipeline.to_str().encode()).hexdigest(),
                "padding_side": processor.padding_side, "truncation_side": processor.truncation_side}
    if dataclasses.is_dataclass(processor):  # e.g. ImagePreprocessing
        return {"class": type(processor).__name__, **dataclasses.asdict(processor)}
    return None


def entry_key(ds, processor, params: dict) -> dict | None:
    fingerprint = getattr(ds, "_fingerprint", None)
    proc = processor_identity(processor)
    if fingerprint is None or proc is None:
        return None
    return {"data": fingerprint, "rows": len(ds), "processor": proc, **params}


def cached(ds, processor, params: dict, build: Callable[[], Any], what: str = "examples") -> Any:
    """`build()`'s result for this (data, processor, params), from the cache or built and stored. `build` must
    return what torch.save stores and `torch.load(weights_only=True)` reads: tensors, lists, dicts, numbers."""
    import torch
    key = entry_key(ds, processor, params) if enabled() else None
    if key is None:
        return build()
    key = json.loads(json.dumps(key, sort_keys=True, default=str))  # as stored: tuples become lists
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:32]
    path = cache_dir() / f"{digest}.pt"
    t0 = time.perf_counter()
    if path.is_file():
        try:
            entry = torch.load(path, weights_only=True)
            if entry.get("key") == key:
                data = _unpack(entry["data"])
                print(f"cache: {what} read from {path} in {time.perf_counter() - t0:.2f} s", file=sys.stderr)
                return data
        except Exception as e:  # a torn or foreign file: rebuild it
            print(f"cache: ignoring unreadable {path} ({type(e).__name__}: {e})", file=sys.stderr)
    data = build()
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save({"key": key, "data": _pack(data)}, tmp)
        os.replace(tmp, path)  # atomic: concurrent runs building the same entry never see half a file
    except Exception as e:  # a full or read-only disk costs the cache, never the run (torch raises RuntimeError)
        print(f"cache: could not store {path} ({type(e).__name__}: {e})", file=sys.stderr)
        tmp.unlink(missing_ok=True)
    else:
        print(f"cache: {what} encoded in {time.perf_counter() - t0:.2f} s, stored in {path}", file=sys.stderr)
    return data


def _pack(data):
    """Examples whose fields are ints or lists of ints (tokenised text) as flat tensors: torch.load's safe
    unpickler reads thousands of small lists several times slower."""
    import torch
    if not (isinstance(data, list) and data and all(isinstance(e, dict) for e in data)):
        return data
    fields = list(data[0])
    if any(list(e) != fields for e in data):
        return data
    cols = {}
    for f in fields:
        values = [e[f] for e in data]
        if all(type(v) is int for v in values):
            cols[f] = {"flat": torch.tensor(values, dtype=torch.int64)}
        elif all(isinstance(v, list) and all(type(x) is int for x in v) for v in values):
            cols[f] = {"flat": torch.tensor([x for v in values for x in v], dtype=torch.int64),
                       "lengths": torch.tensor([len(v) for v in values], dtype=torch.int64)}
        else:
            return data
    return {"packed_examples": cols, "rows": len(data)}


def _unpack(data):
    if not (isinstance(data, dict) and "packed_examples" in data):
        return data
    cols = {}
    for f, col in data["packed_examples"].items():
        flat = col["flat"].tolist()
        if "lengths" not in col:
            cols[f] = flat
            continue
        ends = col["lengths"].cumsum(0).tolist()
        cols[f] = [flat[a:b] for a, b in zip([0] + ends[:-1], ends)]
    return [dict(zip(cols, row)) for row in zip(*cols.values())] if cols else [{} for _ in range(data["rows"])]
