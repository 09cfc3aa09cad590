"""The HTML/Markdown report: Pareto computation, sections from hand-built records (missing, failed and
skipped runs included), the rendered page, and the real CLI (`bench run` writes it, `bench report` too)."""
import base64
import math
import re

import pytest
from conftest import run_bench

from bench.core.metrics import metric_info
from bench.judge.pareto import frontier, pareto_mask
from bench.results.store import ResultStore
from reports.html import load_records, render_html, write_report
from reports.markdown import markdown_report
from reports.sections import COST_COLUMNS, build_sections, fmt_stat

# --- Pareto -------------------------------------------------------------------------------------------


def test_pareto_mask_fewer_params_higher_accuracy():
    # (trainable params, accuracy): fewer params is better, higher accuracy is better.
    points = [(1e3, 0.90), (1e4, 0.95), (1e5, 0.93), (1e2, 0.50), (1e4, 0.80)]
    assert pareto_mask(points, [False, True]) == [True, True, False, True, False]


def test_pareto_mask_both_higher_and_three_objectives():
    assert pareto_mask([(1, 1), (2, 2), (2, 1)], [True, True]) == [False, True, False]
    # A point best on a third objective survives although beaten on the first two.
    assert pareto_mask([(2, 2, 0), (1, 1, 5)], [True, True, True]) == [True, True]
    assert pareto_mask([(2, 2, 5), (1, 1, 5)], [True, True, True]) == [True, False]


def test_pareto_ties_are_all_optimal_and_nan_never_is():
    assert pareto_mask([(1, 1), (1, 1), (1, 0)], [True, True]) == [True, True, False]
    # NaN (an unmeasured run) is not optimal and does not dominate anything.
    assert pareto_mask([(math.nan, 10), (1, 1)], [True, True]) == [False, True]
    assert pareto_mask([], [True, True]) == []


def test_frontier_is_ordered_by_x():
    xs, ys = [300, 10, 100, 50], [0.9, 0.6, 0.85, 0.5]
    assert frontier(xs, ys, x_higher_is_better=False) == [1, 2, 0]


# --- hand-built records --------------------------------------------------------------------------------

ENV = {"device": "cpu", "cpu_model": "Test CPU", "cpu_count": 2, "torch_threads": 2, "hostname": "h",
       "platform": "Linux", "python": "3.11", "git_commit": "abc123", "packages": {"torch": "2.13.0"}}


def record(method, seed=0, status="ok", task="sentiment", suite="smoke", device="cpu", error=None, **metrics):
    base = {"accuracy": 0.8, "trainable_params": 1000, "trainable_pct": 1.0, "peak_train_mb": 500.0,
            "train_examples_per_s": 50.0, "latency_p50_ms": 2.0, "latency_p95_ms": 3.0, "adapter_tensor_mb": 0.1,
            "wall_time_s": 5.0}
    ok = status == "ok"
    return {"run_id": f"{task}-{method}-{seed}-{device}-{status}", "invocation": "inv1", "suite": suite,
            "task": task, "method": method, "seed": seed, "budget": "quick", "status": status, "error": error,
            "model": "tiny", "device": device, "started_at": "2026-01-01T00:00:00+00:00",
            "metrics": {**base, **metrics} if ok else {"wall_time_s": 1.0}, "info": {},
            "loss_curve": [[2, 0.7], [4, 0.6], [6, 0.5]] if ok else [], "env": ENV if ok else {}}


@pytest.fixture
def records():
    return [
        record("full", 0, accuracy=0.90, trainable_params=100_000, trainable_pct=100.0, peak_train_mb=900.0,
               train_examples_per_s=20.0),
        record("full", 1, accuracy=0.92, trainable_params=100_000, trainable_pct=100.0, peak_train_mb=910.0,
               train_examples_per_s=22.0),
        record("head", 0, accuracy=0.70, trainable_params=66, trainable_pct=0.07, peak_train_mb=400.0,
               latency_p50_ms=1.0),
        record("head", 1, accuracy=0.72, trainable_params=66, trainable_pct=0.07, peak_train_mb=400.0,
               latency_p50_ms=1.0),
        record("lora", 0, accuracy=0.85, trainable_params=2_000, trainable_pct=2.0, peak_train_mb=600.0),
        record("lora", 1, status="failed", error="RuntimeError: boom <script>alert(1)</script>"),
        record("adalora", 0, status="failed", error="RuntimeError: out of memory"),
        record("int8-lora", 0, status="skipped", error="bitsandbytes int8 needs CUDA"),
        # Same task on another device: its own section, never averaged with the CPU runs.
        record("lora", 0, device="cuda", accuracy=0.86, cuda_max_allocated_mb=300.0),
    ]


