"""`bench compare`: verdict rules (units) and the real CLI on smoke runs with a planted regression."""
import math

import pytest
from conftest import run_bench
from test_history import record

from bench.core.errors import UsageError
from bench.judge import compare


@pytest.mark.parametrize("metric, base, base_std, cand, cand_std, expected", [
    ("accuracy", 0.90, math.nan, 0.895, math.nan, "unchanged"),  # inside the 0.01 floor
    ("accuracy", 0.90, math.nan, 0.88, math.nan, "regressed"),
    ("accuracy", 0.90, 0.02, 0.88, 0.02, "unchanged"),  # inside 2 x seed std (0.04)
    ("accuracy", 0.90, 0.02, 0.85, 0.02, "regressed"),
    ("accuracy", 0.80, math.nan, 0.85, math.nan, "improved"),
    ("train_loss", 0.30, math.nan, 0.60, math.nan, "regressed"),  # lower is better
    ("peak_train_mb", 1000, math.nan, 1090, math.nan, "unchanged"),  # +9% < 10%
    ("peak_train_mb", 1000, math.nan, 1150, math.nan, "regressed"),
    ("peak_rss_increase_mb", 15, math.nan, 20, math.nan, "unchanged"),  # the 10 MB memory floor
    ("train_examples_per_s", 100, math.nan, 80, math.nan, "unchanged"),  # -20% < 25%
    ("train_examples_per_s", 100, math.nan, 60, math.nan, "regressed"),  # a planted sleep
    ("latency_p50_ms", 10, math.nan, 14, math.nan, "regressed"),
    ("trainable_params", 10, math.nan, 99, math.nan, "n/a"),  # no direction: never gated
])
def test_verdicts(metric, base, base_std, cand, cand_std, expected):
    assert compare.verdict(metric, base, base_std, cand, cand_std, compare.Thresholds())[0] == expected


def test_threshold_overrides_per_metric_and_kind():
    t = compare.parse_thresholds(["peak_train_mb=20%", "speed=0.5", "accuracy=0.05"], k=3)
    assert t.of("peak_train_mb") == ("relative", 0.2) and t.of("latency_p95_ms") == ("relative", 0.5)
    assert t.of("accuracy") == ("absolute", 0.05) and t.k == 3
    assert compare.verdict("peak_train_mb", 1000, math.nan, 1150, math.nan, t)[0] == "unchanged"
    for bad in ["peak_train_mb", "bogus=0.1", "peak_train_mb=lots"]:
        with pytest.raises(UsageError, match="bogus|NAME=VALUE|bad threshold"):
            compare.parse_thresholds([bad])


def test_failed_candidate_is_a_regression_and_missing_is_reported():
    base = [record(method="lora"), record(method="head")]
    cand = [record(method="lora", status="failed")]
    table = compare.compare(base, cand)
    verdicts = dict(zip(table.method, table.verdict))
    assert verdicts == {"lora": "failed", "head": "missing"}
    assert list(compare.regressions(table).method) == ["lora"]


def test_seed_noise_widens_the_task_threshold():
    base = [record(seed=s, accuracy=a) for s, a in enumerate([0.80, 0.86, 0.92])]
    cand = [record(seed=s, accuracy=a) for s, a in enumerate([0.78, 0.84, 0.90])]
    row = compare.compare(base, cand, metrics=["accuracy"]).iloc[0]
    # 2 points worse, past the 0.01 floor, but the seeds spread by 6 points: a t-test on them finds nothing.
    assert row.verdict == "unchanged" and row.allowed == pytest.approx(0.01) and "within noise" in row.note
    assert row.p == pytest.approx(0.35, abs=0.01) and row.basis == "t-test on seeds, variance df=4"
    assert row.baseline_n == 3


