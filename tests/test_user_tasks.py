"""A user's own task files through the real CLI: local CSV/TSV/JSONL files, an image folder and a Hub-style Parquet
folder run `head` and `lora` at the smoke budget, `bench tune` writes its rates beside the task file and a later
`bench run` uses them; every kind of bad data (or a bad task file) ends in one line naming the file, the field and
what was expected, before any model loads."""
import csv
import json
import os
import random
from pathlib import Path

import pytest
from conftest import run_bench

from suites import smoke, smoke_ner
from suites.smoke_vision import TINY_MOBILENET

QUEUES = ["billing", "outage", "praise"]
# What `default_budgets` gives a text task at the smoke budget.
SMOKE = {"train_examples": 64, "batch_size": 16, "max_length": 64, "eval_examples": 64, "latency_samples": 5,
         "untimed_steps": 1, "log_every": 1}
COLOURS = {"red": (200, 30, 30), "green": (30, 180, 40), "blue": (30, 40, 200)}


# --- writing a user's data ------------------------------------------------------------------------------------

def ticket_rows(n: int, seed: int, queues=QUEUES) -> list[dict]:
    """Support tickets in the tiny BERT's words, with a string queue per row."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        queue = queues[i % len(queues)]
        adjective = rng.choice(smoke.POSITIVE if queue == "praise" else smoke.NEGATIVE)
        rows.append({"body": f"{rng.choice(smoke.SUBJECTS)} was {rng.choice(smoke.FILLERS)} {adjective} .",
                     "queue": queue})
    rng.shuffle(rows)
    return rows


def write_csv(path: Path, rows: list[dict], delimiter: str = ",", fields: list[str] | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fields or ["body", "queue"] if not rows else list(rows[0]), delimiter=delimiter)
        writer.writeheader()
        writer.writerows(rows)
    return path


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def write_task(path: Path, fields: dict) -> Path:
    import yaml
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(fields, sort_keys=False))
    return path


def ner_rows(n: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    rows = [smoke_ner.sentence(rng.choice(smoke_ner.TEMPLATES), rng) for _ in range(n)]
    return [{"tokens": [w for w, _ in r], "tags": [t for _, t in r]} for r in rows]


def write_png(path: Path, colour: tuple[int, int, int], seed: int) -> None:
    """A 64x64 solid colour with noise: every file's bytes differ."""
    import numpy as np
    from PIL import Image
    rng = np.random.default_rng(seed)
    pixels = np.clip(np.array(colour) + rng.integers(-25, 26, (64, 64, 3)), 0, 255).astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)


def write_photos(folder: Path, per_class: int, seed: int, colours=COLOURS) -> Path:
    for c, (name, colour) in enumerate(colours.items()):
        for i in range(per_class):
            write_png(folder / name / f"{name}_{i:03d}.png", colour, seed * 100_000 + c * 1000 + i)
    return folder


def write_hub_folder(folder: Path) -> Path:
    """A dataset repository's layout: data/<split>-00000-of-00001.parquet, the class names in the features."""
    import datasets
    features = datasets.Features({"text": datasets.Value("string"),
                                  "label": datasets.ClassLabel(names=["negative", "positive"])})
    for split, n, seed in (("train", 120, 1), ("test", 40, 2)):
        ds = smoke.sentiment_data(n, seed).rename_column("sentence", "text").cast(features)
        (folder / "data").mkdir(parents=True, exist_ok=True)
        ds.to_parquet(str(folder / "data" / f"{split}-00000-of-00001.parquet"))
    return folder


# --- the good tasks, run once for the module --------------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny_bert() -> str:
    return str(smoke.tiny_bert_dir())