def test_sections_split_by_conditions_and_average_over_seeds(records):
    sections = build_sections(records)
    assert [(s.task, s.device) for s in sections] == [("sentiment", "cpu"), ("sentiment", "cuda")]
    cpu, cuda = sections
    assert cpu.metric == "accuracy"  # records without info.task: their first higher-is-better task metric
    rows = {r.method: r for r in cpu.rows}
    # Best first by the headline metric (lora 0.85 above head 0.71, though run after it); no score: last, in run order.
    assert list(rows) == ["full", "lora", "head", "adalora", "int8-lora"]
    acc = rows["full"].stats["accuracy"]
    assert (acc.mean, acc.n) == (pytest.approx(0.91), 2) and acc.std == pytest.approx(math.sqrt(2e-4))
    assert fmt_stat(acc, "accuracy", with_n=True) == "0.9100 ± 0.0141 (n=2)"
    assert rows["lora"].stats["accuracy"].n == 1 and rows["lora"].status == "ok 1, failed 1"
    assert rows["lora"].reasons == ["failed: RuntimeError: boom <script>alert(1)</script> (seed 1)"]
    assert rows["adalora"].status == "failed" and rows["adalora"].stats["accuracy"].n == 0
    assert rows["int8-lora"].reasons == ["skipped: bitsandbytes int8 needs CUDA (seed 0)"]
    # Columns nobody measured are dropped; the GPU column only appears for the GPU section.
    assert "cuda_max_allocated_mb" not in [c.metric for c in cpu.columns]
    assert "cuda_max_allocated_mb" in [c.metric for c in cuda.columns]
    env = dict(cpu.env)
    assert env["CPU"].startswith("Test CPU") and env["git commit"] == "abc123" and "torch 2.13.0" in env["packages"]
    assert env["budget"] == "quick"  # read from the records alone: these recorded no budget definition


def test_best_values_follow_metric_directions(records):
    cpu = build_sections(records)[0]
    assert cpu.best["accuracy"] == {"full"}  # higher is better
    assert cpu.best["trainable_params"] == {"head"}  # fewer is better
    assert cpu.best["peak_train_mb"] == {"head"}
    assert cpu.best["train_examples_per_s"] == {"head", "lora"}  # a tie: both marked
    assert cpu.best["latency_p50_ms"] == {"head"}
    assert all("adalora" not in methods for methods in cpu.best.values())  # failed runs win nothing


def test_unregistered_task_falls_back_to_a_recorded_quality_metric():
    recs = [record("lora", task="gone", suite="old", accuracy=math.nan, entity_f1=0.7)]
    del recs[0]["metrics"]["accuracy"]
    (section,) = build_sections(recs)
    assert section.metric == "entity_f1"
    assert "budget" in dict(section.env)  # the budget name, without a definition to look up


def _rows(html: str) -> list[tuple[str, str]]:
    """(method, row kind: ok, partial, failed or skipped) for every table row, in page order."""
    return [(m, kind) for kind, m in re.findall(r'<tr class="method ([a-z]+)" data-method="([^"]+)"', html)]


def _images(html: str) -> list[tuple[str, str]]:
    """(plot kind, decoded SVG) for every figure."""
    return [(kind, base64.b64decode(data).decode()) for kind, data in
            re.findall(r'<figure class="plot (\w+)"><img src="data:image/svg\+xml;base64,([^"]+)"', html)]


