"""`bench task new` through the real CLI: from a data file, folder or Hub id to a task file that loads and passes the
data checks, with its guesses said on the terminal and in the file; refusals are one line."""
from __future__ import annotations

import csv
import json
import random
from pathlib import Path

import pytest
from conftest import run_bench

from suites import taskfile

WORDS = ["the", "app", "crashes", "when", "I", "open", "my", "invoice", "and", "password", "reset", "mail", "never",
         "arrives", "so", "please", "refund", "double", "charge", "on", "card", "today"]


def _sentence(rng: random.Random, n: int) -> str:
    return " ".join(rng.choices(WORDS, k=n))


def _new(*args: str):
    return run_bench("task", "new", *args)


def _loads(path: Path):
    assert path.is_file(), path
    return taskfile.load(path)


def _next_command(stdout: str, path: Path) -> None:
    assert stdout.strip().splitlines()[-1].startswith("next: python -m bench run --tasks ")
    assert stdout.strip().splitlines()[-1].endswith(" --methods head,lora --budget quick")
    assert path.name in stdout.strip().splitlines()[-1]


def test_csv_with_string_labels_guesses_text_and_label_and_macro_f1_when_imbalanced(tmp_path):
    rng = random.Random(0)
    folder = tmp_path / "tickets"
    folder.mkdir()
    for split, n in (("train", 150), ("test", 30)):
        with open(folder / f"{split}.csv", "w", newline="") as f:
            out = csv.writer(f)
            out.writerow(["id", "subject", "body", "queue"])
            for i in range(n):
                queue = "billing" if i % 10 < 8 else "bug" if i % 10 == 8 else "account"  # 8:1:1
                out.writerow([f"T{i}", queue[:3], _sentence(rng, rng.randint(8, 20)), queue])
    proc = _new("--data", str(folder / "train.csv"))
    assert proc.returncode == 0, proc.stderr
    written = folder / "tickets.yaml"  # named after the folder: the file's stem is a split name
    task = _loads(written)
    assert task.kind == "text-classification"
    assert (task.text_column, task.text_pair_column, task.label_column) == ("body", None, "queue")
    assert task.metric == "macro_f1"
    assert task.data_files["train"] == str(folder / "train.csv") and task.data_files["eval"] == str(folder / "test.csv")
    text = written.read_text()
    assert "train: train.csv" in text and "eval: test.csv" in text  # relative to the task file
    assert "budgets" in text and "derived from the training split's size" in text  # said, not written
    for said in (proc.stdout, text):  # the guesses on the terminal and as comments
        assert "'body'" in said and "'queue'" in said and "imbalanced 8:1" in said
    assert "loads, data checked (3 classes, rows train 150, eval 30)" in proc.stdout
    _next_command(proc.stdout, written)


def test_text_pair_csv(tmp_path):
    rng = random.Random(1)
    for split, n in (("train", 120), ("validation", 24)):
        with open(tmp_path / f"pairs_{split}.csv", "w", newline="") as f:
            out = csv.writer(f)
            out.writerow(["premise", "hypothesis", "label"])
            for i in range(n):
                out.writerow([_sentence(rng, 12), _sentence(rng, 8), ["entail", "neutral", "contradict"][i % 3]])
    proc = _new("--data", str(tmp_path / "pairs_train.csv"), "--name", "nli")
    assert proc.returncode == 0, proc.stderr
    written = tmp_path / "nli.yaml"
    task = _loads(written)
    assert (task.name, task.kind, task.metric) == ("nli", "text-classification", "accuracy")
    assert (task.text_column, task.text_pair_column, task.label_column) == ("premise", "hypothesis", "label")
    assert task.data_files["eval"] == str(tmp_path / "pairs_validation.csv")
    assert "unsure: text_pair: 'hypothesis'" in proc.stdout
    assert "# UNSURE: text_pair: 'hypothesis'" in written.read_text()


