"""`bench recommend`: units, constraints, ranking, the Pareto set, the message when nothing fits."""
import json

import pytest
from conftest import run_bench
from test_history import record

from bench.core.errors import UsageError
from bench.core.units import format_mb, parse_fraction, parse_number, parse_percent, parse_size_mb
from bench.judge import recommend as rec


@pytest.mark.parametrize("text, mb", [("2GB", 2048), ("2 GiB", 2048), ("512MB", 512), ("800", 800),
                                      ("1.5g", 1536), ("1024KB", 1), ("0.5TB", 524288)])
def test_sizes_parse_to_mb(text, mb):
    assert parse_size_mb(text) == pytest.approx(mb)


def test_sizes_print_with_their_significant_digits():
    assert [format_mb(v) for v in (0.294, 8.55, 737.4, 1536)] == ["0.294 MB", "8.55 MB", "737 MB", "1.50 GB"]


def test_percentages_fractions_numbers_parse():
    assert parse_percent("1%") == 1.0 and parse_percent("0.5") == 0.5
    assert parse_fraction("20%") == pytest.approx(0.2) and parse_fraction("0.2") == 0.2
    assert parse_number("85%") == pytest.approx(0.85) and parse_number("1e-3") == 0.001


@pytest.mark.parametrize("func, text", [(parse_size_mb, "2XB"), (parse_size_mb, "-1GB"), (parse_size_mb, "GB"),
                                        (parse_percent, "150%"), (parse_percent, "1GB"), (parse_fraction, "x")])
def test_bad_units_name_the_value(func, text):
    with pytest.raises(UsageError, match=repr(text).replace("-", r"\-")):
        func(text)


# Three methods with a clear trade-off (numbers of the shape real runs give).
FIGURES = {
    "full": dict(accuracy=0.90, peak_train_mb=1600.0, train_examples_per_s=40.0, trainable_pct=100.0),
    "lora": dict(accuracy=0.88, peak_train_mb=1200.0, train_examples_per_s=50.0, trainable_pct=0.8),
    "head": dict(accuracy=0.80, peak_train_mb=700.0, train_examples_per_s=110.0, trainable_pct=0.01),
    "bitfit": dict(accuracy=0.51, peak_train_mb=650.0, train_examples_per_s=120.0, trainable_pct=0.1),
}
SEEDS = [0, 1]


def records():
    return [record(method=m, seed=s, majority_rate=0.5, **{k: v + s * 1e-3 for k, v in f.items()})
            for m, f in FIGURES.items() for s in SEEDS]


def run(constraints, priority="metric"):
    return rec.recommend(records(), "smoke", "sentiment", constraints, priority)


def test_ranking_respects_every_constraint():
    constraints = [rec.Constraint(rec.MEMORY, parse_size_mb("1.5GB"), True),
                   rec.Constraint("trainable_pct", parse_percent("1%"), True),
                   rec.Constraint(rec.HEADLINE, 0.75, False)]
    result = run(constraints)
    ranked = result.table[result.table["rank"].notna()]
    assert list(ranked.method) == ["lora", "head"] and result.top == "lora"
    assert (ranked.peak_train_mb <= 1536).all() and (ranked.trainable_pct <= 1).all() and (ranked.accuracy >= 0.75).all()
    reasons = dict(zip(result.table.method, result.table.reason))
    assert "peak memory <= 1.50 GB" in reasons["full"] and "trainable share <= 1%" in reasons["full"]
    assert "accuracy >= 0.75" in reasons["bitfit"]
    assert "lora has the best accuracy" in result.why and "trades away" in result.why and "head" in result.why


def test_priorities_pareto_and_near_chance():
    result = run([], priority="memory")
    table = result.table.set_index("method")
    # bitfit uses the least memory but learned nothing: it ranks last and is not on the Pareto front.
    assert result.top == "head" and table.loc["bitfit", "rank"] == 4 and table.loc["bitfit", "near_chance"]
    assert set(table.index[table.pareto]) == {"full", "lora", "head"}
    assert run([], priority="speed").top == "head" and run([]).top == "full"
    with pytest.raises(UsageError, match="'cheap'"):
        run([], priority="cheap")


def test_nothing_satisfies_gives_a_clear_message():
    result = run([rec.Constraint(rec.MEMORY, 100.0, True), rec.Constraint(rec.HEADLINE, 0.8, False)])
    assert result.top is None
    text = rec.format_result(result, "metric")
    assert "no method satisfies all the constraints" in text
    assert "peak memory <= 100 MB: 0 of 4 methods pass (best: bitfit at 650 MB)" in text
    assert "Recommendation" not in text


def test_results_folders_are_ranked_whole_and_the_history_by_its_newest_invocation():
    # Two results folders (each one invocation): lora and head in one, full in the other.
    recs = [record(method=m, seed=0, invocation="a" if m != "full" else "b",
                   finished="2026-01-01T00:00:00+00:00" if m != "full" else "2026-01-02T00:00:00+00:00",
                   majority_rate=0.5, **f) for m, f in FIGURES.items() if m != "bitfit"]
    whole = rec.recommend(recs, "smoke", "sentiment", [], folders=True)
    assert set(whole.table.method) == {"full", "lora", "head"} and whole.top == "full"
    assert set(rec.recommend(recs, "smoke", "sentiment", []).table.method) == {"full"}