@pytest.fixture(scope="module")
def user_tasks(tmp_path_factory, tiny_bert) -> dict[str, Path]:
    """One folder of a user's tasks, each file beside its data: name -> task file."""
    root = tmp_path_factory.mktemp("user-tasks")
    files = {}
    write_csv(root / "tickets" / "train.csv", ticket_rows(150, 1))
    write_csv(root / "tickets" / "test.csv", ticket_rows(45, 2))
    files["tickets"] = write_task(root / "tickets.yaml", {
        "kind": "text-classification", "description": "support tickets by queue",
        "data": {"train": "tickets/train.csv", "eval": "tickets/test.csv"},
        "columns": {"text": "body", "label": "queue"}, "metric": "macro_f1", "model": tiny_bert})

    rng = random.Random(3)

    def pair(i: int) -> dict:
        same = i % 2 == 0
        a, b = rng.choice(smoke.SUBJECTS), rng.choice(smoke.POSITIVE + smoke.NEGATIVE)
        other = rng.choice(smoke.NEGATIVE if b in smoke.POSITIVE else smoke.POSITIVE)
        return {"a": f"{a} was {b} .", "b": f"{a} was {b if same else other} .",
                "label": "same" if same else "different"}
    write_csv(root / "pairs" / "train.tsv", [pair(i) for i in range(120)], delimiter="\t")
    write_csv(root / "pairs" / "test.tsv", [pair(i) for i in range(40)], delimiter="\t")
    files["pairs"] = write_task(root / "pairs.yaml", {
        "kind": "text-classification", "data": {"train": "pairs/train.tsv", "eval": "pairs/test.tsv"},
        "columns": {"text": "a", "text_pair": "b", "label": "label"}, "model": tiny_bert})

    write_jsonl(root / "people" / "train.jsonl", ner_rows(120, 4))
    write_jsonl(root / "people" / "test.jsonl", ner_rows(40, 5))
    ner_bert = smoke.build_tiny_bert("tiny-ner-bert-v1", smoke_ner.vocabulary())
    files["people"] = write_task(root / "people.yaml", {
        "kind": "token-classification", "data": {"train": "people/train.jsonl", "eval": "people/test.jsonl"},
        "metric": "entity_f1", "model": str(ner_bert)})

    write_hub_folder(root / "reviews-dataset")
    files["reviews"] = write_task(root / "reviews.yaml", {
        "kind": "text-classification", "data": {"hub": "reviews-dataset", "splits": {"train": "train", "eval": "test"}},
        "model": tiny_bert, "budgets": {"smoke": SMOKE}})  # declared: see test_a_hub_folder_task_derives_budgets

    skewed = [{"body": r["body"], "queue": "billing"} for r in ticket_rows(230, 6, ["billing"])]
    skewed[::23] = [{"body": r["body"], "queue": "praise"} for r in ticket_rows(10, 7, ["praise"])]
    write_csv(root / "skewed" / "train.csv", skewed)
    write_csv(root / "skewed" / "test.csv", ticket_rows(40, 8, ["billing", "praise"]))
    files["skewed"] = write_task(root / "skewed.yaml", {
        "kind": "text-classification", "data": {"train": "skewed/train.csv", "eval": "skewed/test.csv"},
        "columns": {"text": "body", "label": "queue"}, "model": tiny_bert})
    return files


@pytest.fixture(scope="module")
def photos_task(tmp_path_factory, model_dir) -> Path:
    """Three colours of PNGs in class folders, and the tiny MobileNet by its name under the models dir."""
    if not (model_dir / TINY_MOBILENET / "config.json").is_file():
        pytest.skip(f"{TINY_MOBILENET} not under {model_dir}")
    root = tmp_path_factory.mktemp("user-photos")
    write_photos(root / "photos" / "train", 40, 1)
    write_photos(root / "photos" / "test", 8, 2)
    return write_task(root / "photos.yaml", {
        "kind": "image-classification", "data": {"train": "photos/train", "eval": "photos/test"},
        "model": TINY_MOBILENET})


