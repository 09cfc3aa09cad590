"""The suite registry: suite name -> its tasks. Add a task by adding its module to a list below."""
from __future__ import annotations

from bench.core.errors import UsageError
from suites import cifar10, conll2003, imagenette, smoke, smoke_ner, smoke_vision, sst2
from suites.base import Budget, Task

SUITES: dict[str, list[Task]] = {
    "nlp": [sst2.TASK, conll2003.TASK],
    "vision": [cifar10.TASK, imagenette.TASK],
    "smoke": smoke.TASKS + [smoke_ner.TASK, smoke_vision.TASK],
}
BUDGETS = ["smoke", "quick", "full"]


def get_suite(name: str) -> list[Task]:
    if name not in SUITES:
        raise UsageError(f"unknown suite {name!r} (valid: {', '.join(SUITES)})")
    return SUITES[name]


def get_task(suite: str, name: str) -> Task:
    tasks = {t.name: t for t in get_suite(suite)}
    if name not in tasks:
        raise UsageError(f"unknown task {name!r} in suite {suite} (valid: {', '.join(tasks)})")
    return tasks[name]


__all__ = ["SUITES", "BUDGETS", "Budget", "Task", "UsageError", "get_suite", "get_task"]
