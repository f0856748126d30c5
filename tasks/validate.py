"""Shared validators for task hyper-parameters: one place for the messages and the normalisation.

Each takes the task, the parameter name and constraints, reads the value, checks it and returns it
normalised; integers and lists are stored back normalised (int; tuple of converted items), numbers
are stored as given (so a task's `params()` echoes the study file). Errors
are ValueError naming the task class and the parameter, e.g. "Ball.draws must be an integer >= 1,
got 0", so a study file's author sees which field is wrong. Called from a task's `__post_init__`.
"""

from __future__ import annotations

import math
import numbers
from typing import Any, Callable, Iterable


def _name(task: Any, key: str) -> str:
    return f"{type(task).__name__}.{key}"


def _is_number(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _bounds(low: float | None, high: float | None, low_open: bool, high_open: bool) -> str:
    parts = []
    if low is not None:
        parts.append(f"{'>' if low_open else '>='} {low:g}")
    if high is not None:
        parts.append(f"{'<' if high_open else '<='} {high:g}")
    return " and ".join(parts)


def _within(value: float, low, high, low_open: bool, high_open: bool) -> bool:
    if low is not None and not (value > low if low_open else value >= low):
        return False
    return high is None or (value < high if high_open else value <= high)


def integer(task: Any, key: str, *, low: int | None = None, high: int | None = None) -> int:
    """An integer in [low, high] (a float with an integral value is accepted; bools are not)."""
    value = getattr(task, key)
    if not _is_number(value) or not math.isfinite(value) or int(value) != value \
            or not _within(value, low, high, False, False):
        bound = _bounds(low, high, False, False)
        raise ValueError(f"{_name(task, key)} must be an integer{' ' + bound if bound else ''}, got {value!r}")
    setattr(task, key, int(value))
    return int(value)


def number(task: Any, key: str, *, low: float | None = None, high: float | None = None, low_open: bool = False,
           high_open: bool = False, optional: bool = False) -> float | None:
    """A finite number within the bounds (open or closed); None allowed when `optional`."""
    value = getattr(task, key)
    if value is None and optional:
        return None
    if not _is_number(value) or not math.isfinite(value) or not _within(value, low, high, low_open, high_open):
        bound = _bounds(low, high, low_open, high_open)
        extra = " or None" if optional else ""
        raise ValueError(f"{_name(task, key)} must be a finite number{' ' + bound if bound else ''}{extra}, "
                         f"got {value!r}")
    return float(value)


def positive(task: Any, key: str) -> float:
    """A finite number > 0."""
    return number(task, key, low=0.0, low_open=True)


def choice(task: Any, key: str, choices: Iterable[Any]) -> Any:
    """One of `choices`."""
    value, choices = getattr(task, key), list(choices)
    if isinstance(value, list) or value not in choices:
        raise ValueError(f"{_name(task, key)}: {value!r} is not one of {choices}")
    return value


def sequence(task: Any, key: str, item: Callable[[Any], bool], what: str, *, convert: Callable = float,
             nonempty: bool = False) -> tuple:
    """A list (or tuple) whose items pass `item`, stored as a tuple of `convert`ed items; `what` says
    what the items must be in the error ("numbers in (0, 1]")."""
    value = getattr(task, key)
    if isinstance(value, (str, bytes, dict)) or not isinstance(value, Iterable):
        raise ValueError(f"{_name(task, key)} must be a list of {what}, got {value!r}")
    items = list(value)
    bad = [v for v in items if not item(v)]
    if bad or (nonempty and not items):
        raise ValueError(f"{_name(task, key)} must be a {'non-empty ' if nonempty else ''}list of {what}, "
                         f"got {items!r}")
    converted = tuple(convert(v) for v in items)
    setattr(task, key, converted)
    return converted


def numbers_in(low: float | None = None, high: float | None = None, *, low_open: bool = False,
               high_open: bool = False) -> Callable[[Any], bool]:
    """Item check for `sequence`: a finite number within the bounds."""
    return lambda v: _is_number(v) and math.isfinite(v) and _within(v, low, high, low_open, high_open)


def integers_in(low: int | None = None, high: int | None = None) -> Callable[[Any], bool]:
    """Item check for `sequence`: an integer (integral float accepted) within the bounds."""
    return lambda v: _is_number(v) and math.isfinite(v) and int(v) == v and _within(v, low, high, False, False)


def flag(task: Any, key: str) -> bool:
    """A bool."""
    value = getattr(task, key)
    if not isinstance(value, bool):
        raise ValueError(f"{_name(task, key)} must be true or false, got {value!r}")
    return value


def text(task: Any, key: str) -> str:
    """A string."""
    value = getattr(task, key)
    if not isinstance(value, str):
        raise ValueError(f"{_name(task, key)} must be a string, got {value!r}")
    return value


__all__ = ["choice", "flag", "integer", "integers_in", "number", "numbers_in", "positive", "sequence", "text"]
