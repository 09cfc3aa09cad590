"""Where results live: a folder's records (results.jsonl), the SQLite history across invocations, a run's
identity (configuration id) and its saved per-example predictions."""