def test_fewer_successful_seeds_is_a_regression_and_a_vanished_metric_is_gated():
    base = [record(seed=s, accuracy=0.9, peak_train_mb=500.0) for s in range(3)]
    cand = [record(seed=0, accuracy=0.9), record(seed=1, status="failed"), record(seed=2, status="failed")]
    table = compare.compare(base, cand)
    runs = table[table.metric == "(runs)"].iloc[0]
    assert runs.verdict == "regressed" and "1 of 3 candidate runs succeeded, baseline 3 of 3" in runs.note
    assert table.set_index("metric").loc["peak_train_mb", "verdict"] == "vanished"
    assert set(compare.regressions(table).metric) == {"(runs)", "peak_train_mb"}


def test_a_rerun_counts_once_not_as_another_seed():
    first = dict(record(seed=0, status="failed"), config_id="c")
    again = dict(record(seed=0, accuracy=0.9), config_id="c")
    table = compare.compare([record(seed=0, accuracy=0.9)], [first, again], metrics=["accuracy"])
    assert list(table.verdict) == ["unchanged"] and table.candidate_n.iloc[0] == 1


def test_speed_is_gated_only_on_the_same_hardware():
    def on(host, seconds, busy=None):
        runs = [record(seed=s, train_examples_per_s=100 / seconds + s, contention=busy) for s in range(2)]
        for r in runs:
            r["env"] = dict(r["env"], hostname=host, cpu_model="Xeon")
        return runs
    same = compare.compare(on("a", 1), on("a", 2), metrics=["speed"]).iloc[0]
    other = compare.compare(on("a", 1), on("b", 2), metrics=["speed"]).iloc[0]
    assert same.verdict == "regressed"
    assert other.verdict == "ungated" and "hostname: a vs b" in other.note
    assert compare.regressions(compare.compare(on("a", 1), on("b", 2))).empty
    # A busy machine must not pass for a slow method: a contended run's speed is never gated.
    busy = compare.compare(on("a", 1), on("a", 2, busy=0.4), metrics=["speed"]).iloc[0]
    assert busy.verdict == "ungated" and "other processes took 40% of the CPU" in busy.note
    # With one seed and no history the noise of a timing is unknown: reported, not gated.
    single = compare.compare(on("a", 1)[:1], on("a", 2)[:1], metrics=["speed"]).iloc[0]
    assert single.verdict == "ungated" and "noise is unknown" in single.note


def test_seed_noise_pools_within_invocations_and_counts_a_run_once():
    nights = [record(seed=s, invocation=f"n{n}", accuracy=0.8 + 0.1 * n + 0.01 * s) for n in range(3) for s in range(2)]
    for r in nights:
        r["config_id"] = "c"
    rerun = dict(nights[0], metrics={"accuracy": 0.5})  # seed 0 of night 0 again: replaces it
    assert compare.seed_noise(nights + [rerun])["c", "accuracy"][1] == 3
    variance, df = compare.seed_noise(nights + nights[:2])["c", "accuracy"]  # the first night's runs read twice
    assert df == 3 and variance == pytest.approx(0.01 ** 2 / 2)  # the 10-point moves between nights are not noise
    single = [dict(r, seed=0) for r in nights if r["seed"] == 0]
    assert ("c", "accuracy") not in compare.seed_noise(single + single)  # one seed a night: no estimate, even twice


def test_only_the_declared_metrics_are_gated_by_default_and_worker_start_never():
    base = [record(seed=s, accuracy=0.9, peak_train_mb=500.0, adapter_tensor_mb=0.3, train_loss=0.3,
                   latency_p50_ms=5.0, worker_start_s=0.01) for s in range(2)]
    cand = [record(seed=s, accuracy=0.9, peak_train_mb=500.0, adapter_tensor_mb=0.3, train_loss=0.9,
                   latency_p50_ms=50.0, worker_start_s=9.0) for s in range(2)]
    table = compare.compare(base, cand)
    assert set(table.metric) == {"accuracy", "peak_train_mb", "adapter_tensor_mb"}
    assert compare.exit_code(table) == 0  # train_loss and latency got worse, but are not gated by default
    every_speed = compare.compare(base, cand, metrics=["speed"])
    assert "worker_start_s" not in set(every_speed.metric)  # the fork server's start-up, not the method


