"""The suite registry: every `suites/<name>.yaml` is a suite listing its tasks; a task is a file (suites/tasks/,
suites/taskfile.py), except the smoke tasks, whose generated data and config-built models are code.

A user's own task or suite is a path: `--tasks path/to/task.yaml` (mixed with shipped names) or `--suite
path/to/suite.yaml`. Reading a suite needs no torch.
"""
from __future__ import annotations

from pathlib import Path

from bench.core.errors import UsageError
from suites import smoke, smoke_llm, smoke_ner, smoke_vision, taskfile
from suites.base import Budget, Task

HERE = Path(__file__).resolve().parent
CODE_TASKS: dict[str, Task] = {t.name: t for t in smoke.TASKS + [smoke_ner.TASK, smoke_vision.TASK] + smoke_llm.TASKS}
BUDGETS = ["smoke", "quick", "full"]
SUITE_FIELDS = ("description", "tasks")


def is_path(ref: str) -> bool:
    return ref.endswith((".yaml", ".yml")) or "/" in ref


def load_suite(path: Path) -> list[Task]:
    """The tasks a suite file lists (paths relative to it, or the names of tasks in code), named after the file."""
    import yaml
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as e:
        raise UsageError(f"cannot read suite file {str(path)!r} ({getattr(e, 'strerror', None) or e})") from e
    unknown = sorted(set(data) - set(SUITE_FIELDS)) if isinstance(data, dict) else ["(not a mapping)"]
    if unknown or not isinstance(data.get("tasks"), list) or not data["tasks"]:
        raise UsageError(f"{path}: a suite file needs `tasks:` (a list of task files or names)"
                         + (f"; unknown field(s) {', '.join(unknown)} (valid: {', '.join(SUITE_FIELDS)})"
                            if unknown else ""))
    name = path.stem
    tasks = []
    for ref in map(str, data["tasks"]):
        if is_path(ref):
            tasks.append(taskfile.load(ref if Path(ref).is_absolute() else path.parent / ref, suite=name))
        elif ref in CODE_TASKS:
            tasks.append(CODE_TASKS[ref])
        else:
            raise UsageError(f"{path}: unknown task {ref!r} (valid: a task file path, or {', '.join(CODE_TASKS)})")
    return tasks


ORDER = ("nlp", "vision", "llm")  # as `bench list` shows them; other suites follow by name, smoke last
SUITES: dict[str, list[Task]] = {p.stem: load_suite(p) for p in sorted(
    HERE.glob("*.yaml"), key=lambda p: (p.stem.startswith("smoke"), ORDER.index(p.stem) if p.stem in ORDER else 9,
                                        p.stem))}


def get_suite(name: str) -> list[Task]:
    """A shipped suite by name, or a suite file by path."""
    if is_path(name):
        if not Path(name).is_file():
            raise UsageError(f"suite file {name!r} not found")
        return load_suite(Path(name))
    if name not in SUITES:
        raise UsageError(f"unknown suite {name!r} (valid: {', '.join(SUITES)}, or a path to a suite file)")
    return SUITES[name]


def suite_name(name: str) -> str:
    """The suite's name in records: a suite file's stem, else the name."""
    return Path(name).stem if is_path(name) else name


def get_task(suite: str, name: str) -> Task:
    tasks = {t.name: t for t in get_suite(suite)}
    if name not in tasks:
        raise UsageError(f"unknown task {name!r} in suite {suite} (valid: {', '.join(tasks)})")
    return tasks[name]


def find_tasks(refs: list[str] | None, suite: str | None) -> list[Task]:
    """The tasks of a grid: `refs` (task names or task file paths; None: every task of `suite`). A name is looked
    up in `suite`, or in every shipped suite without one; a file given with --suite joins that suite."""
    if suite is None and not refs:
        raise UsageError("give --suite (valid: " + ", ".join(SUITES) + ", or a suite file) or --tasks (task names "
                         "or task files)")
    in_suite = get_suite(suite) if suite else None
    if not refs:
        return list(in_suite)
    tasks = []
    for ref in refs:
        if is_path(ref):
            if not Path(ref).expanduser().is_file():
                raise UsageError(f"task file {ref!r} not found")
            tasks.append(taskfile.load(ref, suite=suite_name(suite) if suite else None))
            continue
        pool = in_suite if in_suite is not None else [t for ts in SUITES.values() for t in ts]
        found = [t for t in pool if t.name == ref]
        if not found:
            names = list(dict.fromkeys(t.name for t in pool))
            raise UsageError(f"unknown task {ref!r}{' in suite ' + suite if suite else ''} (valid: {', '.join(names)}, "
                             f"or a path to a task file)")
        tasks.append(found[0])
    return tasks


def task_of(spec: dict) -> Task:
    """The task a run's spec names: its task file when it has one (a user's task), else the registry's."""
    if spec.get("task_file"):
        return taskfile.load(spec["task_file"], suite=spec["suite"])
    return get_task(spec["suite"], spec["task"])


__all__ = ["SUITES", "BUDGETS", "Budget", "Task", "UsageError", "get_suite", "get_task", "find_tasks", "task_of"]
