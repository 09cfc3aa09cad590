"""Planning and running a grid: the executors (local processes, Ray), the worker that runs one (task x method
x seed) in its own process, and the one training loop every method shares."""
