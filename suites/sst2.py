"""SST-2 (GLUE): binary sentiment of movie-review sentences; accuracy on the 872 validation sentences."""
from suites.base import Budget
from suites.text_classification import TextClassificationTask

TASK = TextClassificationTask(
    name="sst2",
    suite="nlp",
    metric="accuracy",
    default_model="sentence-transformers/all-MiniLM-L6-v2",
    eval_split="validation",  # GLUE's test labels are hidden: the 872 validation sentences are the test here
    dev_examples=1000,  # carved from train (67,349): tuning scores here, never on the validation split
    data_subdir="sst2",
    hub_id="glue",
    hub_config="sst2",
    budgets={
        # A tiny real-data run for integration tests.
        "smoke": Budget(train_examples=64, batch_size=16, max_length=64, eval_examples=64,
                        latency_samples=5, untimed_steps=1, log_every=1),
        # Sized for a grid on CPU in minutes (docs/ has the measured times).
        "quick": Budget(train_examples=6000, batch_size=16, max_length=64, latency_samples=50),
        "full": Budget(train_examples=None, epochs=2, batch_size=32, max_length=128, latency_samples=100),
    },
)
