"""Each run's evaluation predictions, saved beside its results so scores can be re-computed, given
intervals and compared pairwise without retraining: `predictions/<run_id>.parquet` in the results folder,
one row per evaluation example (its index in the evaluation split, gold, predicted, and the predicted
class's probability where the task has one; NER rows hold a sentence's tag lists)."""
from __future__ import annotations

from pathlib import Path


FOLDER = "predictions"


def relative_path(run_id: str) -> str:
    return f"{FOLDER}/{run_id}.parquet"


def save(path: Path, order: list[int], predictions: dict) -> None:
    import pandas as pd

    from bench.core.files import replaced_atomically
    frame = pd.DataFrame({"example": order, **predictions}).sort_values("example")
    path.parent.mkdir(parents=True, exist_ok=True)
    with replaced_atomically(path) as tmp:
        frame.to_parquet(tmp, index=False)


def load(path: Path) -> dict:
    import pandas as pd
    frame = pd.read_parquet(path)
    return {c: frame[c].tolist() for c in frame.columns}

