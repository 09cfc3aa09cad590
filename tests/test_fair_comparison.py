"""A fair comparison: the tuning protocol, intervals, paired ties, and `bench recommend` following its rule."""
import json
import shlex

import numpy as np
import pytest
from conftest import run_bench
from test_history import record

from bench.judge import recommend as rec
from bench.judge import stats, ties, tuning
from bench.results import predictions


def saved_run(folder, method, correct, seed=0, ids=None, **metrics):
    """A record whose predictions file marks `correct` (a 0/1 array) per example, as a worker saves it."""
    r = record(method=method, seed=seed, accuracy=float(np.mean(correct)), **metrics)
    r["source"] = str(folder)
    r["info"]["predictions"] = predictions.relative_path(r["run_id"])
    gold = [1] * len(correct)
    predictions.save(folder / r["info"]["predictions"], list(range(len(correct))) if ids is None else list(ids),
                     {"gold": gold, "pred": [int(c) for c in correct]})
    return r


def test_grid_is_log_spaced_and_the_same_size_for_every_method():
    for centre in (5e-5, 2e-3, 5e-2):
        g = tuning.grid(centre)
        assert len(g) == 5 and g[2] == pytest.approx(centre) and g[-1] / g[0] == pytest.approx(100, rel=0.01)
        assert np.allclose(np.diff(np.log(g)), np.log(10) / 2, rtol=0.01)
    assert tuning.choose({1e-3: [0.8], 1e-2: [0.85, 0.83], 1e-1: [float("nan")]}) == 1e-2


def test_a_tuned_file_records_no_folder_of_the_machine_that_made_it(tmp_path):
    """Folders inside the repository are recorded relative to it, those outside are left out; the committed
    tuned files hold no absolute path."""
    argv = ["tune", "--suite", "nlp", "--out", str(tuning.PROJECT / "runs" / "tune-x"), "--db", str(tmp_path / "h.db"),
            f"--data-dir={tmp_path}", "--points", "3"]
    assert tuning.command_line(argv) == "python -m bench tune --suite nlp --out runs/tune-x --points 3"
    assert tuning.command_line(["tune", "--out", "runs/tune-y"], cwd=tuning.PROJECT).endswith("--out runs/tune-y")
    files = sorted(tuning.DEFAULT_DIR.glob("*.yaml"))
    assert files
    for path in files:
        task, budget = path.name.split(".")[:2]
        for entry in tuning.load(task, budget, tuning.DEFAULT_DIR)["methods"].values():
            assert not [a for a in shlex.split(entry["command"]) if a.startswith("/")], (path, entry["command"])


def test_entity_f1_by_sentence_equals_seqeval():
    from seqeval.metrics import f1_score
    gold = [["B-PER", "I-PER", "O"], ["B-LOC", "O"], ["O", "B-ORG"]]
    pred = [["B-PER", "I-PER", "O"], ["B-PER", "O"], ["O", "B-ORG"]]
    per_sentence = stats.example_stats("entity_f1", gold, pred)
    assert per_sentence.tolist() == [[1, 1, 1], [0, 1, 1], [1, 1, 1]]
    assert stats.value("entity_f1", per_sentence.sum(0)) == pytest.approx(f1_score(gold, pred))
    low, high = stats.bootstrap_ci("entity_f1", per_sentence)
    assert 0 <= low <= f1_score(gold, pred) <= high <= 1


def test_identical_predictions_are_tied_and_a_planted_gap_is_not(tmp_path):
    rng = np.random.default_rng(0)
    base = (rng.random(1000) < 0.80).astype(int)
    same = saved_run(tmp_path, "lora", base)
    twin = saved_run(tmp_path, "full", base.copy())
    better = base.copy()
    better[np.flatnonzero(base == 0)[:50]] = 1  # 5 points more accuracy on the same examples
    gap = saved_run(tmp_path, "dora", better)
    tie = ties.compare("accuracy", [same], [twin])
    assert tie.basis == "paired bootstrap" and tie.tied and tie.diff == 0
    assert tie.note == ties.ONE_SEED and "seed variance unknown" in tie.describe("accuracy")
    far = ties.compare("accuracy", [same], [gap])
    assert far.basis == "paired bootstrap" and not far.tied
    assert far.diff == pytest.approx(-0.05) and far.high < 0
    low, high = stats.bootstrap_ci("accuracy", stats.example_stats("accuracy", [1] * 1000, list(base)))
    # The normal approximation of a proportion's 95% interval: ±1.96·sqrt(p(1-p)/n), ±2.5 points here.
    p, n = base.mean(), len(base)
    assert high - low == pytest.approx(2 * 1.96 * np.sqrt(p * (1 - p) / n), rel=0.1)
    assert (low + high) / 2 == pytest.approx(p, abs=0.005)