def records(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / "results.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def tuned_tickets(user_tasks, tmp_path_factory):
    """`bench tune` of the tickets task: its rates go beside the task file."""
    out = tmp_path_factory.mktemp("tune") / "tickets"
    proc = run_bench("tune", "--tasks", str(user_tasks["tickets"]), "--methods", "head,lora", "--budget", "smoke",
                     "--points", "2", "--span", "10", "--parallel", "2", "--out", str(out))
    return out, proc


@pytest.fixture(scope="module")
def user_grid(user_tasks, tuned_tickets, tmp_path_factory):
    """One `bench run` of every text task (after the tune, so tickets reads its tuned rates)."""
    out = tmp_path_factory.mktemp("user-grid") / "all"
    names = ("tickets", "pairs", "people", "reviews", "skewed")
    proc = run_bench("run", "--tasks", ",".join(str(user_tasks[n]) for n in names), "--methods", "head,lora",
                     "--budget", "smoke", "--parallel", "2", "--out", str(out))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return out, proc


def runs_of(grid, task: str) -> dict[str, dict]:
    rows = {r["method"]: r for r in records(grid[0]) if r["task"] == task}
    assert sorted(rows) == ["head", "lora"], rows
    assert all(r["status"] == "ok" for r in rows.values()), {m: r["error"] for m, r in rows.items()}
    return rows


def test_tune_writes_the_rates_beside_the_task_file_and_run_uses_them(user_tasks, tuned_tickets, user_grid):
    out, proc = tuned_tickets
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert all(r["status"] == "ok" and "dev_macro_f1" in r["metrics"] for r in records(out))
    tuned = user_tasks["tickets"].parent / "tuned" / "tickets.smoke.yaml"
    assert tuned.is_file(), proc.stdout
    assert str(tuned) in proc.stdout
    assert not list(Path(os.environ["BENCH_TUNED_DIR"]).glob("tickets.*"))  # beside the task file only
    import yaml
    chosen = yaml.safe_load(tuned.read_text())["methods"]
    assert set(chosen) == {"head", "lora"}
    for method, run in runs_of(user_grid, "tickets").items():
        assert run["info"]["lr_source"] == "tuned"
        assert run["metrics"]["lr"] == chosen[method]["lr"]
    assert runs_of(user_grid, "pairs")["lora"]["info"]["lr_source"] != "tuned"  # no tune of that task


def test_csv_task_with_string_labels_scores_macro_f1_per_named_class(user_tasks, user_grid):
    for run in runs_of(user_grid, "tickets").values():
        m = run["metrics"]
        assert run["suite"] == "custom" and run["info"]["task"]["metric"] == "macro_f1"
        assert run["info"]["task"]["file"] == str(user_tasks["tickets"].resolve())
        assert 0 <= m["macro_f1"] <= 1 and m["macro_f1_ci_low"] <= m["macro_f1"] <= m["macro_f1_ci_high"]
        assert {f"{p}_{q}" for p in ("f1", "precision", "recall") for q in QUEUES} <= set(m)
        assert not any(k.startswith("f1_") and k[3:].isdigit() for k in m)  # named by class, not by index
        assert m["eval_examples"] == 45
    assert "tickets: 3 classes, rows train 150, eval 45; data checked" in user_grid[1].stderr


def test_text_pair_tsv_task_runs(user_grid):
    for run in runs_of(user_grid, "pairs").values():
        assert 0 <= run["metrics"]["accuracy"] <= 1 and run["metrics"]["eval_examples"] == 40
        assert run["config"]["data"]["train"]["file"] == "train.tsv"
    assert "pairs: 2 classes, rows train 120, eval 40" in user_grid[1].stderr


def test_jsonl_token_classification_with_string_iob2_tags_runs(user_tasks, user_grid):
    for run in runs_of(user_grid, "people").values():
        assert run["info"]["task"]["kind"] == "token-classification"
        assert 0 <= run["metrics"]["entity_f1"] <= 1
    # the tags' names come from the data: every IOB2 tag the training sentences use
    from suites import find_tasks
    tags = {t for line in (user_tasks["people"].parent / "people" / "train.jsonl").read_text().splitlines()
            for t in json.loads(line)["tags"]}
    assert find_tasks([str(user_tasks["people"])], None)[0].check(None, "eval")["labels"] == sorted(tags)
    assert f"people: {len(tags)} classes, rows train 120, eval 40" in user_grid[1].stderr


def test_hub_style_parquet_folder_task_runs(user_tasks, user_grid):
    for run in runs_of(user_grid, "reviews").values():
        assert run["metrics"]["eval_examples"] == 40
        assert run["config"]["data"]["folder"]["files"] == 2
    assert "reviews: 2 classes, rows train 120, test 40" in user_grid[1].stderr


def test_a_hub_folder_task_derives_budgets(user_tasks, tmp_path):
    from suites import find_tasks
    task = tmp_path / "reviews.yaml"
    task.write_text(user_tasks["reviews"].read_text().split("budgets:")[0])
    (tmp_path / "reviews-dataset").symlink_to(user_tasks["reviews"].parent / "reviews-dataset")
    (loaded,) = find_tasks([str(task)], None)
    assert not loaded.budgets
    assert loaded.budget("smoke").train_examples == 64 and loaded.budget("full").epochs >= 3


def test_class_imbalance_is_a_warning_and_the_runs_still_succeed(user_grid):
    warning = next(line for line in user_grid[1].stderr.splitlines() if line.startswith("bench: warning: skewed:"))
    assert "class imbalance 22:1" in warning and "macro_f1" in warning
    for run in runs_of(user_grid, "skewed").values():
        (held,) = run["info"]["task"]["warnings"]
        assert "imbalance" in held or "no training example" in held


def test_image_folder_task_runs(photos_task, tmp_path):
    proc = run_bench("run", "--tasks", str(photos_task), "--methods", "head,lora", "--budget", "smoke",
                     "--parallel", "2", "--out", str(tmp_path / "out"))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "photos: 3 classes, rows train 120, eval 24; data checked" in proc.stderr
    runs = runs_of((tmp_path / "out", proc), "photos")
    for run in runs.values():
        assert run["info"]["task"]["kind"] == "image-classification" and run["metrics"]["eval_examples"] == 24
        assert {"accuracy", "macro_f1", *(f"f1_{c}" for c in COLOURS)} <= set(run["metrics"])


# --- bad data: one line, before any model loads -------------------------------------------------------------------

def fails(task: Path, tmp_path: Path, code: int = 1) -> str:
    """`bench run` of a bad task: exit `code`, one error line last on stderr, no traceback, nothing run."""
    out = tmp_path / "out"
    proc = run_bench("run", "--tasks", str(task), "--methods", "head", "--budget", "smoke", "--out", str(out))
    text = proc.stdout + proc.stderr
    assert "Traceback" not in text, text
    assert proc.returncode == code, text
    errors = [line for line in proc.stderr.splitlines() if "error" in line.lower()]
    last = proc.stderr.strip().splitlines()[-1]
    assert errors == [last] and last.startswith("bench: error: "), proc.stderr
    assert not out.exists() and "runs (" not in proc.stderr  # no grid started, no model loaded
    return last


def text_task(tmp_path: Path, tiny_bert: str, train: list[dict], test: list[dict], **fields) -> Path:
    write_csv(tmp_path / "train.csv", train)
    write_csv(tmp_path / "test.csv", test)
    return write_task(tmp_path / "task.yaml", {
        "kind": "text-classification", "data": {"train": "train.csv", "eval": "test.csv"},
        "columns": {"text": "body", "label": "queue"}, "model": tiny_bert, **fields})


def test_a_missing_column_lists_the_columns_there_are(tmp_path, tiny_bert):
    task = text_task(tmp_path, tiny_bert, ticket_rows(150, 1), ticket_rows(30, 2), columns={"text": "message",
                                                                                             "label": "queue"})
    line = fails(task, tmp_path)
    assert str(tmp_path / "train.csv") in line and str(task) in line
    assert "no column 'message'" in line and "(columns: body, queue)" in line


def test_an_evaluation_label_never_seen_in_training(tmp_path, tiny_bert):
    test = ticket_rows(30, 2)
    test[7]["queue"] = "refunds"
    line = fails(text_task(tmp_path, tiny_bert, ticket_rows(150, 1), test), tmp_path)
    assert str(tmp_path / "test.csv") in line and "data.eval" in line
    assert "label 'refunds' in column 'queue' never appears in training (labels: billing, outage, praise)" in line


def test_an_empty_split(tmp_path, tiny_bert):
    task = text_task(tmp_path, tiny_bert, ticket_rows(150, 1), [])  # the header, no rows
    line = fails(task, tmp_path)
    assert f"data.eval: {tmp_path / 'test.csv'} holds no rows: the split is empty (expected at least one row)" in line
    (tmp_path / "test.csv").write_text("")  # not even a header
    assert fails(task, tmp_path) == line


def test_too_few_training_rows_to_carve_a_dev_set(tmp_path, tiny_bert):
    line = fails(text_task(tmp_path, tiny_bert, ticket_rows(60, 1), ticket_rows(30, 2)), tmp_path)
    assert str(tmp_path / "train.csv") in line and "data.train" in line
    assert "60 training rows are too few to carve a dev set of 20" in line and "declare a dev split (data.dev)" in line


def test_a_text_column_that_is_not_text(tmp_path, tiny_bert):
    train = [{"body": i * 7, "queue": QUEUES[i % 3]} for i in range(150)]
    line = fails(text_task(tmp_path, tiny_bert, train, ticket_rows(30, 2)), tmp_path)
    assert str(tmp_path / "train.csv") in line
    assert "column 'body' is int64, expected text (strings)" in line


def test_tags_that_are_not_a_list_per_row(tmp_path):
    rows = ner_rows(150, 1)
    write_jsonl(tmp_path / "train.jsonl", [{"tokens": r["tokens"], "tags": " ".join(r["tags"])} for r in rows])
    write_jsonl(tmp_path / "test.jsonl", ner_rows(30, 2))
    task = write_task(tmp_path / "task.yaml", {"kind": "token-classification", "model": "unused/model",
                                               "data": {"train": "train.jsonl", "eval": "test.jsonl"}})
    line = fails(task, tmp_path)
    assert str(tmp_path / "train.jsonl") in line
    assert "column 'tags' is string, expected a list of tags per row" in line


def image_task(tmp_path: Path) -> Path:
    return write_task(tmp_path / "task.yaml", {"kind": "image-classification", "model": "unused/model",
                                               "data": {"train": "photos/train", "eval": "photos/test"}})


def test_an_image_that_does_not_decode_is_named(tmp_path):
    write_photos(tmp_path / "photos" / "train", 40, 1)
    write_photos(tmp_path / "photos" / "test", 4, 2)
    bad = tmp_path / "photos" / "test" / "green" / "green_002.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4)  # a PNG signature, then garbage
    line = fails(image_task(tmp_path), tmp_path)
    assert f"image {bad} does not decode" in line and "remove or replace it" in line
    assert "data.eval" in line


def test_an_image_folder_with_one_class(tmp_path):
    write_photos(tmp_path / "photos" / "train", 40, 1, {"red": COLOURS["red"]})
    write_photos(tmp_path / "photos" / "test", 4, 2, {"red": COLOURS["red"]})
    line = fails(image_task(tmp_path), tmp_path)
    assert str(tmp_path / "photos" / "train") in line
    assert "column 'label' has 1 class (red); a classifier needs at least 2" in line


def test_an_image_outside_a_class_folder(tmp_path):
    write_photos(tmp_path / "photos" / "train", 40, 1)
    write_photos(tmp_path / "photos" / "test", 4, 2)
    stray = tmp_path / "photos" / "train" / "red" / "old" / "red_000.png"  # nested: its folder is no class
    write_png(stray, COLOURS["red"], 99)
    line = fails(image_task(tmp_path), tmp_path)
    assert f"data.train: {stray} is not in a class folder of {tmp_path / 'photos' / 'train'}" in line
    assert "one subfolder per class" in line


def test_the_same_image_twice(tmp_path):
    write_photos(tmp_path / "photos" / "train", 40, 1)
    write_photos(tmp_path / "photos" / "test", 4, 2)
    original = tmp_path / "photos" / "train" / "blue" / "blue_005.png"
    copy = tmp_path / "photos" / "train" / "blue" / "blue_copy.png"
    copy.write_bytes(original.read_bytes())
    line = fails(image_task(tmp_path), tmp_path)
    assert str(tmp_path / "photos" / "train") in line and "the same image twice" in line
    assert f"{original} duplicates {copy}" in line or f"{copy} duplicates {original}" in line


def test_a_task_file_with_an_unknown_field(tmp_path, tiny_bert):
    task = text_task(tmp_path, tiny_bert, ticket_rows(150, 1), ticket_rows(30, 2), epochs=3)
    line = fails(task, tmp_path, code=2)
    assert str(task) in line and "unknown field(s) epochs" in line and "(valid for kind text-classification: name, kind," in line


def test_a_task_file_with_an_unknown_kind_lists_the_kinds(tmp_path, tiny_bert):
    task = text_task(tmp_path, tiny_bert, ticket_rows(150, 1), ticket_rows(30, 2), kind="text-regression")
    line = fails(task, tmp_path, code=2)
    assert str(task) in line and "unknown kind 'text-regression'" in line
    assert "(valid: text-classification, token-classification, image-classification, causal-lm)" in line


def test_report_history_compare_and_recommend_treat_a_user_task_like_a_shipped_one(user_grid, tmp_path):
    out, proc = user_grid
    assert "## custom / tickets" in (out / "report.md").read_text()  # the run wrote its report, a section per task
    db = out.parent / "history.db"
    hist = run_bench("history", "--db", str(db), "--suite", "custom", "--task", "tickets")
    assert hist.returncode == 0 and "macro_f1" in hist.stdout, hist.stdout + hist.stderr
    cmp = run_bench("compare", "--db", str(db), "--baseline", str(out), "--candidate", str(out), "--suite", "custom")
    assert cmp.returncode == 0, cmp.stdout + cmp.stderr
    rec = run_bench("recommend", "--suite", "custom", "--task", "tickets", "--results", str(out))
    assert rec.returncode == 0 and "Recommendation" in rec.stdout, rec.stdout + rec.stderr
