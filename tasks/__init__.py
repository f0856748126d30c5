"""Instability tests, one module per test, known to the engine only by registered name.

`make_task("attack", preset="deepmri", eta=1e-3)` returns a `Task`; `task(ctx, generator)` returns
rows and tensors. Task modules are imported on first use so the registry is complete.
Registry helpers for the engine, the spec and the report: `task_names()`, `task_class(name)`,
`tables()` (table -> the task classes writing it) and `table_columns(table)` (its declared columns).
"""

from __future__ import annotations

import os
from importlib import import_module

from survey.tasks import base
from survey.tasks.base import (LABELS, PER_IMAGE, TASKS, Column, Task, TaskContext, TaskResult, generator_for,
                               register, seed_from_id)

#: Modules whose import registers tasks (a new task kind: its module plus one line here).
TASK_MODULES: tuple[str, ...] = ("survey.tasks.attack", "survey.tasks.ball", "survey.tasks.insertion",
                                 "survey.tasks.sweep",
                                 "survey.tasks.severity",
                                 "survey.tasks.rare",
                                 "survey.tasks.spectrum",
                                 "survey.tasks.detect")
#: Environment variable naming extra task modules (comma-separated, importable on every worker's path,
#: e.g. through PYTHONPATH): a researcher's own task kind without editing this package.
PLUGIN_VARIABLE = "SURVEY_TASK_MODULES"


def task_modules() -> tuple[str, ...]:
    """The built-in task modules, then those named in $SURVEY_TASK_MODULES."""
    extra = [m.strip() for m in os.environ.get(PLUGIN_VARIABLE, "").split(",") if m.strip()]
    return TASK_MODULES + tuple(m for m in extra if m not in TASK_MODULES)


def load_tasks() -> None:
    """Import every task module so `TASKS` holds every registered task."""
    for module in task_modules():
        try:
            import_module(module)
        except ModuleNotFoundError as err:
            if err.name != module:  # a real missing dependency inside the module: surface it
                raise


def make_task(name: str, **params) -> Task:
    """Build registered task `name` from keyword hyper-parameters; see `survey.tasks.base.make_task`."""
    load_tasks()
    return base.make_task(name, **params)


def task_names() -> list[str]:
    load_tasks()
    return base.task_names()


def task_class(name: str) -> type[Task]:
    """The class registered as `name` (ValueError listing the known tasks otherwise)."""
    load_tasks()
    return base.task_class(name)


def variants(name: str) -> dict[str, type[Task]]:
    """The classes task `name` runs, by the value of its `variant_key` ({} without variants)."""
    load_tasks()
    return base.variants(name)


def tables() -> dict[str, list[type[Task]]]:
    """Store table -> the task classes writing it, in task-name order."""
    load_tasks()
    out: dict[str, list[type[Task]]] = {}
    for name in base.task_names():
        for cls in dict.fromkeys([TASKS[name], *base.VARIANTS.get(name, {}).values()]):
            out.setdefault(cls.table, []).append(cls)
    return out


def table_columns(table: str) -> dict[str, Column]:
    """The union of the columns declared by the tasks writing `table` (name -> Column)."""
    classes = tables().get(table)
    if not classes:
        raise ValueError(f"unknown table {table!r}; tables are {sorted(tables())}")
    out: dict[str, Column] = {}
    for cls in classes:
        for name, column in cls.columns.items():
            out.setdefault(name, column)
    return out


__all__ = ["Column", "LABELS", "PER_IMAGE", "PLUGIN_VARIABLE", "TASKS", "TASK_MODULES", "Task", "TaskContext", "TaskResult",
           "generator_for", "load_tasks", "make_task", "register", "seed_from_id", "table_columns", "tables",
           "task_class", "task_modules", "task_names", "variants"]
