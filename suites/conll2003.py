"""CoNLL-2003 English NER: entity-level micro F1 (seqeval, CoNLL rules) on the 3,453 test sentences."""
from suites.base import Budget
from suites.token_classification import TokenClassificationTask

TASK = TokenClassificationTask(
    name="conll2003",
    suite="nlp",
    metric="entity_f1",
    default_model="sentence-transformers/all-MiniLM-L6-v2",
    eval_split="test",
    dev_split="validation",  # 3,250 sentences: tuning and early stopping score here, never on test
    data_subdir="conll2003",
    # The Hub's `conll2003` is a loading script, which datasets >= 4 refuses; its Parquet conversion loads.
    hub_id="eriktks/conll2003",
    hub_kwargs={"revision": "refs/convert/parquet", "data_dir": "conll2003"},
    budgets={
        # A tiny real-data run for integration tests.
        "smoke": Budget(train_examples=64, batch_size=16, max_length=64, eval_examples=64,
                        latency_samples=5, untimed_steps=1, log_every=1),
        # Sized for a grid on CPU in minutes (docs/ has the measured times); 64 pieces hold nearly every sentence.
        "quick": Budget(train_examples=4000, batch_size=16, max_length=64, latency_samples=50),
        # The whole training set; 2 epochs; 128 pieces hold all but 1 training sentence.
        "full": Budget(train_examples=None, epochs=2, batch_size=32, max_length=128, latency_samples=100),
    },
    note=("The default MiniLM encoder is uncased, which costs NER some F1 (capitalisation marks names); pass a "
          "cased encoder with --model for higher absolute scores."),
)