@pytest.fixture(scope="module")
def smoke_results(tmp_path_factory):
    out = tmp_path_factory.mktemp("rec") / "night"
    run_bench("run", "--suite", "smoke", "--tasks", "sentiment", "--methods", "head,full", "--out", str(out), "--no-report", check=True)
    return out


def test_cli_on_a_real_smoke_history(smoke_results):
    db = smoke_results.parent / "history.db"  # the default: beside the results folder
    assert db.is_file()
    proc = run_bench("recommend", "--suite", "smoke", "--db", str(db), "--max-trainable", "50%", "--max-memory", "4GB")
    assert proc.returncode == 0, proc.stderr
    assert "Recommendation (priority metric): head" in proc.stdout and "fails trainable share <= 50%" in proc.stdout
    best = run_bench("recommend", "--suite", "smoke", "--results", str(smoke_results), "--min-metric", "accuracy=0.9")
    assert best.returncode == 0 and "Recommendation (priority metric): full" in best.stdout, best.stdout
    rows = [json.loads(line) for line in (smoke_results / "results.jsonl").read_text().splitlines()]
    assert {r["method"] for r in rows} == {"head", "full"}


@pytest.mark.parametrize("args, code, message", [
    (["--max-memory", "1MB"], 1, "no method satisfies all the constraints"),
    (["--max-memory", "2XB"], 2, "bad size '2XB'"),
    (["--priority", "cheap"], 2, "unknown priority 'cheap'"),
    (["--task", "nope"], 2, "no successful runs of smoke/nope"),
])
def test_cli_messages_and_exit_codes(smoke_results, args, code, message):
    proc = run_bench("recommend", "--suite", "smoke", "--results", str(smoke_results), *args)
    assert proc.returncode == code, proc.stdout + proc.stderr
    assert message in proc.stdout + proc.stderr


def test_commit_and_since_take_budget_model_and_device_from_the_runs_they_select():
    """The history's newest run is a `smoke` run of another commit; `--commit abc123` must rank abc123's quick runs
    (and --since likewise), not look for smoke runs of abc123."""
    old = [dict(r, finished_at="2026-01-01T00:00:00+00:00") for r in records()]  # commit abc123, budget quick
    newer = [dict(r, run_id=f"{r['run_id']}-new", invocation="inv-2", budget="smoke",
                  finished_at="2026-02-01T00:00:00+00:00", env={**r["env"], "git_commit": "def456"})
             for r in records()]
    history = old + newer
    result = rec.recommend(history, "smoke", "sentiment", [], commit="abc123")
    assert "budget quick" in result.title and f"{len(old)} runs" in result.title and result.top == "full"
    result = rec.recommend(history, "smoke", "sentiment", [], since="2026-01-01")  # both: the newest's condition
    assert "budget smoke" in result.title and f"{len(newer)} runs" in result.title
    result = rec.recommend(history, "smoke", "sentiment", [], budget="quick")  # the newest quick invocation
    assert "budget quick" in result.title and f"{len(old)} runs" in result.title
    with pytest.raises(UsageError, match="commit abc123"):  # a given condition the commit lacks: said as such
        rec.recommend(history, "smoke", "sentiment", [], commit="abc123", budget="smoke")


# A causal-LM task's figures (suites/causal_lm.py, bench/meters/generation.py): forgetting in nats per token, the
# unmerged adapter's TTFT and TPOT overhead over its base in %; full fine-tuning and zero-shot switch no adapter off,
# so they record no overhead, and a run made before forgetting was measured records none.
LLM = {
    "full": dict(accuracy=0.92, forgetting=0.40),
    "lora": dict(accuracy=0.90, forgetting=0.03, ttft_overhead_pct=8.0, tpot_overhead_pct=12.0),
    "prompt-tuning": dict(accuracy=0.85, forgetting=0.00, ttft_overhead_pct=35.0, tpot_overhead_pct=2.0),
    "ia3": dict(accuracy=0.84, ttft_overhead_pct=3.0, tpot_overhead_pct=4.0),  # no forgetting figure
    "zero-shot": dict(accuracy=0.60, forgetting=0.0),
}


def llm_records():
    return [record(method=m, seed=s, majority_rate=0.5, peak_train_mb=600.0, train_examples_per_s=50.0,
                   trainable_pct=1.0, **{k: v + s * 1e-3 for k, v in f.items()}) for m, f in LLM.items() for s in SEEDS]


def llm_run(*constraints):
    return rec.recommend(llm_records(), "smoke", "sentiment", list(constraints))


