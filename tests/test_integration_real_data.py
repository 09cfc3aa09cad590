"""Real MiniLM weights on real SST-2 and CoNLL-2003, with the tiny `smoke` budget."""
import pandas as pd
import pytest
from conftest import run_bench

pytestmark = pytest.mark.integration


def test_sst2_lora_on_real_data(data_dir, tmp_path):
    run_bench("run", "--suite", "nlp", "--tasks", "sst2", "--methods", "lora,head", "--budget", "smoke",
              "--data-dir", str(data_dir), "--out", str(tmp_path), check=True)
    wide = pd.read_csv(tmp_path / "results_wide.csv").set_index("method")
    assert (wide.status == "ok").all(), wide.error
    assert wide.total_params.min() > 20e6  # the pretrained 22.7M-parameter MiniLM, not the tiny test model
    assert wide.eval_examples.eq(64).all()
    # Scored on the same 64 sentences: accuracy and the majority rate are counts out of 64.
    for share in (wide.accuracy, wide.majority_rate):
        assert ((share * 64).round(9) % 1 == 0).all(), share
    assert wide.majority_rate.nunique() == 1


def test_conll2003_lora_on_real_data(data_dir, tmp_path):
    run_bench("run", "--suite", "nlp", "--tasks", "conll2003", "--methods", "lora", "--budget", "smoke",
              "--data-dir", str(data_dir), "--out", str(tmp_path), "--no-report", check=True)
    row = pd.read_csv(tmp_path / "results_wide.csv").iloc[0]
    assert row.status == "ok", row.error
    assert row.total_params > 20e6 and row.eval_examples == 64
    # Entity scores and one F1 per entity type of the data's own IOB2 tag set; no word lost to truncation.
    p, r = row.entity_precision, row.entity_recall
    assert row.entity_f1 == pytest.approx(2 * p * r / (p + r) if p + r else 0.0)  # their harmonic mean
    assert all(f"f1_{t}" in row for t in ("PER", "ORG", "LOC", "MISC"))
    assert row.truncated_words == 0 and row.train_tokens_per_s > 0
