"""A task file's own data: local files read with `datasets`' builders (csv, json, parquet, imagefolder).

A split is a file, a glob, or a folder. A folder of images with one subfolder per class is read by the `imagefolder`
builder (the layout torchvision's ImageFolder reads too); a folder of data files by the builder of their suffix.
Every problem is a one-line DataError naming the file and what was expected. Nothing here imports torch.
"""
from __future__ import annotations

import glob
from pathlib import Path

from bench.core.errors import DataError
from bench.results import identity

BUILDERS = {".csv": "csv", ".tsv": "csv", ".json": "json", ".jsonl": "json", ".parquet": "parquet"}
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")
FORMATS = "CSV, TSV, JSON/JSONL, Parquet, or a folder of images with one subfolder per class"


def files_of(source: str) -> list[Path]:
    """The files a split's source names: itself, a glob's matches, or every file under a folder."""
    path = Path(source)
    if path.is_file():  # before any glob: a name may hold glob characters ([1])
        return [path]
    if path.is_dir():
        return sorted(p for p in path.rglob("*") if p.is_file() and not p.name.startswith(".") and not notes(p))
    return sorted(Path(p) for p in glob.glob(source, recursive=True) if Path(p).is_file() and not notes(Path(p)))


def notes(path: Path) -> bool:
    """A README, licence or other text file beside the data, which no builder reads."""
    return path.suffix.lower() in (".md", ".txt", ".rst") or path.stem.upper() in ("README", "LICENSE", "LICENCE")


def builder_of(source: str, role: str) -> str:
    """The `datasets` builder that reads this split: by the suffix of its files (one kind per split)."""
    files = files_of(source)
    if not files:
        raise DataError(f"data.{role}: {source} not found (expected a file, a glob or a folder: {FORMATS})")
    if Path(source).is_dir() and any(p.suffix.lower() in IMAGE_SUFFIXES for p in files):
        return "imagefolder"
    kinds = {BUILDERS.get(p.suffix.lower()) for p in files}
    if None in kinds:
        odd = next(p for p in files if p.suffix.lower() not in BUILDERS)
        raise DataError(f"data.{role}: {odd} has an unknown format {odd.suffix or '(no suffix)'!r} "
                        f"(expected {FORMATS})")
    if len(kinds) > 1:
        raise DataError(f"data.{role}: {source} mixes formats ({', '.join(sorted(kinds))}); expected one per split")
    return kinds.pop()


def load(files: dict[str, str], roles: list[str]):
    """The splits `roles` (train, eval, dev) as a DatasetDict, each read by its builder."""
    import datasets
    out = {}
    for role in roles:
        source = files[role]
        builder = builder_of(source, role)
        kwargs = {"delimiter": "\t"} if builder == "csv" and all(p.suffix.lower() == ".tsv"
                                                                   for p in files_of(source)) else {}
        if builder == "imagefolder":  # class names come from the subfolders, the same for every split; one class
            _class_folders(source, role)  # is a label too (the check says a classifier needs 2)
            kwargs.update(data_dir=source, drop_labels=False)
        else:
            kwargs["data_files"] = [str(p) for p in files_of(source)]
        try:
            out[role] = datasets.load_dataset(builder, split="train", **kwargs)
        except Exception as e:  # a malformed row, a bad encoding: name the split's source
            if "corresponds to no data" in str(e) or all(p.stat().st_size == 0 for p in files_of(source)):
                raise DataError(f"data.{role}: {source} holds no rows: the split is empty (expected at least one "
                                f"row)") from e  # datasets' own words: 'Instruction "train" corresponds to no data'
            raise DataError(f"data.{role}: could not read {source} with datasets' {builder} builder "
                            f"({type(e).__name__}: {_first_line(e)})") from e
    return datasets.DatasetDict(out)


def _class_folders(source: str, role: str) -> None:
    """Every image of a folder split sits in a class subfolder (one level down), unless a metadata file labels them."""
    files = files_of(source)
    if any(p.stem == "metadata" for p in files):
        return
    odd = next((p for p in files if p.suffix.lower() in IMAGE_SUFFIXES and len(p.relative_to(source).parts) != 2), None)
    if odd is not None:
        raise DataError(f"data.{role}: {odd} is not in a class folder of {source} (expected {source}/<class>/<image>, "
                        f"one subfolder per class)")


def identity_of(source: str) -> dict:
    """What a record's configuration says of a split's files: each one's sha256 (a folder: one hash over its files'
    relative paths and hashes, and how many there are)."""
    files = files_of(source)
    if len(files) == 1 and not Path(source).is_dir():
        return {"file": files[0].name, "sha256": identity.file_sha256(files[0])}
    import hashlib
    digest = hashlib.sha256()
    root = Path(source) if Path(source).is_dir() else Path(".")
    for p in files:
        digest.update(f"{p.relative_to(root) if Path(source).is_dir() else p.name}\0{identity.file_sha256(p)}\n".encode())
    return {"files": len(files), "sha256": digest.hexdigest()}


def _first_line(e: BaseException) -> str:
    return str(e).strip().splitlines()[0] if str(e).strip() else ""
