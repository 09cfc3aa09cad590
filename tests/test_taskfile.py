"""Task files read without a model: the shipped tasks as files, field validation, label handling, data sources."""
from __future__ import annotations

import json
import sys

import pytest

from bench.core.errors import DataError, UsageError
from suites import taskfile


def write(folder, name: str, text: str):
    path = folder / name
    path.write_text(text)
    return path


def csv_task(tmp_path, labels_train: str, labels_test: str, extra: str = ""):
    write(tmp_path, "train.csv", "text,label\n" + "".join(f"row {i},{y}\n" for i, y in enumerate(labels_train.split())))
    write(tmp_path, "test.csv", "text,label\n" + "".join(f"row {i},{y}\n" for i, y in enumerate(labels_test.split())))
    return taskfile.load(write(tmp_path, "t.yaml", "kind: text-classification\ndata: {train: train.csv, eval: "
                                                  "test.csv}\nmodel: m\n" + extra))


def test_the_shipped_tasks_are_files_and_reading_them_imports_no_torch():
    import subprocess
    code = ("import sys, suites; names = {s: [t.name for t in ts] for s, ts in suites.SUITES.items()}; "
            "print(names); assert 'torch' not in sys.modules, 'torch imported'")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "'nlp': ['sst2', 'conll2003']" in out and "'vision': ['cifar10', 'imagenette']" in out
    from suites import SUITES
    assert all(t.source.endswith(f"suites/tasks/{t.name}.yaml") and t.digest for t in SUITES["nlp"] + SUITES["vision"])


def test_a_caveat_edit_keeps_the_digest_and_any_other_edit_changes_it(tmp_path):
    base = "kind: text-classification\ndata: {train: a.csv, eval: b.csv}\nmodel: m\n"
    first = taskfile.load(write(tmp_path, "a.yaml", base + "note: one\n")).digest
    assert taskfile.load(write(tmp_path, "a.yaml", base + "note: two\ndescription: x\n")).digest == first
    assert taskfile.load(write(tmp_path, "a.yaml", base + "metric: macro_f1\n")).digest != first


@pytest.mark.parametrize("extra, expected", [
    ("lr_overrides: {lora: fast}\n", "lr_overrides must map method names to rates > 0"),
    ("budgets: {quick: 5}\n", "budgets.quick must map fields to values"),
    ("budgets: {quick: {epochs: many}}\n", "budgets.quick.epochs must be a number > 0"),
    ("budgets: {quick: {batch_size: 2.5}}\n", "budgets.quick.batch_size must be a whole number > 0"),
    ("metric: entity_f1\n", "metric 'entity_f1' does not fit kind text-classification (valid: accuracy, macro_f1)"),
    ("columns: {tokens: words}\n", "unknown column role(s) tokens for kind text-classification"),
])
def test_bad_field_values_are_one_line_usage_errors(tmp_path, extra, expected):
    path = write(tmp_path, "t.yaml", "kind: text-classification\ndata: {train: a.csv, eval: b.csv}\nmodel: m\n" + extra)
    with pytest.raises(UsageError, match=None) as e:
        taskfile.load(path)
    assert expected in str(e.value) and str(path) in str(e.value) and "\n" not in str(e.value)