def test_recommend_picks_lora_over_full_when_tied_on_accuracy_and_lighter(tmp_path):
    rng = np.random.default_rng(1)
    base = (rng.random(872) < 0.84).astype(int)
    flipped = base.copy()
    flipped[np.flatnonzero(base == 1)[:1]] = 0  # full 0.1 point better: not a real difference
    full = saved_run(tmp_path, "full", base, peak_train_mb=1400.0, train_examples_per_s=90.0)
    lora = saved_run(tmp_path, "lora", flipped, peak_train_mb=1100.0, train_examples_per_s=200.0)
    result = rec.recommend([full, lora], "smoke", "sentiment", [], "metric")
    assert full["metrics"]["accuracy"] > lora["metrics"]["accuracy"]  # the raw maximum is full's
    assert result.top == "lora"
    why = result.why
    assert "lora ties on accuracy within noise" in why and "full" in why and "peak memory decided" in why
    assert "1.07 GB vs 1.37 GB for full" in why
    assert "it accepts accuracy 0.8" in why and "for full, the best point estimate (a gap of 0.001147" in why


def test_recommend_uses_the_newest_invocation_not_the_whole_history(tmp_path):
    old = [record(method="full", invocation="old", finished="2026-01-01T00:00:00+00:00", accuracy=0.99,
                  peak_train_mb=100.0),
           record(method="lora", invocation="old", finished="2026-01-01T00:00:00+00:00", accuracy=0.10,
                  peak_train_mb=100.0)]
    new = [record(method="full", invocation="new", finished="2026-02-01T00:00:00+00:00", accuracy=0.50,
                  peak_train_mb=100.0),
           record(method="lora", invocation="new", finished="2026-02-01T00:00:00+00:00", accuracy=0.90,
                  peak_train_mb=100.0)]
    result = rec.recommend(old + new, "smoke", "sentiment", [], "metric")
    assert result.top == "lora" and "invocation new" in result.title
    assert rec.recommend(old + new, "smoke", "sentiment", [], "metric", commit="abc").title.count("commit abc")


def test_tuning_never_opens_the_evaluation_split(tmp_path, data_dir):
    """SST-2's evaluation split is a file that cannot be read: `bench tune` succeeds on the dev set carved
    from train and writes the rate; `bench run` then uses the tuned rate and fails on that split."""
    import pyarrow.parquet as pq
    data = tmp_path / "data" / "sst2"
    data.mkdir(parents=True)
    pq.write_table(pq.read_table(data_dir / "sst2" / "train.parquet").slice(0, 400), data / "train.parquet")
    (data / "validation.parquet").write_bytes(b"not parquet: touching this split is an error")
    tuned = tmp_path / "tuned"
    env = {"BENCH_TUNED_DIR": str(tuned)}
    common = ["--suite", "nlp", "--tasks", "sst2", "--methods", "head", "--budget", "smoke",
              "--data-dir", str(tmp_path / "data")]
    out = run_bench("tune", *common, "--points", "2", "--out", str(tmp_path / "tune"), env=env)
    assert out.returncode == 0, out.stderr + out.stdout
    rows = [json.loads(line) for line in (tmp_path / "tune" / "results.jsonl").read_text().splitlines()]
    assert all(r["status"] == "ok" and "dev_accuracy" in r["metrics"] for r in rows)
    assert all("accuracy" not in r["metrics"] and r["info"]["scored_on"] == "64 examples carved from train (never trained on)" for r in rows)
    chosen = tuning.load("sst2", "smoke", tuned)["methods"]["head"]
    # stage 1 (2 points; its best is at an edge), 1 or 2 past that edge, then 2 in stage 2: every one on dev
    tried = [*chosen["grid"], *chosen["edge_extension"]["grid"], *chosen["stage2"]["grid"]]
    assert len(rows) == len(tried) and len(chosen["dev_scores"]) == 2 and len(chosen["stage2"]["grid"]) == 2
    assert chosen["lr"] in tried and chosen["seeds"] == [0]
    # The folders were outside the repository: the recorded command leaves them out.
    assert chosen["command"] == "python -m bench tune --suite nlp --tasks sst2 --methods head --budget smoke --points 2"
    run = run_bench("run", *common, "--out", str(tmp_path / "run"), env=env)
    row = json.loads((tmp_path / "run" / "results.jsonl").read_text().splitlines()[-1])
    assert row["status"] == "failed" and "validation.parquet" in row["error"]
    assert row["info"]["lr_source"] == "tuned" and row["metrics"].get("lr", chosen["lr"]) == chosen["lr"]


