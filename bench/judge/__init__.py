"""Judgement on stored results: per-example statistics and intervals, ties, regression verdicts, `compare`,
`recommend`, Pareto sets and learning-rate tuning. Reads records; never runs a model."""
