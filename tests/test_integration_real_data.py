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
    assert wide.eval_examples.eq(64).all() and wide.accuracy.between(0, 1).all()


def test_conll2003_lora_on_real_data(data_dir, tmp_path):
    run_bench("run", "--suite", "nlp", "--tasks", "conll2003", "--methods", "lora", "--budget", "smoke",
              "--data-dir", str(data_dir), "--out", str(tmp_path), "--no-report", check=True)
    row = pd.read_csv(tmp_path / "results_wide.csv").iloc[0]
    assert row.status == "ok", row.error
    assert row.total_params > 20e6 and row.eval_examples == 64
    # Entity scores and one F1 per entity type of the data's own IOB2 tag set; no word lost to truncation.
    assert 0 <= row.entity_f1 <= 1 and 0 <= row.entity_precision <= 1 and 0 <= row.entity_recall <= 1
    assert all(f"f1_{t}" in row for t in ("PER", "ORG", "LOC", "MISC"))
    assert row.truncated_words == 0 and row.train_tokens_per_s > 0