def test_true_false_labels_are_two_classes(tmp_path):
    rows = [{"text": f"r{i}", "label": i % 3 == 0} for i in range(30)]
    for name in ("train", "test"):
        write(tmp_path, f"{name}.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
    task = taskfile.load(write(tmp_path, "t.yaml", "kind: text-classification\ndata: {train: train.jsonl, eval: "
                                                   "test.jsonl}\nmodel: m\ndev_examples: 5\n"))
    ds, names = task.labelled(task.raw_splits(None, ["train", "eval"]), None)
    assert names == ["False", "True"]
    assert ds["eval"]["label"] == [int(r["label"]) for r in rows]


def test_string_labels_are_indexed_by_sorted_training_values_and_an_unseen_one_is_named(tmp_path):
    task = csv_task(tmp_path, "b a c a", "a c")
    ds, names = task.labelled(task.raw_splits(None, ["train", "eval"]), None)
    assert names == ["a", "b", "c"] and ds["train"]["label"] == [1, 0, 2, 0] and ds["eval"]["label"] == [0, 2]
    task = csv_task(tmp_path, "b a c a", "a zz")
    with pytest.raises(DataError, match=r"test.csv .*label 'zz' in column 'label' never appears in training"):
        task.labelled(task.raw_splits(None, ["train", "eval"]), None)


def test_withheld_labels_minus_one_are_refused(tmp_path):
    import datasets
    features = datasets.Features({"text": datasets.Value("string"), "label": datasets.ClassLabel(names=["n", "p"])})
    for name, labels in (("train", [0, 1, 0, 1]), ("test", [-1, -1, -1, -1])):
        datasets.Dataset.from_dict({"text": list("abcd"), "label": labels}, features=features).to_parquet(
            tmp_path / f"{name}.parquet")
    task = taskfile.load(write(tmp_path, "t.yaml", "kind: text-classification\ndata: {train: train.parquet, "
                                                   "eval: test.parquet}\nmodel: m\n"))
    with pytest.raises(DataError, match="holds -1 \\(labels withheld"):
        task.labelled(task.raw_splits(None, ["train", "eval"]), None)


def test_a_file_name_with_glob_characters_and_a_readme_beside_the_data_are_read(tmp_path):
    from suites import sources
    odd = write(tmp_path, "t[1].csv", "text,label\nx,a\n")
    assert sources.files_of(str(odd)) == [odd]
    folder = tmp_path / "split"
    folder.mkdir()
    write(folder, "part-0.csv", "text,label\nx,a\n")
    write(folder, "README.md", "# notes\n")
    assert sources.builder_of(str(folder), "train") == "csv"
    assert [p.name for p in sources.files_of(str(folder))] == ["part-0.csv"]


def test_derived_budgets_grow_epochs_on_small_data_and_cap_them():
    from suites.base import default_budgets
    small, large = default_budgets("text-classification", 300), default_budgets("text-classification", 100_000)
    assert small["quick"].train_examples == 300 and small["quick"].steps(300) >= 100
    assert large["quick"].train_examples == 4000 and large["quick"].epochs == 1
    assert default_budgets("text-classification", 10)["quick"].epochs == 10  # capped


def test_a_suite_file_lists_task_files_and_names_the_suite(tmp_path):
    from suites import find_tasks, get_suite
    write(tmp_path, "a.yaml", "kind: text-classification\ndata: {train: a.csv, eval: b.csv}\nmodel: m\n")
    write(tmp_path, "b.yaml", "name: bee\nkind: token-classification\ndata: {train: a.jsonl, eval: b.jsonl}\nmodel: m\n")
    suite = write(tmp_path, "support.yaml", "description: ours\ntasks: [a.yaml, b.yaml]\n")
    tasks = get_suite(str(suite))
    assert [(t.name, t.suite, t.kind) for t in tasks] == [("a", "support", "text-classification"),
                                                          ("bee", "support", "token-classification")]
    assert [t.name for t in find_tasks(["bee"], str(suite))] == ["bee"]
    mixed = find_tasks([str(tmp_path / "a.yaml"), "sst2"], None)
    assert [(t.name, t.suite) for t in mixed] == [("a", "custom"), ("sst2", "nlp")]
    write(tmp_path, "bad.yaml", "tasks: [nope]\n")
    with pytest.raises(UsageError, match="unknown task 'nope'"):
        get_suite(str(tmp_path / "bad.yaml"))


def test_bench_list_shows_task_files_given_on_the_command_line(tmp_path, capsys):
    from bench.cli import main
    write(tmp_path, "tickets.yaml", "kind: text-classification\ndata: {train: a.csv, eval: b.csv}\nmodel: m\n"
                                    "metric: macro_f1\n")
    assert main(["list", "--tasks", str(tmp_path / "tickets.yaml")]) == 0
    line = next(x for x in capsys.readouterr().out.splitlines() if " tickets " in x)
    assert "custom" in line and "metric=macro_f1" in line and "derived from the data's size" in line