def test_html_shows_every_method_failures_with_reasons_and_plots(records, tmp_path):
    html = render_html(records, [tmp_path])
    assert _rows(html) == [("full", "ok"), ("lora", "partial"), ("head", "ok"), ("adalora", "failed"),
                           ("int8-lora", "skipped"), ("lora", "ok")]  # the last one: the cuda section
    assert "RuntimeError: out of memory" in html and "bitsandbytes int8 needs CUDA" in html
    assert "<script>alert(1)" not in html and "&lt;script&gt;alert(1)" in html  # error text is escaped
    images = _images(html)
    assert [k for k, _ in images] == ["pareto"] * 3 + ["bars"] * 2 + ["loss"] + ["pareto"] * 3 + ["bars"] * 2 + ["loss"]
    params_plot = images[0][1]
    assert "accuracy vs trainable parameters" in params_plot
    # head (fewest params), lora and full (most accurate) are on the frontier of the CPU section.
    assert all(f"{m} *" in params_plot for m in ("head", "lora", "full"))
    assert "memory" in images[7][1].lower() and "GPU" in images[7][1]  # the GPU section plots GPU memory
    # Self-contained: nothing but data: URIs and in-page anchors, and a policy forbidding the rest.
    assert not re.search(r'(src|href)="(?!data:|#)', html)
    assert "http://" not in html and "https://" not in html
    assert "default-src 'none'" in html


def test_a_task_with_only_failed_runs_renders_without_plots(tmp_path):
    recs = [record("lora", status="failed", error="ValueError: bad"), record("head", status="skipped", error="no")]
    html = render_html(recs, [tmp_path])
    assert _rows(html) == [("lora", "failed"), ("head", "skipped")]
    assert _images(html) == [] and "No plots" in html and "ValueError: bad" in html
    assert "<strong>No runs found.</strong>" in render_html([], [tmp_path])


def test_a_method_under_two_configurations_gets_a_row_and_plot_marks_for_each(tmp_path):
    # A method re-run at another (tuned) rate in the same folder once crashed the plots: no colour for its label.
    recs = [record("lora"), record("lora", accuracy=0.7), record("head")]
    for r, config in zip(recs, ("aaa", "bbb", "ccc")):
        r["config_id"], r["run_id"] = config, f"run-{config}"
    html = render_html(recs, [tmp_path])
    assert {m for m, _ in _rows(html)} == {"lora (config aaa)", "lora (config bbb)", "head"}
    assert _images(html)


def test_markdown_has_the_same_table(records):
    md = markdown_report(build_sections(records), "T")
    lines = [line for line in md.splitlines() if line.startswith("| `")]
    assert [line.split("`")[1] for line in lines] == ["full", "lora", "head", "adalora", "int8-lora", "lora"]
    full = next(line for line in lines if line.startswith("| `full`"))
    assert "**0.9100 ± 0.0141 (n=2)**" in full
    assert "failed: RuntimeError: out of memory (seed 0)" in md and "ok 1, failed 1" in md
    assert "| skipped: bitsandbytes int8 needs CUDA (seed 0) |" in md  # the status once, not "skipped: skipped:"


@pytest.mark.filterwarnings("error")  # identical points once made matplotlib divide by zero
def test_report_stays_small_with_many_runs_and_long_loss_curves(tmp_path):
    recs = [record(f"m{i}", seed) for i in range(10) for seed in range(3)]
    for r in recs:
        r["loss_curve"] = [[step, 1 / step] for step in range(1, 2001)]
    paths = write_report(recs, tmp_path / "r.html", [tmp_path])
    assert paths["html"].stat().st_size < 3_000_000
    assert paths["markdown"].read_text().count("| `m") == 10


def test_load_records_reads_each_run_once_and_rejects_a_folder_without_results(tmp_path, records):
    store = ResultStore(tmp_path / "a")
    for r in records:
        store.append(r)
    loaded, folders = load_records([tmp_path / "a", tmp_path / "a" / "results.jsonl"])
    assert len(loaded) == len(records) and folders == [tmp_path / "a"] * 2
    from bench.core.errors import UsageError
    with pytest.raises(UsageError, match="no results in .*nowhere"):
        load_records([tmp_path / "nowhere"])


# --- the real CLI ----------------------------------------------------------------------------------------