def test_compare_calls_a_change_inside_the_paired_interval_a_tie(tmp_path):
    from bench.judge import compare
    rng = np.random.default_rng(2)
    base = (rng.random(872) < 0.85).astype(int)
    worse = base.copy()
    worse[np.flatnonzero(base == 1)[:3]] = 0  # -0.34 points: past a 0.1-point threshold, inside the noise
    b = saved_run(tmp_path, "lora", base)
    c = saved_run(tmp_path, "lora", worse)
    for r in (b, c):
        r["info"]["task"] = {"metric": "accuracy"}
    c["invocation"] = "inv-2"
    table = compare.compare([b], [c], compare.parse_thresholds(["accuracy=0.001"]), ["accuracy"])
    row = table[table.metric == "accuracy"].iloc[0]
    assert row.verdict == "unchanged" and row.note.startswith("within noise (p=") and "paired bootstrap" in row.note
    far = worse.copy()
    far[np.flatnonzero(worse == 1)[:60]] = 0  # 7 points worse: a real regression
    c2 = saved_run(tmp_path, "lora", far)
    c2["info"]["task"], c2["invocation"] = {"metric": "accuracy"}, "inv-3"
    row = compare.compare([b], [c2], compare.parse_thresholds(["accuracy=0.001"]), ["accuracy"]).iloc[0]
    assert row.verdict == "regressed" and "within noise" not in (row.note or "")


def test_early_stopping_keeps_the_best_dev_state_and_changes_the_config(tmp_path):
    args = ["--suite", "smoke", "--tasks", "sentiment", "--methods", "full"]
    out = run_bench("run", *args, "--early-stopping", "1", "--eval-every", "4", "--out", str(tmp_path / "es"),
                    "--no-report")
    assert out.returncode == 0, out.stderr
    row = json.loads((tmp_path / "es" / "results.jsonl").read_text().splitlines()[-1])
    es = row["info"]["early_stopping"]
    assert es["patience"] == 1 and es["eval_every"] == 4 and [s for s, _ in es["dev_curve"]][:2] == [4, 8]
    assert es["best_step"] == max(es["dev_curve"], key=lambda p: p[1])[0] <= es["stopped_at"]
    # patience 1: the first score without a gain stops it, one evaluation after the best; every score before the
    # last one was a gain; a run that trained to its end ended on its best
    scores = [s for _, s in es["dev_curve"]]
    assert all(a < b for a, b in zip(scores[:-1], scores[1:-1]))
    assert es["stopped_at"] - es["best_step"] in (0, es["patience"] * es["eval_every"])
    assert row["config"]["early_stopping"] == {"patience": 1, "eval_every": 4}
    bad = run_bench("run", *args, "--early-stopping", "0", "--out", str(tmp_path / "bad"))
    assert bad.returncode == 2 and "bad --early-stopping 0" in bad.stderr


def _seeds_of(folder, method, accuracies, n=1000):
    """One saved run per seed; seed i gets a different random set of correct examples at its accuracy."""
    rng = np.random.default_rng(len(method))
    return [saved_run(folder, method, (rng.random(n) < acc).astype(int), seed=i) for i, acc in enumerate(accuracies)]


