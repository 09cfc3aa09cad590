"""Real MiniLM weights on real SST-2, with the tiny `smoke` budget."""
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