def test_run_writes_the_report_and_report_rerenders_it(tmp_path):
    out = tmp_path / "run"
    run_bench("run", "--suite", "smoke", "--tasks", "sentiment", "--methods", "head,lora", "--seeds", "0,1",
              "--out", str(out), env={"BENCH_FAULT": "raise:lora"}, check=True)
    html, md = (out / "report.html").read_text(), (out / "report.md").read_text()
    assert _rows(html) == [("head", "ok"), ("lora", "failed")]
    assert "injected failure for lora" in html and "injected failure for lora" in md
    assert re.search(r"\d\.\d{4} ± \d\.\d{4} \(n=2\)", md)  # head: two seeds, a spread
    assert len(_images(html)) == 6

    proc = run_bench("report", str(out), "--out", str(tmp_path / "again.html"), "--title", "Again", check=True)
    assert "again.html" in proc.stdout
    assert "<title>Again</title>" in (tmp_path / "again.html").read_text()
    assert (tmp_path / "again.md").read_text().startswith("# Again")

    bad = run_bench("report", str(tmp_path / "missing"))
    assert bad.returncode == 2 and bad.stderr.strip().count("\n") == 0 and "missing" in bad.stderr
    bad = run_bench("report", str(out), "--history", str(tmp_path / "none.db"))
    assert bad.returncode == 2 and bad.stderr.strip().count("\n") == 0 and "none.db" in bad.stderr


def test_no_report_skips_the_page(tmp_path):
    proc = run_bench("run", "--suite", "smoke", "--tasks", "sentiment", "--methods", "lora", "--out", str(tmp_path),
                     "--no-report", env={"BENCH_FAULT": "raise:lora"})  # a failing run is quick
    assert proc.returncode == 1 and "no run succeeded" in proc.stderr  # not one run succeeded
    assert (tmp_path / "results.jsonl").is_file() and not (tmp_path / "report.html").exists()


def test_a_task_caveat_reaches_both_reports():
    """Imagenette's "pretrained on these very images" caveat, as its runs recorded it (info.task.note)."""
    from suites import get_task
    task = {"metric": "accuracy", "note": get_task("vision", "imagenette").note}
    recs = [record("head", task="imagenette", suite="vision"), record("lora", task="imagenette", suite="vision")]
    for r in recs:
        r["info"]["task"] = task
    sections = build_sections(recs)
    assert "ImageNet's own training set" in sections[0].note
    assert "own training set, so an ImageNet-pretrained backbone" in render_html(recs, [])
    assert "*Note.* Imagenette's images" in markdown_report(sections, "t")
    # A task without a caveat gets no note line.
    assert "Note." not in markdown_report(build_sections([record("head")]), "t")


def test_a_report_that_cannot_be_written_keeps_the_results_and_fails_the_run(tmp_path):
    (tmp_path / "report.html").mkdir()  # the page cannot be written over a folder
    proc = run_bench("run", "--suite", "smoke", "--tasks", "sentiment", "--methods", "head", "--out", str(tmp_path))
    assert proc.returncode == 1
    assert "report could not be written (IsADirectoryError" in proc.stderr and "bench report" in proc.stderr
    assert [r["status"] for r in ResultStore(tmp_path).records()] == ["ok"]
    assert (tmp_path / "results_wide.csv").is_file()


def test_a_history_database_adds_a_plot_over_past_invocations(tmp_path):
    from bench.results import history
    db = tmp_path / "history.db"

    def night(invocation, day, accuracy, methods=("head", "lora")):
        recs = [record(m, accuracy=accuracy) for m in methods]
        for r in recs:
            r.update(run_id=f"{invocation}-{r['method']}", invocation=invocation,
                     finished_at=f"2026-01-0{day}T00:00:00+00:00")
        return recs

    history.record_runs(db, night("inv1", 1, 0.80, methods=("head", "lora", "bitfit")))  # bitfit: only in the past
    latest = night("inv2", 2, 0.80)
    history.record_runs(db, latest)
    images = _images(render_html(latest, [], history_db=db))
    assert [kind for kind, _ in images].count("history") == 1
    assert "stroke: #ff0000" not in dict(images)["history"]  # a steady metric: nothing ringed
    assert "bitfit" in dict(images)["history"]
    # The history plot marks a regression: the third night loses ten points of accuracy.
    worse = night("inv3", 3, 0.70)
    history.record_runs(db, worse)
    svg = dict(_images(render_html(worse, [], history_db=db)))["history"]
    assert "01-03 00:00" in svg and 'stroke: #ff0000' in svg
    # One invocation in the database, or none given: no history plot.
    assert "history" not in dict(_images(render_html(worse, [])))
    single = tmp_path / "single.db"
    history.record_runs(single, latest)
    assert "history" not in dict(_images(render_html(latest, [], history_db=single)))