def test_several_seeds_are_resampled_too_so_the_interval_carries_the_seed_variance(tmp_path):
    steady = _seeds_of(tmp_path, "full", [0.80, 0.80, 0.80])
    shaky = _seeds_of(tmp_path, "lora", [0.72, 0.80, 0.88])  # the same mean, a seed-to-seed sd of 8 points
    c = ties.compare("accuracy", shaky, steady)
    assert c.basis == "hierarchical bootstrap" and c.tied and c.note == ""
    # Averaging the seeds per example first (the one-level bootstrap) sees only the test set's noise: about
    # +-2 points here. The seeds' own spread (sd 0.08, three seeds) must widen it well beyond that.
    width = c.high - c.low
    one_level = stats.paired_difference("accuracy", np.mean([ties.evaluated(shaky, "accuracy").stats], axis=1)[0],
                                        np.mean([ties.evaluated(steady, "accuracy").stats], axis=1)[0])
    assert width > 2 * (one_level[2] - one_level[1])
    low, high = ties.method_interval("accuracy", shaky)
    assert high - low > 0.08 and low < 0.80 < high


def test_runs_on_different_examples_are_never_paired(tmp_path):
    rng = np.random.default_rng(0)
    a = saved_run(tmp_path, "lora", (rng.random(500) < 0.8).astype(int))
    b = saved_run(tmp_path, "full", (rng.random(500) < 0.8).astype(int), ids=range(1000, 1500))  # same count
    c = ties.compare("accuracy", [a], [b])
    assert c.basis == "none" and not c.tied and "different examples" in c.note and "500 positions" in c.note
    assert "no interval: not paired: different examples" in c.describe("accuracy")


def test_without_predictions_the_seed_spread_uses_students_t_for_the_number_of_seeds():
    from test_history import record as plain
    for n, factor in ((2, 12.706), (3, 4.303)):
        a = [plain(method="lora", seed=s, accuracy=0.80 + 0.01 * s) for s in range(n)]
        b = [plain(method="full", seed=s, accuracy=0.82 + 0.02 * s) for s in range(n)]
        c = ties.compare("accuracy", a, b)
        va, vb = np.var([r["metrics"]["accuracy"] for r in a], ddof=1), np.var([r["metrics"]["accuracy"] for r in b], ddof=1)
        se = np.sqrt(va / n + vb / n)
        assert c.basis == "seed spread" and (c.high - c.low) / 2 == pytest.approx(factor * se, rel=1e-3)


def test_when_everything_after_the_priority_ties_the_better_accuracy_decides_not_adapter_size(tmp_path):
    """The nlp quick grid's case: LoKr (0.8085) tied with LoRA (0.8268) on accuracy, memory and speed within
    noise; 9 kB less adapter decided for LoKr. Now the priority metric's point estimate decides."""
    rng = np.random.default_rng(3)
    lora_correct = (rng.random(872) < 0.8268).astype(int)
    lokr_correct = lora_correct.copy()
    lokr_correct[np.flatnonzero(lora_correct == 1)[:60]] = 0  # 60 sentences lost, 46 gained: 1.6 points lower
    lokr_correct[np.flatnonzero(lora_correct == 0)[:46]] = 1
    lora = saved_run(tmp_path, "lora", lora_correct, peak_train_mb=1000.0, train_examples_per_s=180.0,
                     adapter_tensor_mb=0.300, trainable_pct=0.4)
    lokr = saved_run(tmp_path, "lokr", lokr_correct, peak_train_mb=1001.0, train_examples_per_s=181.0,
                     adapter_tensor_mb=0.291, trainable_pct=0.3)
    assert ties.compare("accuracy", [lokr], [lora]).tied
    result = rec.recommend([lora, lokr], "smoke", "sentiment", [], "metric")
    assert result.top == "lora" and list(result.table.method) == ["lora", "lokr"]
    assert "best point estimate of accuracy decided" in result.why
    assert any("one seed per method" in n for n in result.notes)
    by_size = rec.recommend([lora, lokr], "smoke", "sentiment", [], "size")
    assert by_size.top == "lokr"  # adapter size decides only when asked for
    assert "best point estimate of adapter size decided" in by_size.why
    assert "trades away accuracy (0.828 vs 0.844 for lora)" in by_size.why
