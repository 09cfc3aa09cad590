"""The tuning protocol (issue 24): a tuned rate applies to the model and precision it was tuned for; `bench tune`
extends the grid past an edge best and refines around each method's best in a second stage, and records it all."""
import json
import math

import pytest
import yaml
from conftest import run_bench

import methods
from bench.execute import plan
from bench.judge import tuning
from suites import get_suite

SMOKE_MODEL = "smoke:tiny-bert"  # the smoke sentiment task's default model


def sentiment():
    return next(t for t in get_suite("smoke") if t.name == "sentiment")


def write_tuned(folder, entry: dict, method="lora"):
    """A tuned file for the smoke sentiment task at the quick budget holding one method's entry."""
    m = methods.resolve([method], None)[0]
    folder.mkdir(parents=True, exist_ok=True)
    data = {"task": "sentiment", "suite": "smoke", "budget": "quick", "metric": "dev_accuracy",
            "methods": {method: {"lr": 0.0123, "method_digest": tuning.method_digest(m), **entry}}}
    (folder / "sentiment.quick.yaml").write_text(yaml.safe_dump(data))
    return m


def test_a_tuned_rate_applies_only_to_the_model_and_precision_it_was_tuned_for(tmp_path, monkeypatch):
    monkeypatch.setenv("BENCH_TUNED_DIR", str(tmp_path / "tuned"))
    m = write_tuned(tmp_path / "tuned", {"model": SMOKE_MODEL, "precision": "fp32"})
    task = sentiment()
    same = plan.configure(task, m, plan.GridSettings(budget="quick"))
    assert (same["lr"], same["lr_source"]) == (0.0123, "tuned")
    assert plan.configure(task, m, plan.GridSettings(budget="quick", model=SMOKE_MODEL))["lr_source"] == "tuned"
    bf16 = plan.configure(task, m, plan.GridSettings(budget="quick", precision="bf16"))
    assert bf16["lr"] == m.lr != 0.0123
    assert bf16["lr_source"] == (f"method file (tuned for {SMOKE_MODEL}, fp32; this run: {SMOKE_MODEL}, bf16)")
    other = plan.configure(task, m, plan.GridSettings(budget="quick", model="prajjwal1/bert-tiny"))
    assert other["lr"] == m.lr and other["lr_source"].startswith(f"method file (tuned for {SMOKE_MODEL}, fp32; ")
    # A task's own rate (the smoke tasks' full fine-tuning) is the fallback where it has one.
    full = write_tuned(tmp_path / "tuned", {"model": SMOKE_MODEL, "precision": "fp32"}, method="full")
    fb = plan.configure(task, full, plan.GridSettings(budget="quick", precision="fp16"))
    assert fb["lr"] == task.lr_overrides["full"] and fb["lr_source"].startswith("task (tuned for ")
    # A rate whose file does not say what it was tuned for applies to nothing.
    write_tuned(tmp_path / "tuned", {})
    unknown = plan.configure(task, m, plan.GridSettings(budget="quick"))
    assert unknown["lr"] == m.lr and "tuned for an unrecorded model and precision" in unknown["lr_source"]
    # --lr still wins over everything.
    assert plan.configure(task, m, plan.GridSettings(budget="quick", precision="bf16"), {"lora": 1e-3})["lr"] == 1e-3


def test_the_committed_tuned_files_say_they_were_tuned_with_the_default_model_at_fp32(monkeypatch):
    monkeypatch.setenv("BENCH_TUNED_DIR", str(tuning.DEFAULT_DIR))
    files = sorted(tuning.DEFAULT_DIR.glob("*.yaml"))
    assert len(files) == 6
    for path in files:
        name, budget = path.name.split(".")[:2]
        task = next(t for suite in ("nlp", "vision", "llm") for t in get_suite(suite) if t.name == name)
        entries = tuning.load(name, budget, tuning.DEFAULT_DIR)["methods"]
        for label, entry in entries.items():
            assert (entry["model"], entry["precision"]) == (task.default_model, "fp32"), (path, label)
            assert set(entry["dev_scores"]) == set(entry["grid"])
            later = [entry[stage] for stage in (tuning.EDGE, tuning.STAGE2) if stage in entry]
            assert all(set(s["dev_scores"]) == set(s["grid"]) for s in later)
            assert entry["lr"] in entry["grid"] + [lr for s in later for lr in s["grid"]]  # chosen among rates tried
        lora = methods.resolve(["lora"], None)[0]
        config = plan.configure(task, lora, plan.GridSettings(budget=budget))
        assert (config["lr"], config["lr_source"]) == (entries["lora"]["lr"], "tuned")


def _ladder_step(points, span):
    return span ** (1 / (points - 1))