def test_mfus_resting_on_different_peaks_or_flop_counts_are_not_averaged():
    """A method whose seeds were divided by peaks 2x apart (a peak measured another way by an older harness), or
    counted 2x apart (BOFT before its per-step FLOPs were split off), shows no MFU, and the note says why; seeds
    within the measurement noise are averaged."""
    recs = [record("lora", seed=0, train_mfu=0.5, peak_flops_per_s=223e9, train_flops_per_example=6e8),
            record("lora", seed=1, train_mfu=0.25, peak_flops_per_s=453e9, train_flops_per_example=6e8),
            record("boft", seed=0, train_mfu=0.72, peak_flops_per_s=444e9, train_flops_per_example=2535e6),
            record("boft", seed=1, train_mfu=0.31, peak_flops_per_s=456e9, train_flops_per_example=1253e6),
            record("head", seed=0, train_mfu=0.30, peak_flops_per_s=444e9, train_flops_per_example=600e6),
            record("head", seed=1, train_mfu=0.32, peak_flops_per_s=456e9, train_flops_per_example=620e6)]
    section = build_sections(recs)[0]
    mfu = {row.method: row.stats["train_mfu"] for row in section.rows}
    assert mfu["lora"].n == mfu["boft"].n == 0 and mfu["head"].n == 2 and mfu["head"].mean == pytest.approx(0.31)
    assert "MFU of lora (peak_flops_per_s 223-453 GFLOP/s)" in section.note
    assert "MFU of boft (train_flops_per_example 1,253-2,535 MFLOP)" in section.note and "head" not in section.note
    assert "FLOP counts more than 10% apart" in markdown_report([section], "t")


def test_contended_runs_are_flagged_and_their_speed_figures_marked(tmp_path):
    """A busy machine must not pass for a slow method (issue 24): a method row whose runs were contended says so
    in the HTML, the Markdown and the console summary, and its speed figures carry the mark; quality does not."""
    from reports.tables import format_summary, summary
    recs = [record("lora", seed=0, contention=0.35, train_examples_per_s=20.0),
            record("lora", seed=1, contention=0.02, train_examples_per_s=40.0),
            record("head", seed=0, contention=0.05, gpu_other_processes=0),
            record("full", seed=0, contention=0.0, gpu_other_processes=2)]
    section = build_sections(recs)[0]
    rows = {row.method: row for row in section.rows}
    assert rows["lora"].contended == "contended: other processes took 35% of the CPU during timed steps (seed 0)"
    assert rows["full"].contended == "contended: 2 other processes on the GPU (seed 0)" and rows["head"].contended is None
    assert "marked *" in section.note
    html = render_html(recs, [tmp_path])
    row_html = dict(re.findall(r'<tr class="method [a-z]+" data-method="([^"]+)">(.*?)</tr>', html, re.S))
    assert "contended: other processes took 35% of the CPU during timed steps (seed 0)" in row_html["lora"]
    speed_columns = sum(metric_info(c.metric).kind == "speed" for c in section.columns)
    assert row_html["lora"].count('class="contended"') == row_html["full"].count('class="contended"') == speed_columns
    assert 'class="contended"' not in row_html["head"] and "contended" not in row_html["head"]
    md = markdown_report([section], "T")
    lora_md = next(line for line in md.splitlines() if line.startswith("| `lora`"))
    assert "| 30 ± 14.1\\* |" in lora_md and "(n=2)** |" in lora_md  # speed marked, quality not
    assert "ok 2; contended: other processes took 35%" in lora_md
    assert "\\*" not in next(line for line in md.splitlines() if line.startswith("| `head`"))
    table = summary(recs, {"sentiment": "accuracy"})
    notes = dict(zip(table.method, table.note))
    assert notes["lora"].startswith("contended: other processes took 35%") and notes["head"] != notes["head"]  # NaN
    printed = format_summary(table)
    lora_line = next(line for line in printed.splitlines() if line.split()[1] == "lora")
    head_line = next(line for line in printed.splitlines() if line.split()[1] == "head")
    assert "30*" in lora_line and "*" not in head_line