def test_jsonl_token_classification_with_string_tags(tmp_path):
    rng = random.Random(2)
    for split, n in (("train", 110), ("test", 20)):
        with open(tmp_path / f"news_{split}.jsonl", "w") as f:
            for i in range(n):
                words = rng.choices(WORDS, k=rng.randint(3, 9))
                tags = [rng.choice(["O", "O", "B-LOC", "I-LOC", "B-PER"]) for _ in words]
                f.write(json.dumps({"id": i, "tokens": words, "ner_tags": tags, "pos": ["X"] * len(words)}) + "\n")
    proc = _new("--data", str(tmp_path / "news_train.jsonl"))
    assert proc.returncode == 0, proc.stderr
    task = _loads(tmp_path / "news.yaml")
    assert (task.kind, task.tokens_column, task.tags_column, task.metric) == \
        ("token-classification", "tokens", "ner_tags", "entity_f1")
    assert task.default_model == "sentence-transformers/all-MiniLM-L6-v2"
    assert "also one per word: pos" in proc.stdout  # another list of one tag per word: said, not chosen


def test_image_folder_with_class_subfolders(tmp_path):
    from PIL import Image
    root = tmp_path / "photos"
    for split, n in (("train", 55), ("test", 5)):
        for c, cls in enumerate(("cats", "dogs")):
            folder = root / split / cls
            folder.mkdir(parents=True)
            for i in range(n):  # every image differs (the checks refuse the same image twice)
                Image.new("RGB", (8, 8), (i, 128 * c, 0 if split == "train" else 200)).save(folder / f"{i}.png")
    proc = _new("--data", str(root))
    assert proc.returncode == 0, proc.stderr
    written = tmp_path / "photos.yaml"  # beside the folder
    task = _loads(written)
    assert (task.kind, task.image_column, task.label_column, task.metric) == \
        ("image-classification", "image", "label", "accuracy")
    assert task.data_files == {"train": str(root / "train"), "eval": str(root / "test")}
    assert task.default_model == "google/mobilenet_v2_1.0_224"
    assert task.model_local_names == {"google/mobilenet_v2_1.0_224": "vision/mobilenet_v2_1.0_224-imagenet"}
    assert "2 classes, rows train 110, eval 10" in proc.stdout


def test_hub_layout_parquet_folder(tmp_path):
    import pandas as pd
    rng = random.Random(3)
    root = tmp_path / "reviews"
    (root / "data").mkdir(parents=True)
    for split, n in (("train", 100), ("test", 20)):
        pd.DataFrame({"sentence": [_sentence(rng, 10) for _ in range(n)], "label": [i % 2 for i in range(n)]}) \
            .to_parquet(root / "data" / f"{split}-00000-of-00001.parquet")
    (root / "README.md").write_text("# reviews\n")
    proc = _new("--data", str(root), "--out", str(tmp_path / "tasks" / "rev.yaml"))
    assert proc.returncode == 0, proc.stderr
    written = tmp_path / "tasks" / "rev.yaml"
    task = _loads(written)
    assert (task.kind, task.text_column, task.label_column, task.metric) == \
        ("text-classification", "sentence", "label", "accuracy")
    assert task.data_files["train"] == str(root / "data" / "train-00000-of-00001.parquet")
    assert "train: ../reviews/data/train-00000-of-00001.parquet" in written.read_text()
    assert "add labels:" in proc.stdout  # integer classes 0, 1: how to name them


def test_refuses_to_overwrite_without_force(tmp_path):
    rng = random.Random(4)
    for split in ("train", "test"):
        (tmp_path / f"{split}.csv").write_text("text,label\n" + "".join(
            f"{_sentence(rng, 6)},{'ab'[i % 2]}\n" for i in range(100)))
    written = tmp_path / "mine.yaml"
    written.write_text("# my own edits\n")
    proc = _new("--data", str(tmp_path / "train.csv"), "--out", str(written))
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "exists" in lines[0] and "--out" in lines[0] and "--force" in lines[0], proc.stderr
    assert written.read_text() == "# my own edits\n"
    proc = _new("--data", str(tmp_path / "train.csv"), "--out", str(written), "--force")
    assert proc.returncode == 0, proc.stderr
    assert _loads(written).label_column == "label"


def test_a_single_file_needs_an_evaluation_file(tmp_path):
    (tmp_path / "tickets.csv").write_text("text,label\n" + "".join(f"row {i},{'ab'[i % 2]}\n" for i in range(100)))
    proc = _new("--data", str(tmp_path / "tickets.csv"))
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert "no evaluation file" in lines[0] and "tickets{_,-}{test," in lines[0]
    assert not list(tmp_path.glob("*.yaml"))