def test_a_reconfigured_configuration_is_compared_on_its_headline_and_gated_only_when_asked():
    def runs(config, accuracy):
        out = [dict(record(seed=s, accuracy=accuracy + s / 1000, peak_train_mb=500.0), config_id=config,
                    config={"lr": config}) for s in range(2)]
        for r in out:
            r["info"] = {"task": {"metric": "accuracy"}}
        return out
    table = compare.compare(runs("a", 0.90), runs("b", 0.80))
    row = table.iloc[0]
    assert row.verdict == "reconfigured" and "lr: a -> b" in row.note
    assert "accuracy 0.9005 -> 0.8005 across the reconfiguration" in row.note
    # Every configuration changed: nothing was gated, and the night must not look clean.
    assert compare.unchecked(table) and compare.exit_code(table) == 1
    assert compare.headline(table).startswith("NOT CHECKED: every configuration changed")
    gated = compare.compare(runs("a", 0.90), runs("b", 0.80), gate_reconfigured=True)
    accuracy = gated.set_index("metric").loc["accuracy"]
    assert accuracy.verdict == "regressed" and "across a reconfiguration" in accuracy.note
    # One configuration changed among unchanged ones: reported, and the night is checked on the rest.
    mixed = compare.compare(runs("a", 0.90) + [dict(r, method="head") for r in runs("h", 0.7)],
                            runs("b", 0.80) + [dict(r, method="head") for r in runs("h", 0.7)])
    assert not compare.unchecked(mixed) and compare.exit_code(mixed) == 0


# --- the real CLI on the smoke suite ------------------------------------------------------------------
# `full` is the smoke method whose accuracy depends on its learning rate (1.0 vs chance), so BENCH_FAULT
# lr0:full is a planted accuracy regression. Timings on these shared machines move by more than any
# sane threshold between identical runs, so the identical-rerun check gates on task, memory and size.
STABLE = "task,memory,size"


@pytest.fixture(scope="module")
def three_nights(tmp_path_factory):
    root = tmp_path_factory.mktemp("nightly")
    db = root / "history.db"
    for night, fault in [("n1", ""), ("n2", ""), ("n3", "lr0:full")]:
        run_bench("run", "--suite", "smoke", "--tasks", "sentiment", "--methods", "full", "--out", str(root / night), "--no-report",
                  "--db", str(db), env={"BENCH_FAULT": fault}, check=True)
    return root, db


def test_identical_reruns_are_not_flagged(three_nights):
    root, db = three_nights
    proc = run_bench("compare", "--db", str(db), "--baseline", str(root / "n1"), "--candidate", str(root / "n2"),
                     "--metrics", STABLE)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    # The verdict and its rule first; unchanged rows only with --all.
    assert proc.stdout.startswith("no regression") and "\nrule: " in proc.stdout and " accuracy " not in proc.stdout
    every = run_bench("compare", "--db", str(db), "--baseline", str(root / "n1"), "--candidate", str(root / "n2"),
                      "--metrics", STABLE, "--all")
    assert every.returncode == 0 and " accuracy " in every.stdout and "unchanged" in every.stdout


def test_two_identical_smoke_grids_pass_the_default_gate(three_nights):
    root, db = three_nights
    proc = run_bench("compare", "--db", str(db), "--baseline", str(root / "n1"), "--candidate", str(root / "n2"))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.startswith("no regression")


def test_planted_regression_exits_1_against_the_previous_night(three_nights):
    root, db = three_nights
    proc = run_bench("compare", "--db", str(db), "--baseline", "previous", "--metrics", STABLE)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "REGRESSION" in proc.stdout and "sentiment/full accuracy" in proc.stdout
    assert "previous = " in proc.stdout  # the second night, found in the history
    md = run_bench("compare", "--db", str(db), "--baseline", str(root / "n2"), "--candidate", "latest",
                   "--metrics", "accuracy", "--markdown")
    assert md.returncode == 1
    assert "| sentiment | full | quick | accuracy |" in md.stdout and "❌ regressed" in md.stdout