def test_an_int8_runs_mfu_is_not_shown_as_comparable_with_float_runs():
    """int8 bases' FLOPs are counted as float: their MFU is left out (–) with a note, never averaged or ranked."""
    from reports.tables import summary
    recs = [record("int8-lora", seed=s, train_mfu=0.02, peak_flops_per_s=444e9, train_flops_per_example=6e8,
                   base_int8_mb=10.0) for s in (0, 1)] + \
           [record("lora", seed=s, train_mfu=0.30, peak_flops_per_s=444e9, train_flops_per_example=6e8) for s in (0, 1)]
    section = build_sections(recs)[0]
    mfu = {row.method: row.stats["train_mfu"] for row in section.rows}
    assert mfu["int8-lora"].n == 0 and mfu["lora"].n == 2
    assert "MFU of int8-lora (int8 base: FLOPs counted as float)" in section.note
    table = summary(recs, {"sentiment": "accuracy"}).set_index("method")
    assert math.isnan(table.loc["int8-lora", "MFU"]) and table.loc["lora", "MFU"] == pytest.approx(0.30)
    assert "int8 base: FLOPs counted as float" in table.loc["int8-lora", "note"]


# --- a decoder LM's section (suites/causal_lm.py) ----------------------------------------------------------


def llm_record(method, seed=0, task="sst2-gen", suite="llm", kind="peft", device="cpu", headline="accuracy",
               **metrics):
    """A causal-LM run's record as the worker writes it: info.task with kind causal-lm, the method's kind in its
    configuration, the generation figures (a peft method's overhead over its base; none for full or zero-shot)."""
    r = record(method, seed, task=task, suite=suite, device=device)
    del r["metrics"]["accuracy"]
    r["metrics"].update({headline: 0.8, "invalid_rate": 0.05, "forgetting": 0.02, "peak_infer_mb": 520.0,
                         "train_tokens_per_s": 900.0, "ttft_ms_p50": 12.0, "tpot_ms_p50": 4.0,
                         "ttft_base_ms_p50": 10.0, "tpot_base_ms_p50": 3.2, "ttft_overhead_pct": 20.0,
                         "tpot_overhead_pct": 25.0, "generated_tokens_per_s": 150.0,
                         **({"ll_accuracy": 0.82} if headline == "accuracy" else {}), **metrics})
    for name in [n for n in r["metrics"] if r["metrics"][n] is None]:  # None: a figure this method does not record
        del r["metrics"][name]
    r["info"] = {"task": {"metric": headline, "note": "", "kind": "causal-lm"},
                 "generation_latency": {"latency_method": "manual-cache", "prompt_tokens": 64, "new_tokens": 16},
                 "weights": "dequantised from Q4_1 (model.gguf, sha256 0123456789ab)"}
    r["config"] = {"method": {"name": method, "kind": kind}}
    return r


NO_ADAPTER = dict(ttft_overhead_pct=None, tpot_overhead_pct=None, ttft_base_ms_p50=None, tpot_base_ms_p50=None)


@pytest.fixture
def llm_records():
    return [
        *[llm_record("lora", s, accuracy=0.80 + s * 0.02, ttft_merged_ms_p50=10.1, tpot_merged_ms_p50=3.3)
          for s in (0, 1)],
        *[llm_record("full", s, kind="full", accuracy=0.86 + s * 0.02, forgetting=0.4, trainable_params=100_000,
                     **NO_ADAPTER) for s in (0, 1)],
        *[llm_record("zero-shot", s, kind="none", accuracy=0.50 + s * 0.02, invalid_rate=0.3, forgetting=0.0,
                     trainable_params=0, train_tokens_per_s=None, **NO_ADAPTER) for s in (0, 1)],
        {**record("prompt-tuning", status="failed", error="RuntimeError: boom", suite="llm", task="sst2-gen"),
         "info": {"task": {"metric": "accuracy", "note": "", "kind": "causal-lm"}}},
    ]


