"""What a task takes and writes, for people: every parameter with its default, unit and meaning.

A parameter's meaning comes from the class's `parameter_help` (name -> Column(meaning, unit)) where the
task declares one, else from its docstrings (the class's and its bases'), where parameters are written
as "name: meaning" or "name, other: meaning" (the house style of task docstrings). `survey tasks show`
prints this; the contract test requires a meaning for every parameter of every registered task.
"""

from __future__ import annotations

import dataclasses
import inspect
import re
from typing import Any, NamedTuple

from survey.tasks.base import Column, Task

_MARKER = re.compile(r"(?<![\w.`'\"])([a-z_][a-z0-9_]*(?:\s*[,/]\s*[a-z_][a-z0-9_]*)*)\s*:\s")
_SEPARATOR = re.compile(r"\s*[,/]\s*")


class Parameter(NamedTuple):
    name: str
    default: Any
    type: str
    meaning: str
    unit: str


def _docs(cls: type) -> list[str]:
    out = []
    for klass in cls.__mro__:
        if klass in (Task, object) or not klass.__dict__.get("__doc__"):
            continue
        out.append(" ".join(inspect.cleandoc(klass.__doc__).split()))
    return out


def _from_docstrings(cls: type, names: set[str]) -> dict[str, str]:
    """name -> meaning parsed from "name[, name]: meaning" segments of the class's docstrings."""
    found: dict[str, str] = {}
    for text in _docs(cls):
        markers = [m for m in _MARKER.finditer(text)
                   if all(n in names for n in _SEPARATOR.split(m.group(1).strip()))]
        for i, m in enumerate(markers):
            end = markers[i + 1].start() if i + 1 < len(markers) else len(text)
            meaning = text[m.end():end].strip().rstrip(";,")
            for n in _SEPARATOR.split(m.group(1).strip()):
                found.setdefault(n, meaning)
    # otherwise the sentence that names the parameter in backticks
    for text in _docs(cls):
        for sentence in re.split(r"(?<=[.;])\s+", text):
            for n in names - set(found):
                if f"`{n}`" in sentence:
                    found[n] = sentence.strip()
    return found


def _default(field: dataclasses.Field) -> Any:
    if field.default is not dataclasses.MISSING:
        return field.default
    if field.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
        return field.default_factory()  # type: ignore[misc]
    return None


def parameters(cls: type) -> list[Parameter]:
    """Every keyword parameter of a task class, in declaration order."""
    fields = [f for f in dataclasses.fields(cls) if f.init] if dataclasses.is_dataclass(cls) else []
    names = {f.name for f in fields}
    declared: dict[str, Column] = dict(getattr(cls, "parameter_help", {}) or {})
    parsed = _from_docstrings(cls, names)
    out = []
    for f in fields:
        column = declared.get(f.name)
        meaning = column.meaning if column else parsed.get(f.name, "")
        unit = column.unit if column else ""
        out.append(Parameter(f.name, _default(f), str(f.type), meaning, unit))
    if hasattr(cls, "preset"):
        out.append(Parameter("preset", None, "str", "a named parameter set (the class's presets), fields overridden", ""))
    return out


__all__ = ["Parameter", "parameters"]
