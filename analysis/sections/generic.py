"""The section a table gets when it has no module of its own: built from the task registry and the rows.

Methods: the task class's title and docstring, its columns (meaning, unit) when the class declares
them, and the parameters as recorded in the rows (the task's hyper-parameters found among the columns,
else the columns constant within every unit) with row and image counts per network and dataset.
Results: an estimate table for every study criterion naming the table.
"""

from __future__ import annotations

import dataclasses
import inspect
from typing import Any, Sequence

from survey.analysis.db import execute, sql_identifier
from survey.analysis.sections.base import Context, Definition, Section, format_number, h3, not_run, p

#: Columns every row carries (engine bookkeeping and kept-tensor references): never parameters.
BOOKKEEPING = frozenset({"unit_id", "network", "dataset", "task", "repeat", "run_id", "image_id", "image_index",
                         "tensor_file", "tensor_sha256", "tensor_index"})
MAX_PARAMS = 10


def _first_paragraph(text: str | None) -> str:
    text = inspect.cleandoc(text or "")
    return " ".join(text.split("\n\n", 1)[0].split())


def _hyper_parameters(cls: type) -> list[str]:
    if dataclasses.is_dataclass(cls):
        return [f.name for f in dataclasses.fields(cls) if f.init]
    return [n for n in inspect.signature(cls).parameters if n not in ("self", "args", "kwargs")]


class GenericSection(Section):
    """Title, parameters, counts and the criteria's estimates for any table (see the module docstring)."""

    classes: tuple[type, ...] = ()
    #: name -> (meaning, unit): the table's declared columns (`survey.tasks.table_columns`)
    columns: dict[str, Any] = {}

    @classmethod
    def for_table(cls, table: str, classes: Sequence[type] = (), columns: dict[str, Any] | None = None):
        classes = tuple(classes)
        title = next((getattr(c, "title", None) for c in classes if getattr(c, "title", None)), None)
        if columns is None:
            columns = {}
            for c in classes:
                columns.update(getattr(c, "columns", None) or {})
        method = " ".join(_first_paragraph(c.__doc__) for c in classes if c.__doc__)
        return cls(table=table, title=title or table, method=method, classes=classes, columns=dict(columns),
                   tasks=tuple(getattr(c, "task_name", "") for c in classes))

    def parameter_columns(self, ctx: Context) -> Sequence[str]:
        cols = ctx.columns(self.table) - BOOKKEEPING
        declared = [n for c in self.classes for n in _hyper_parameters(c) if n in cols]
        if declared:
            return list(dict.fromkeys(declared))[:MAX_PARAMS]
        if "unit_id" not in ctx.columns(self.table):
            return []
        names = sorted(cols)
        if not names:
            return []
        # columns constant within every unit: the unit's parameters as recorded
        inner = ", ".join(f"count(DISTINCT {sql_identifier(c)}) AS c{i}" for i, c in enumerate(names))
        outer = ", ".join(f"max(c{i}) AS c{i}" for i in range(len(names)))
        frame = execute(ctx.con, f"SELECT {outer} FROM (SELECT {inner} FROM {sql_identifier(self.table)} "
                                 "GROUP BY unit_id)")
        return [c for i, c in enumerate(names) if int(frame[f"c{i}"].iloc[0] or 0) <= 1][:MAX_PARAMS]

    def methods(self, ctx: Context) -> list[dict[str, Any]]:
        blocks = [h3(self.title or self.table)]
        if self.method:
            blocks.append(p(self.method))
        if self.table not in ctx.known:
            return blocks + [not_run(self.table), *self.failed_notes(ctx)]
        cols = ctx.columns(self.table)
        described = [[name, str(getattr(c, "meaning", c[0] if isinstance(c, tuple) else c) or "–"),
                      str(getattr(c, "unit", c[1] if isinstance(c, tuple) and len(c) > 1 else "") or "–")]
                     for name, c in self.columns.items() if name in cols]
        if described:
            blocks.append(ctx.doc.table(f"Columns of the '{self.table}' table as the task declares them.",
                                        ["column", "meaning", "unit"], described))
        by = ["network", *(["dataset"] if "dataset" in cols else [])]
        params = [c for c in self.parameter_columns(ctx) if c in cols]
        blocks.append(self.parameter_table(ctx, params, by=by))
        return blocks + self.failed_notes(ctx)

    def parameter_table(self, ctx: Context, params: Sequence[str], by: Sequence[str] = ("network",)) -> dict:
        if "image_id" in ctx.columns(self.table):
            return super().parameter_table(ctx, params, by)
        keys = ", ".join(sql_identifier(c) for c in [*by, *params])
        frame = execute(ctx.con, f"SELECT {keys}, count(*) AS rows_ FROM {sql_identifier(self.table)} "
                                 "GROUP BY ALL ORDER BY ALL LIMIT 40")
        body = [[*(format_number(v) if not isinstance(v, str) else v for v in r[:-1]), int(r[-1])]
                for r in frame.itertuples(index=False)]
        return ctx.doc.table(f"Parameters of the '{self.table}' rows as recorded in the store, with row counts.",
                             [*by, *params, "rows"], body, numeric=[len(by) + len(params)])

    def results(self, ctx: Context) -> list[dict[str, Any]]:
        criteria = [c for c in ctx.info.get("criteria") or [] if isinstance(c, dict) and c.get("table") == self.table]
        blocks: list[dict[str, Any]] = []
        if not criteria:
            return [h3(self.title or self.table),
                    p(f"No default definition of a bad outcome for '{self.table}', and no study criterion names "
                      "it: rows are counted under Methods only.", "definition")]
        for c in criteria:
            per = c.get("per") or "row"
            definition = Definition(f"criterion:{c['name']}", self.table, c["name"], bad=c["bad"],
                                    where=c.get("where"), by=tuple(b for b in c.get("by") or () if b != "network"),
                                    per=per, unit=per, confidence=float(c.get("confidence") or 0.95),
                                    rationale=f"The study's acceptance criterion '{c['name']}', estimated per group.")
            blocks.append(h3(definition.title))
            if self.table not in ctx.known:
                blocks.append(not_run(self.table))
                continue
            blocks.append(p(definition.rationale, "definition"))
            blocks += self.definition_results(ctx, definition)
        return blocks