def test_tune_extends_an_edge_best_and_refines_around_every_best_then_run_keeps_it_to_its_precision(tmp_path):
    """Smoke sentiment, head and LoRA, 3 points over a span of 10 (a step of x3.16): stage 1, up to two points
    past an edge best, then half a step either side of each best; every trial scored on the dev split through the
    same executor; the tuned file records the stages. `bench run` at another precision takes the method file's rate
    and says how to tune for it."""
    tuned = tmp_path / "tuned"
    env = {"BENCH_TUNED_DIR": str(tuned)}
    common = ["--suite", "smoke", "--tasks", "sentiment"]
    out = run_bench("tune", *common, "--methods", "head,lora", "--points", "3", "--span", "10",
                    "--out", str(tmp_path / "tune"), env=env)
    assert out.returncode == 0, out.stderr + out.stdout
    data = tuning.load("sentiment", "quick", tuned)
    assert data["protocol"]["stage2"] and data["protocol"]["edge_extension"]
    rows = [json.loads(line) for line in (tmp_path / "tune" / "results.jsonl").read_text().splitlines()]
    assert all(r["info"]["lr_source"] == "grid" and "dev_accuracy" in r["metrics"] for r in rows)
    step = _ladder_step(3, 10)
    extended = 0
    for label in ("head", "lora"):
        e = data["methods"][label]
        assert (e["model"], e["precision"]) == (SMOKE_MODEL, "fp32")
        centre = methods.resolve([label], None)[0].lr
        assert e["grid"] == tuning.grid(centre, 3, 10) and set(e["dev_scores"]) == set(e["grid"])
        stage1 = {lr: v for lr, v in e["dev_scores"].items()}
        ext = e.get("edge_extension")
        if tuning.choose(stage1) in (min(stage1), max(stage1)):  # an edge best: one or two more points past it
            extended += 1
            assert 1 <= len(ext["grid"]) <= 2 and set(ext["dev_scores"]) == set(ext["grid"])
            upward = tuning.choose(stage1) == max(stage1)
            ladder = sorted(e["grid"] + ext["grid"], reverse=not upward)
            assert ladder[-len(ext["grid"]):] == ext["grid"]  # past that edge, in order
            ratios = [b / a for a, b in zip(ladder, ladder[1:])]
            assert ratios == pytest.approx([step if upward else 1 / step] * len(ratios), rel=0.01)
            if len(ext["grid"]) == 1:  # stopped: the new point is no longer the best at the edge
                assert tuning.choose({**stage1, **ext["dev_scores"]}) != ext["grid"][0]
            stage1.update(ext["dev_scores"])
        else:
            assert ext is None
        best1 = tuning.choose(stage1)
        assert e["stage1_lr"] == best1
        s2 = e["stage2"]
        assert s2["grid"] == pytest.approx([best1 / math.sqrt(step), best1 * math.sqrt(step)], rel=0.01)
        assert set(s2["dev_scores"]) == set(s2["grid"])
        every = {**stage1, **s2["dev_scores"]}
        assert e["lr"] == tuning.choose(every)
        assert e["at_grid_edge"] == (e["lr"] in (min(every), max(every)))
        assert len([r for r in rows if r["method"].startswith(f"{label}[")]) == len(every)
    assert extended  # this tiny grid puts at least one best at an edge (both, on the smoke data)
    head = data["methods"]["head"]

    run = run_bench("run", *common, "--methods", "head", "--precision", "bf16", "--out", str(tmp_path / "bf16"),
                    "--no-report", "--db", str(tmp_path / "h.db"), env=env)
    assert run.returncode == 0, run.stderr
    row = json.loads((tmp_path / "bf16" / "results.jsonl").read_text().splitlines()[-1])
    head_file = methods.resolve(["head"], None)[0].lr
    assert row["config"]["lr"] == head_file
    assert row["info"]["lr_source"] == f"method file (tuned for {SMOKE_MODEL}, fp32; this run: {SMOKE_MODEL}, bf16)"
    hints = [line for line in run.stderr.splitlines() if "python -m bench tune" in line]
    assert len(hints) == 1 and hints[0].endswith(
        "python -m bench tune --suite smoke --tasks sentiment --budget quick --methods head --precision bf16"), hints

    same = run_bench("run", *common, "--methods", "head", "--out", str(tmp_path / "fp32"), "--no-report",
                     "--db", str(tmp_path / "h.db"), env=env)
    assert same.returncode == 0, same.stderr
    row = json.loads((tmp_path / "fp32" / "results.jsonl").read_text().splitlines()[-1])
    assert (row["config"]["lr"], row["info"]["lr_source"]) == (head["lr"], "tuned")
    assert "python -m bench tune" not in same.stderr


def test_a_flat_score_landscape_is_not_extended_past_its_edge():
    """Every rate scoring the same (a model that learned nothing at any rate) puts the tie-break's smaller rate at the
    grid's edge; that is no slope to follow, so no edge extension is run."""
    from bench.judge.tuning import EDGE, STAGE2, Choice, grid
    from methods import METHODS
    rates = grid(METHODS["lora"].lr, 5, 100.0)
    flat = Choice(METHODS["lora"], {lr: [0.0] for lr in rates}, min(rates), {"grid": rates})
    assert flat.at_grid_edge and flat.next_rates(EDGE, 5, 100.0) == []
    assert len(flat.next_rates(STAGE2, 5, 100.0)) == 2  # stage 2 still looks around the choice
    sloped = Choice(METHODS["lora"], {lr: [i / 10] for i, lr in enumerate(rates)}, max(rates), {"grid": rates})
    assert sloped.next_rates(EDGE, 5, 100.0) != []
