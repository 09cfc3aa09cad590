"""The vocabulary every layer shares: errors, units, metric definitions, atomic file writes, where data and
models come from, and the on-disk cache of encoded data. Imports nothing else from the project."""
