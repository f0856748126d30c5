"""Instability tests, one module per test, known to the engine only by registered name.

`make_task("attack", preset="deepmri", eta=1e-3)` returns a task object; `task(ctx, generator)`
returns rows and tensors. Task modules are imported on first use so the registry is complete.
"""

from __future__ import annotations

from importlib import import_module

from survey.tasks import base
from survey.tasks.base import TASKS, TaskContext, TaskResult, generator_for, register, seed_from_id

#: Modules whose import registers tasks; ones not written yet are skipped.
TASK_MODULES: tuple[str, ...] = ("survey.tasks.attack", "survey.tasks.ball", "survey.tasks.insertion", "survey.tasks.sweep")


def load_tasks() -> None:
    """Import every task module so `TASKS` holds every registered task."""
    for module in TASK_MODULES:
        try:
            import_module(module)
        except ModuleNotFoundError as err:
            if err.name != module:  # a real missing dependency inside the module: surface it
                raise


def make_task(name: str, **params):
    """Build registered task `name` from keyword hyper-parameters; see `survey.tasks.base.make_task`."""
    load_tasks()
    return base.make_task(name, **params)


def task_names() -> list[str]:
    load_tasks()
    return base.task_names()


__all__ = ["TASKS", "TASK_MODULES", "TaskContext", "TaskResult", "generator_for", "load_tasks",
           "make_task", "register", "seed_from_id", "task_names"]