LLM_HEADERS = ["method", "accuracy ↑", "95% CI", "vs best", "vs zero-shot", "invalid rate ↓", "ll accuracy ↑",
               "forgetting (nats) ↓", "trainable params ↓", "peak train RSS (MB) ↓", "peak inference RSS (MB) ↓",
               "train throughput (tokens/s) ↑", "TTFT p50 (ms) ↓", "TTFT p50 merged (ms) ↓", "TPOT p50 (ms) ↓",
               "TPOT p50 merged (ms) ↓", "TTFT overhead (%) ↓", "TPOT overhead (%) ↓", "status"]


def _md_table(md: str) -> tuple[list[str], dict[str, dict[str, str]]]:
    """The first table of a Markdown report: its headers and {method: {header: cell}}."""
    lines = [line for line in md.splitlines() if line.startswith("| ")]
    headers = [h.strip() for h in lines[0].strip("|").split(" | ")]
    rows = {}
    for line in lines[1:]:
        cells = [c.strip() for c in line.strip().strip("|").split(" | ")]
        rows[cells[0].strip("`")] = dict(zip(headers, cells))
    return headers, rows


def test_a_causal_lm_section_shows_generation_figures_and_the_gain_over_zero_shot(llm_records, tmp_path):
    (section,) = build_sections(llm_records)
    assert section.causal_lm and section.baseline == "zero-shot"
    headers, rows = _md_table(markdown_report([section], "T"))
    assert headers == LLM_HEADERS  # the encoder table's columns (MFU, adapter size, forward latency) are not there
    assert [m for m in rows] == ["full", "lora", "zero-shot", "prompt-tuning"]  # best first, the failed run last
    # Each method against the zero-shot row (two seeds each: a t interval over seeds); the row itself: baseline.
    assert rows["lora"]["vs zero-shot"] == "+0.300 " + _t_interval(0.30) and rows["zero-shot"]["vs zero-shot"] == \
        "baseline"
    assert rows["full"]["vs zero-shot"].startswith("+0.360 [") and rows["prompt-tuning"]["vs zero-shot"] == "–"
    assert rows["lora"]["TTFT overhead (%) ↓"] == "20 ± 0" and rows["full"]["TTFT overhead (%) ↓"] == "–"
    assert rows["lora"]["TTFT p50 merged (ms) ↓"] == "10.1 ± 0" and rows["full"]["TTFT p50 merged (ms) ↓"] == "–"
    assert rows["zero-shot"]["forgetting (nats) ↓"] == "**0 ± 0**"
    assert rows["full"]["forgetting (nats) ↓"] == "0.4 ± 0"
    assert rows["zero-shot"]["invalid rate ↓"] == "0.3000 ± 0.0000" and rows["lora"]["ll accuracy ↑"] == \
        "**0.8200 ± 0.0000**"
    assert "vs zero-shot: accuracy minus the zero-shot row's" in section.note
    md = markdown_report([section], "T")
    assert "weights dequantised from Q4_1" in md and "generation latency manual-cache, batch 1, 64-token prompt" in md
    # The page has the same columns and the gain, sortable by its value.
    html = render_html(llm_records, [tmp_path])
    assert ">vs zero-shot</button>" in html and ">TTFT overhead <span" in html and ">MFU<" not in html
    row_html = dict(re.findall(r'<tr class="method [a-z]+" data-method="([^"]+)">(.*?)</tr>', html, re.S))
    assert re.search(r'class="vs-zero-shot" data-sort="0\.3\d*">\+0\.300 \[', row_html["lora"])
    assert '<td class="vs-zero-shot" data-sort="0">baseline</td>' in row_html["zero-shot"]
    assert "batch-1 generation latency" in html  # the latency bars are TTFT and TPOT


def _t_interval(diff: float) -> str:
    from bench.judge import stats
    low, high = stats.t_interval(diff, math.sqrt(2 * 2e-4 / 2), 2)
    return f"[{low:+.3f}, {high:+.3f}]"


