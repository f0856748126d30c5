"""A task's parameter grid: list values expand to a Cartesian product (pure; used by spec and plan).

A parameter whose single value is itself a list (`Task.list_parameters`: the attack's budgets, the ball's
radii) takes a flat list as one value and a list of lists as a grid; every other list is a grid axis.
"""

from __future__ import annotations

import itertools
from typing import Any, Protocol


class GridTask(Protocol):
    """What the grid needs of a study's task entry (survey.spec.TaskSpec)."""

    name: str
    params: dict[str, Any]


def list_valued(task_name: str) -> set[str]:
    """Parameters whose single value is itself a list, over every class the task name can run (variants
    included)."""
    from survey.tasks import task_class, variants

    classes = {task_class(task_name), *variants(task_name).values()}
    return set().union(*(cls.list_parameters() for cls in classes))


def expand_grid(task: GridTask) -> list[dict[str, Any]]:
    """Cartesian product over list-valued parameters; parameters that take a list need a list of lists."""
    lists = list_valued(task.name)
    axes: list[tuple[str, list[Any]]] = []
    for key in sorted(task.params):
        value = task.params[key]
        if isinstance(value, list) and (key not in lists or (value and isinstance(value[0], list))):
            axes.append((key, value))
        else:
            axes.append((key, [value]))
    return [dict(zip([k for k, _ in axes], combo)) for combo in itertools.product(*(v for _, v in axes))]


__all__ = ["expand_grid", "list_valued"]
