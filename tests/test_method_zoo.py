"""Methods declared as files: the zoo, the user's own files and sweeps, and config ids that tell them apart."""
import json

import pandas as pd
import pytest
from conftest import run_bench

import methods
from bench.core.errors import UsageError
from bench.results.identity import differences
from methods import spec as specs

LORA_FILE = """\
description: my LoRA
kind: peft
peft_type: LORA
lr: 2.0e-3
config: {r: 4, lora_alpha: 8}
targets: {transformer: attention, cnn: pointwise}
"""


def test_every_shipped_file_is_a_valid_method_with_a_reason_wherever_it_does_not_apply():
    assert len(methods.METHODS) >= 20
    for name, spec in methods.METHODS.items():
        assert spec.name == name and spec.description and spec.lr > 0
        assert spec.source.endswith(f"zoo/{name}.yaml")
        if spec.kind == "peft" and spec.peft_type not in ("PREFIX_TUNING", "PROMPT_TUNING", "P_TUNING"):
            assert set(spec.targets) | set(spec.not_on) == set(specs.FAMILIES), name  # every family covered
        for reason in spec.not_on.values():
            assert len(reason) > 20


def test_a_bad_file_is_a_one_line_error(tmp_path):
    bad = tmp_path / "bad.yaml"
    for text, message in [("kind: peft\n", "needs a peft_type"), ("kind: magic\n", "unknown kind 'magic'"),
                          ("kind: full\nrank: 3\n", "unknown field(s) rank"),
                          ("kind: peft\npeft_type: LORA\ntargets: {rnn: all-linear}\n", "unknown architecture family rnn")]:
        bad.write_text(text)
        with pytest.raises(UsageError, match=message.replace("(", r"\(").replace(")", r"\)")) as err:
            specs.load(bad)
        assert "\n" not in str(err.value)


def test_every_shipped_default_says_where_it_came_from_and_provenance_is_in_no_config_id(tmp_path):
    """Issue 24: a default first picked on an evaluation split must say so in its file; `sources` is provenance
    only, so rewording it changes neither the config id nor the tuned rates' method digest."""
    from bench.judge.tuning import method_digest
    for name, spec in methods.METHODS.items():
        if spec.kind != "none":  # zero-shot trains nothing: no rate
            assert spec.sources.get("lr"), f"{name}: no sources.lr"
    orth = methods.METHODS["adalora"].sources["orth_reg_weight"]
    assert "validation split" in orth and "dev split" in orth  # first picked on an eval split, re-derived on dev
    (tmp_path / "a").mkdir(), (tmp_path / "b").mkdir()
    mine, other = tmp_path / "a" / "mine.yaml", tmp_path / "b" / "mine.yaml"
    mine.write_text(LORA_FILE + 'sources: {lr: "first choice"}\n')
    other.write_text(LORA_FILE + 'sources: {lr: "tuned on my dev set", r: "the LoRA paper"}\n')
    a, b = specs.load(mine), specs.load(other)
    assert b.sources["r"] == "the LoRA paper"
    assert a.declared() == b.declared() and method_digest(a) == method_digest(b)
    other.write_text(LORA_FILE + 'sources: {dropout: "a guess"}\n')
    message = r"sources name dropout, which the file does not set \(valid: lora_alpha, lr, r\)"
    with pytest.raises(UsageError, match=message):
        specs.load(other)


def test_a_peft_adapter_config_is_accepted_as_it_is(tmp_path):
    folder = tmp_path / "my-adapter"
    folder.mkdir()
    (folder / "adapter_config.json").write_text(json.dumps({
        "peft_type": "LORA", "r": 16, "lora_alpha": 32, "target_modules": ["query", "value"], "task_type": None,
        "base_model_name_or_path": "x", "inference_mode": True, "modules_to_save": None}))
    spec = specs.load(folder / "adapter_config.json")
    assert (spec.name, spec.kind, spec.peft_type) == ("my-adapter", "peft", "LORA")
    assert spec.config == {"r": 16, "lora_alpha": 32}
    assert spec.targets == {f: ["query", "value"] for f in specs.FAMILIES}


def test_set_overrides_and_sweeps_expand_into_labelled_configurations():
    swept = methods.resolve(["lora", "head"], ["lora.r=4,8,16", "lora.lr=1e-3"])
    assert [s.label for s in swept] == ["lora[r=4,lr=0.001]", "lora[r=8,lr=0.001]", "lora[r=16,lr=0.001]", "head"]
    assert [s.config["r"] for s in swept[:3]] == [4, 8, 16] and swept[0].lr == 1e-3
    assert methods.METHODS["lora"].config["r"] == 8  # the registry is untouched
    assert len({json.dumps(s.declared(), sort_keys=True) for s in swept}) == 4
    for bad, message in [(["dora.r=4"], "not among those run"), (["lora.r"], "bad --set")]:
        with pytest.raises(UsageError, match=message):
            methods.resolve(["lora"], bad)


def test_differences_name_the_changed_fields():
    assert differences({"method": {"config": {"r": 4}}, "lr": 1}, {"method": {"config": {"r": 8}}, "lr": 1}) == \
        ["method.config.r: 4 -> 8"]


def test_bench_list_shows_every_method_with_where_it_applies():
    proc = run_bench("list", check=True)
    lines = proc.stdout.splitlines()
    for name in methods.METHODS:
        assert any(line.split()[:1] == [name] for line in lines), name
    assert "not on cnn: VeRA adapts nn.Linear layers only" in proc.stdout


def test_a_users_method_file_and_a_sweep_run_through_the_cli_and_a_changed_default_is_no_regression(tmp_path):
    mine = tmp_path / "mine.yaml"
    mine.write_text(LORA_FILE)
    db = tmp_path / "history.db"
    out = tmp_path / "sweep"
    run_bench("run", "--suite", "smoke", "--tasks", "sentiment", "--methods", str(mine), "--set", "mine.r=2,4,8",
              "--out", str(out), "--db", str(db), "--no-report", check=True)
    wide = pd.read_csv(out / "results_wide.csv")
    assert sorted(wide.method) == ["mine[r=2]", "mine[r=4]", "mine[r=8]"] and (wide.status == "ok").all()
    assert wide.config_id.nunique() == 3
    trainable = wide.set_index("method").trainable_params
    assert trainable["mine[r=2]"] < trainable["mine[r=4]"] < trainable["mine[r=8]"]
    record = next(r for r in map(json.loads, (out / "results.jsonl").read_text().splitlines())
                  if r["method"] == "mine[r=2]")  # runs go in a random order
    assert record["config"]["method"]["config"]["r"] == 2 and record["info"]["lr_source"] == "default"
    assert record["info"]["peft_config"]["r"] == 2 and record["config"]["budget"]["batch_size"] > 0

    # The method's default changes (r 4 -> 16): the next run is another configuration, not a regression.
    night = lambda folder: run_bench("run", "--suite", "smoke", "--tasks", "sentiment", "--methods", str(mine),
                                     "--out", str(tmp_path / folder), "--db", str(db), "--no-report", check=True)
    night("before")
    mine.write_text(LORA_FILE.replace("r: 4", "r: 16"))
    night("after")
    proc = run_bench("compare", "--db", str(db), "--baseline", str(tmp_path / "before"),
                     "--candidate", str(tmp_path / "after"))
    # Not a regression, and not a clean night either: the only configuration changed, so nothing was gated.
    assert proc.returncode == 1 and proc.stdout.startswith("NOT CHECKED: every configuration changed"), proc.stdout
    assert "reconfigured" in proc.stdout and "method.config.r: 4 -> 16" in proc.stdout