def test_the_llm_table_is_chosen_by_the_records_never_by_the_suite_name(llm_records):
    """A causal-LM task in a suite of any name gets the generation table; an encoder task in a suite named llm keeps
    the encoder table; records older than info.task.kind are told apart by their generation figures."""
    renamed = [dict(r, suite="my-own") for r in llm_records]
    assert build_sections(renamed)[0].causal_lm
    encoder = [record("lora", suite="llm"), record("zero-shot", suite="llm")]
    for r in encoder:
        r["info"] = {"task": {"metric": "accuracy", "note": "", "kind": "text-classification"}}
    (section,) = build_sections(encoder)
    assert not section.causal_lm and section.baseline is None
    assert [c.metric for c in section.columns][1:] == [m for m in COST_COLUMNS if m in encoder[0]["metrics"]]
    assert "vs zero-shot" not in markdown_report([section], "T") and "Generation:" not in section.note
    old = [dict(r, info={}) for r in llm_records]  # no info.task: the generation figures decide
    assert build_sections(old)[0].causal_lm


def test_without_a_zero_shot_row_the_llm_section_says_so_and_on_cuda_shows_gpu_memory(llm_records):
    gpu = [r for r in llm_records if r["method"] != "zero-shot"]
    for r in gpu:
        r["metrics"].update(cuda_peak_train_allocated_mb=700.0, cuda_peak_infer_allocated_mb=300.0)
    (section,) = build_sections(gpu)
    assert section.baseline is None and "No zero-shot row" in section.note
    headers, _ = _md_table(markdown_report([section], "T"))
    assert "vs zero-shot" not in headers
    assert "peak train GPU memory (MB) ↓" in headers and "peak inference GPU memory (MB) ↓" in headers
    assert not any("RSS" in h for h in headers)  # the host's RSS is not what limits a GPU run


def test_a_span_f1_task_drops_ll_accuracy_and_compares_span_f1(llm_records):
    ner = [llm_record("lora", s, task="conll-gen", headline="span_f1", span_f1=0.6 + s / 100) for s in (0, 1)] + \
          [llm_record("zero-shot", s, task="conll-gen", headline="span_f1", kind="none", span_f1=0.1,
                      **NO_ADAPTER) for s in (0, 1)]
    (section,) = build_sections(ner)
    headers, rows = _md_table(markdown_report([section], "T"))
    assert headers[1] == "span_f1 ↑" and "ll accuracy ↑" not in headers
    assert rows["lora"]["vs zero-shot"].startswith("+0.505 [")


def test_the_printed_summary_shows_invalid_rate_forgetting_and_ttft_for_causal_lm_tasks(llm_records):
    from reports.tables import format_summary, summary
    frame = summary(llm_records, {"sst2-gen": "accuracy"})
    table = frame.set_index("method")
    assert table.loc["lora", "invalid"] == pytest.approx(0.05) and table.loc["full", "forgetting"] == 0.4
    assert table.loc["lora", "TTFT ms"] == 12.0
    assert not {"p50 ms", "p95 ms", "merged p50 ms"} & set(table.columns)  # the forward's latency: not a generator's
    header = format_summary(frame).splitlines()[0].split()
    assert header[:8] == ["task", "method", "status", "n", "metric", "value", "invalid", "forgetting"]
    # An encoder grid's summary is unchanged; in a mixed grid each task keeps its own latency figures.
    encoder = summary([record("lora"), record("head")], {"sentiment": "accuracy"})
    assert "p50 ms" in encoder and not {"invalid", "forgetting", "TTFT ms"} & set(encoder.columns)
    mixed = summary(llm_records + [record("lora")], {"sst2-gen": "accuracy", "sentiment": "accuracy"})
    by = mixed.set_index(["task", "method"])
    assert by.loc[("sentiment", "lora"), "p50 ms"] == 2.0 and math.isnan(by.loc[("sst2-gen", "lora"), "p50 ms"])
    assert math.isnan(by.loc[("sentiment", "lora"), "TTFT ms"]) and by.loc[("sst2-gen", "lora"), "TTFT ms"] == 12.0