def test_max_forgetting_excludes_methods_above_it_and_keeps_those_without_the_figure():
    result = llm_run(rec.Constraint(rec.FORGETTING, rec.parse_forgetting("0.05"), True, missing_ok=True))
    table = result.table.set_index("method")
    assert not table.loc["full", "eligible"] and "fails forgetting <= 0.05 nats (0.401 nats)" == \
        table.loc["full", "reason"]
    assert table.loc[["lora", "prompt-tuning", "ia3", "zero-shot"], "eligible"].all() and result.top == "lora"
    text = rec.format_result(result, "metric")
    assert "constraints: forgetting <= 0.05 nats" in text
    assert "note: --max-forgetting keeps ia3 (recorded no forgetting figure: not excluded by it)" in text
    # Without missing_ok a missing figure fails, as for every other bound: the flag is what keeps ia3.
    assert not llm_run(rec.Constraint(rec.FORGETTING, 0.05, True)).table.set_index("method").loc["ia3", "eligible"]


def test_max_overhead_bounds_the_worse_of_ttft_and_tpot_and_counts_no_adapter_as_zero():
    result = llm_run(rec.Constraint(rec.OVERHEAD, rec.parse_overhead("10%"), True))
    table = result.table.set_index("method")
    # lora: TTFT 8% but TPOT 12%; prompt-tuning: TPOT 2% but TTFT 35%: both exceed 10% on one of them.
    assert set(table.index[~table.eligible]) == {"lora", "prompt-tuning"}
    assert "fails adapter overhead (worse of TTFT, TPOT) <= 10% (12%)" == table.loc["lora", "reason"]
    assert table.loc["prompt-tuning", rec.OVERHEAD] == pytest.approx(35.0005)
    assert table.loc[["full", "zero-shot"], rec.OVERHEAD].tolist() == [0.0, 0.0] and result.top == "full"
    text = rec.format_result(result, "metric")
    assert "constraints: adapter overhead (worse of TTFT, TPOT) <= 10%" in text and " overhead " in text
    assert "note: --max-overhead counts full, zero-shot as 0% (recorded no adapter overhead figure " \
           "(ttft/tpot_overhead_pct): no adapter switched off at inference)" in text
    assert llm_run(rec.Constraint(rec.OVERHEAD, 40.0, True)).table.eligible.all()  # 35% passes a 40% bound


def test_both_bounds_together_and_a_task_without_the_figures():
    result = llm_run(rec.Constraint(rec.FORGETTING, 0.05, True, missing_ok=True),
                     rec.Constraint(rec.OVERHEAD, 5.0, True))
    assert set(result.table.method[result.table.eligible]) == {"ia3", "zero-shot"} and result.top == "ia3"
    # An encoder task records neither: nothing is excluded, and the output says why.
    plain = run([rec.Constraint(rec.FORGETTING, 0.05, True, missing_ok=True), rec.Constraint(rec.OVERHEAD, 5.0, True)])
    assert plain.table.eligible.all()
    text = rec.format_result(plain, "metric")
    assert "note: --max-forgetting keeps every method: none recorded a forgetting figure (causal-LM tasks record " \
           "it), so it excludes none" in text
    assert "note: --max-overhead counts every method as 0%: none recorded an adapter overhead figure" in text


@pytest.mark.parametrize("func, text, value", [
    (rec.parse_forgetting, "0.05", 0.05), (rec.parse_forgetting, "0.1 nats", 0.1), (rec.parse_forgetting, "-0.01", -0.01),
    (rec.parse_overhead, "10%", 10.0), (rec.parse_overhead, "150", 150.0), (rec.parse_overhead, "0", 0.0)])
def test_forgetting_and_overhead_bounds_parse(func, text, value):
    assert func(text) == pytest.approx(value)


@pytest.mark.parametrize("func, text", [(rec.parse_forgetting, "5%"), (rec.parse_forgetting, "lots"),
                                        (rec.parse_forgetting, "1GB"), (rec.parse_overhead, "-5"),
                                        (rec.parse_overhead, "10 nats"), (rec.parse_overhead, "")])
def test_bad_forgetting_and_overhead_bounds_name_the_value(func, text):
    with pytest.raises(UsageError, match=repr(text).replace("-", r"\-")):
        func(text)


@pytest.mark.parametrize("args, message", [
    (["--max-forgetting", "lots"], "bad --max-forgetting 'lots' (expected nats per token"),
    (["--max-overhead", "-5"], "bad --max-overhead '-5' (expected a percentage of the base model's latency"),
    (["--max-overhead", "1GB"], "bad --max-overhead '1GB'"),
])
def test_bad_forgetting_and_overhead_values_are_one_line_usage_errors(tmp_path, args, message):
    from bench.results.store import ResultStore
    store = ResultStore(tmp_path / "llm")
    for r in llm_records():
        store.append(r)
    proc = run_bench("recommend", "--suite", "smoke", "--results", str(tmp_path / "llm"), *args)
    assert proc.returncode == 2 and message in proc.stderr and proc.stderr.strip().count("\n") == 0, proc.stderr
    good = run_bench("recommend", "--suite", "smoke", "--results", str(tmp_path / "llm"), "--max-forgetting", "0.05",
                     "--max-overhead", "5%")
    assert good.returncode == 0, good.stderr
    assert "constraints: forgetting <= 0.05 nats, adapter overhead (worse of TTFT, TPOT) <= 5%" in good.stdout
    assert "Recommendation (priority metric): ia3" in good.stdout