def test_hub_id_not_readable_offline_writes_marked_placeholders(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    written = tmp_path / "hub.yaml"
    proc = _new("--data", "someone/no-such-dataset-here", "--out", str(written))
    assert proc.returncode == 0, proc.stderr
    task = _loads(written)
    assert (task.hub_id, task.train_split, task.eval_split) == ("someone/no-such-dataset-here", "train", "test")
    assert "not inspected" in proc.stdout and "CHECK" in written.read_text()


@pytest.mark.parametrize("data, message", [("missing/tickets.csv", "no such file or folder"),
                                           ("notes.txt", "unknown format")])
def test_bad_data_is_one_line(tmp_path, data, message):
    (tmp_path / "notes.txt").write_text("hello\n")
    proc = _new("--data", str(tmp_path / data))
    assert proc.returncode == 1 and message in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, proc.stderr


def test_the_written_files_run_unchanged(tmp_path):
    """From data to results in two commands, for each kind of data: `task new` (with the test's tiny models), then
    `bench run` on the files exactly as written."""
    import os

    import pandas as pd
    from PIL import Image

    from suites.smoke import build_tiny_bert, tiny_bert_dir
    from suites.smoke_ner import vocabulary as ner_vocabulary
    rng = random.Random(7)
    bert, ner_bert = tiny_bert_dir(), build_tiny_bert("tiny-ner-bert-v1", ner_vocabulary())
    written = []
    (tmp_path / "tickets").mkdir()
    for split, n in (("train", 120), ("test", 24)):
        with open(tmp_path / "tickets" / f"{split}.csv", "w", newline="") as f:
            out = csv.writer(f)
            out.writerow(["body", "queue"])
            out.writerows([_sentence(rng, 8), ["billing", "bug"][i % 2]] for i in range(n))
        with open(tmp_path / f"pairs_{split}.csv", "w", newline="") as f:
            out = csv.writer(f)
            out.writerow(["premise", "hypothesis", "label"])
            out.writerows([_sentence(rng, 12), _sentence(rng, 9), ["yes", "no"][i % 2]] for i in range(n))
        with open(tmp_path / f"news_{split}.jsonl", "w") as f:
            for i in range(n):
                words = rng.choices(["john", "visited", "paris", "smith", "."], k=5)
                f.write(json.dumps({"tokens": words, "tags": ["B-PER" if w == "john" else "B-LOC" if w == "paris"
                                                              else "O" for w in words]}) + "\n")
        (tmp_path / "reviews" / "data").mkdir(parents=True, exist_ok=True)
        pd.DataFrame({"sentence": [_sentence(rng, 10) for _ in range(n)], "label": ["neg", "pos"] * (n // 2)}) \
            .to_parquet(tmp_path / "reviews" / "data" / f"{split}-00000-of-00001.parquet")
        for c, cls in enumerate(("red", "blue")):
            folder = tmp_path / "photos" / split / cls
            folder.mkdir(parents=True)
            for i in range(n // 2 + 10 * (split == "train")):
                Image.new("RGB", (16, 16), (200 * (1 - c), i, 200 * c)).save(folder / f"{i}.png")
    for data, model, name in ((tmp_path / "tickets" / "train.csv", bert, "tickets"),
                              (tmp_path / "pairs_train.csv", bert, "pairs"),
                              (tmp_path / "news_train.jsonl", ner_bert, "news"),
                              (tmp_path / "reviews", bert, "reviews"),
                              (tmp_path / "photos", None, "photos")):
        if model is None:
            models = os.environ.get("BENCH_MODEL_DIR")
            if not models or not (Path(models) / "vision/mobilenet_v1_0.25_128-imagenet").is_dir():
                continue  # the image folder needs the tiny MobileNet (CI has it)
            model = "vision/mobilenet_v1_0.25_128-imagenet"
        out = tmp_path / f"{name}.yaml"
        proc = _new("--data", str(data), "--model", str(model), "--out", str(out))
        assert proc.returncode == 0, proc.stderr
        written.append(out)
    results = tmp_path / "out"
    proc = run_bench("run", "--tasks", ",".join(map(str, written)), "--methods", "head,lora", "--budget", "smoke",
                     "--out", str(results), "--no-report")
    records = [json.loads(x) for x in (results / "results.jsonl").read_text().splitlines()]
    assert {(r["task"], r["method"], r["status"]) for r in records} == \
        {(p.stem, m, "ok") for p in written for m in ("head", "lora")}, proc.stderr