def test_history_cli_prints_the_series(three_nights):
    _, db = three_nights
    proc = run_bench("history", "--db", str(db), "--suite", "smoke", "--method", "full")
    assert proc.returncode == 0, proc.stderr
    lines = [line for line in proc.stdout.splitlines() if " full " in line]
    assert len(lines) == 3 and "REGRESSED" in lines[-1] and "REGRESSED" not in lines[0]


@pytest.mark.parametrize("args, message", [
    (["--baseline", "nonsense"], "unknown reference 'nonsense'"),
    (["--baseline", "latest", "--threshold", "bogus=1"], "bogus"),
    (["--baseline", "latest", "--suite", "nlp"], "holds no runs of suite nlp"),
])
def test_usage_errors_exit_2(three_nights, args, message):
    _, db = three_nights
    proc = run_bench("compare", "--db", str(db), *args)
    assert proc.returncode == 2 and message in proc.stderr, proc.stderr


def test_nothing_comparable_is_exit_3_only_in_a_young_history(three_nights, tmp_path):
    root, db = three_nights
    # Three nights of `full` in the history: comparing them with nothing in common is a broken gate (exit 1).
    proc = run_bench("compare", "--db", str(db), "--baseline", "previous", "--methods", "head")
    assert proc.returncode == 1 and "the history holds 3 invocations" in proc.stderr, proc.stderr
    # A history with one night: nothing to compare yet (exit 3, the only code the nightly job lets pass).
    young = tmp_path / "young.db"
    from bench.results import history
    from bench.results.store import ResultStore
    history.record_runs(young, ResultStore(root / "n1").records())
    proc = run_bench("compare", "--db", str(young), "--baseline", str(root / "n2"), "--candidate", "latest",
                     "--methods", "head")
    assert proc.returncode == 3 and "nothing to compare yet" in proc.stderr, proc.stderr
    first_night = run_bench("compare", "--db", str(young), "--baseline", "previous", "--candidate", "latest")
    assert first_night.returncode == 3, first_night.stderr
    # An emptied history is a broken gate, not a first night: a usage error (2), which the nightly job fails on.
    empty = tmp_path / "empty.db"
    history.record_runs(empty, [])
    for db_path in (empty, tmp_path / "never-written.db"):
        proc = run_bench("compare", "--db", str(db_path), "--baseline", "previous", "--candidate", "latest")
        assert proc.returncode == 2 and ("holds no runs" in proc.stderr or "no history database" in proc.stderr), \
            proc.stderr


def test_mfu_divided_by_another_peak_is_ungated_and_speed_still_gated():
    def run(mfu, peak, ex_per_s=100.0):  # two seeds: speed is gated only with a noise estimate
        return [record(seed=s, train_mfu=mfu * (1 + s / 100), peak_flops_per_s=peak,
                       train_examples_per_s=ex_per_s * (1 + s / 100)) for s in range(2)]
    redefined = compare.compare(run(0.5, 223e9), run(0.25, 453e9), metrics=["speed"]).set_index("metric")
    assert redefined.verdict["train_mfu"] == "ungated" and "peak_flops_per_s 223-453 GFLOP/s" in redefined.note["train_mfu"]
    assert redefined.verdict["train_examples_per_s"] == "unchanged"
    slower = compare.compare(run(0.5, 450e9), run(0.25, 455e9, 50.0), metrics=["speed"]).set_index("metric")
    assert (slower.verdict == "regressed").all()
    recounted = compare.compare([record(train_flops_per_s=3e11, train_flops_per_example=2535e6)],
                                [record(train_flops_per_s=1.5e11, train_flops_per_example=1250e6)], metrics=["speed"])
    assert list(recounted.verdict) == ["ungated"] and "1,250-2,535 MFLOP" in recounted.note.iloc[0]
