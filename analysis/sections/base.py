"""The report's building blocks and the section API: one `Section` per store table.

A section holds what the report says about its table: `title`, `method` (the text under Methods),
`params` (parameter columns shown as recorded in the rows), `definitions` (default bad outcomes,
estimated per network with intervals) and three hooks returning blocks: `definition_figure`,
`result_figures` and `worst` (worst-case images). The assembler (`survey.analysis.report`) calls, in
reading order, `methods`, `results` and `worst` of every section; a table without a module of its own
gets `survey.analysis.sections.generic.GenericSection`.

The building blocks live beside it: the document and its blocks (doc.py), the context (context.py), the
default definitions and their tables (definitions.py); this module re-exports them for the sections.
"""

from __future__ import annotations

from typing import Any, Sequence

from survey.analysis.db import execute, sql_identifier
from survey.analysis.estimate import per_image_distribution
# Numbers, commands and distribution labels live in .text; the sections import them from here too.
from survey.analysis.sections.text import (CONFIDENCE, LEVELS, N_BOOT, QUANTILES, SEED,  # noqa: F401
                                           as_json, count, distribution, distribution_command, estimate_command,
                                           format_interval, format_number, percent, records, slug, training_data)
from survey.analysis.sections.context import LIVE_UNITS, Context, ledger_units  # noqa: F401
from survey.analysis.sections.definitions import (Definition, definition_commands, definition_estimates,  # noqa: F401
                                                  distribution_table, estimate_table, group_columns, table_note)
from survey.analysis.sections.doc import MAX_WORST, METHOD_NAMES, Doc, h3, not_run, p  # noqa: F401


class Section:
    """The report's part on one table. Subclass (or instantiate with keywords) in a module
    `survey.analysis.sections.<table>` that defines `SECTION`; override the hooks for figures."""

    table: str = ""
    title: str = ""
    method: str = ""
    params: tuple[str, ...] = ()
    definitions: tuple[Definition, ...] = ()
    #: tasks writing this table (from the registry; set by the assembler)
    tasks: tuple[str, ...] = ()

    def __init__(self, **attributes: Any):
        for name, value in attributes.items():
            if not hasattr(type(self), name):
                raise TypeError(f"{type(self).__name__} has no attribute {name!r}")
            setattr(self, name, value)

    # -- methods --------------------------------------------------------------------------------
    def methods(self, ctx: Context) -> list[dict[str, Any]]:
        """Title, method text, then the parameters as recorded in the rows with row and image counts."""
        blocks = [h3(self.title or self.table)]
        if self.method:
            blocks.append(p(self.method))
        if self.table not in ctx.known:
            return blocks + [not_run(self.table), *self.failed_notes(ctx)]
        cols = ctx.columns(self.table)
        params = [c for c in self.parameter_columns(ctx) if c in cols]
        if params:
            blocks.append(self.parameter_table(ctx, params))
        return blocks + self.failed_notes(ctx)

    def parameter_columns(self, ctx: Context) -> Sequence[str]:
        return self.params

    def parameter_table(self, ctx: Context, params: Sequence[str], by: Sequence[str] = ("network",)) -> dict:
        """The parameter combinations recorded in the rows, with row and image counts: parameters that are the
        same in every row are named once in the caption, the rest are columns; the table is folded."""
        keys = ", ".join(sql_identifier(c) for c in [*by, *params])
        frame = execute(ctx.con, f"SELECT {keys}, count(*) AS rows_, count(DISTINCT image_id) AS images_ "
                                 f"FROM {sql_identifier(self.table)} GROUP BY ALL ORDER BY ALL LIMIT 40")
        shown = lambda v: format_number(v) if not isinstance(v, str) else (v or "–")  # noqa: E731
        body = [[shown(v) for v in r[:-2]] + [int(r[-2]), int(r[-1])] for r in frame.itertuples(index=False)]
        n = len(by)
        same = [i for i in range(n, n + len(params)) if len({row[i] for row in body}) == 1] if len(body) > 1 else []
        keep = [i for i in range(len(by) + len(params) + 2) if i not in same]
        constant = "; ".join(f"{params[i - n]} = {body[0][i]}" for i in same)
        columns = [*by, *params, "rows", "images"]
        varying = len(params) - len(same)
        return ctx.doc.table(f"Parameters of the '{self.table}' rows as recorded in the store, with row and image "
                             "counts" + (f"; the same in every row: {constant}." if constant else "."),
                             [columns[i] for i in keep], [[row[i] for i in keep] for row in body],
                             numeric=range(len(keep) - 2, len(keep)),
                             fold=f"{len(body)} parameter combination{'s' if len(body) != 1 else ''} × "
                                  f"{varying} varying parameter{'s' if varying != 1 else ''}")

    def failed_notes(self, ctx: Context) -> list[dict[str, Any]]:
        """"No data" for networks whose every unit of this table failed (the ledger's latest attempts)."""
        notes = []
        for network, f in ctx.failed_networks(self.table, self.tasks).items():
            last = (f.get("error") or "").strip().splitlines()[-1:] or [""]
            error = f" (error: {last[0][:200]})" if last[0] else ""
            notes.append(p(f"No data from network {network}: all {f['failed']} of its work units for this table "
                           f"failed{error}; it appears in no estimate below.", "not-run"))
        return notes

    # -- results --------------------------------------------------------------------------------
    def results(self, ctx: Context) -> list[dict[str, Any]]:
        """Per definition: title, rationale, the estimate table and its figure; then `result_figures`."""
        blocks: list[dict[str, Any]] = []
        for definition in self.definitions:
            blocks.append(h3(definition.title))
            if definition.table not in ctx.known:
                blocks.append(not_run(definition.table))
                continue
            blocks.append(p(definition.rationale, "definition"))
            blocks += self.definition_results(ctx, definition)
        if self.table in ctx.known:
            blocks += self.result_figures(ctx)
        return blocks

    def definition_results(self, ctx: Context, definition: Definition) -> list[dict[str, Any]]:
        by = group_columns(ctx.con, definition.table, definition.by)
        try:
            found = definition_estimates(ctx.con, definition, by, n_boot=ctx.n_boot, seed=ctx.seed)
        except ValueError as exc:
            return [p(f"Could not be estimated on this store: {exc}", "not-run")]
        commands = definition_commands(definition, by, found, ctx.given, n_boot=ctx.n_boot, seed=ctx.seed)
        ctx.computed[definition.key] = {"by": by, **found, "commands": commands}
        if not found["network"]:
            return [p("No rows matched this definition.", "not-run")]
        dataset = None
        if "dataset" not in by and "dataset" in ctx.columns(definition.table):
            names = execute(ctx.con, f"SELECT DISTINCT dataset FROM {sql_identifier(definition.table)}")["dataset"]
            dataset = str(names.iloc[0]) if len(names) == 1 else None
        blocks = [estimate_table(ctx.doc, definition, by, found, commands, n_boot=ctx.n_boot, seed=ctx.seed,
                                 info=ctx.info, dataset=dataset)]
        figure = self.definition_figure(ctx, definition, found)
        blocks += [figure] if figure is not None else []
        if definition.per == "row" and any(r["primary"] and r["method"] == "cluster-exact" for r in found["network"]):
            blocks += self.per_image_blocks(ctx, definition, by)
        return blocks

    def per_image_blocks(self, ctx: Context, definition: Definition, by: Sequence[str]) -> list[dict[str, Any]]:
        """For rows that share an image: the per-image distribution of P(bad), as a table and a figure."""
        from survey.analysis.estimate import _fetch_counts
        from survey.analysis.figures import per_image_plot

        try:
            rows = per_image_distribution(ctx.con, definition.table, definition.bad, where=definition.where, by=by,
                                          levels=LEVELS, quantiles=QUANTILES, confidence=definition.confidence)
            counts, _ = _fetch_counts(ctx.con, definition.table, definition.bad, where=definition.where, by=by,
                                      per="row", confidence=definition.confidence, cluster=None, x="value", y="psnr")
        except ValueError as exc:
            return [p(f"The per-image distribution could not be computed: {exc}", "not-run")]
        if not rows:
            return []
        command = distribution_command(definition.table, definition.bad, where=definition.where, by=by,
                                       store=ctx.given, confidence=definition.confidence)
        ctx.computed[f"{definition.key}:per-image"] = {"by": list(by), "network": rows, "reference": [],
                                                        "commands": {"network": command}}
        blocks = [distribution_table(ctx.doc, definition, by, rows, command)]
        paths = per_image_plot(counts, list(by), ctx.figure_path(f"per_image_{slug(definition.key)}"),
                               svg=ctx.doc.svg)
        blocks.append(ctx.doc.figure(paths, f"{definition.title}: the distribution over images of each image's "
                                            f"P(bad) (share of its {definition.unit}s that are bad), one curve per "
                                            "group: the fraction of images whose P(bad) is at most the value on the "
                                            "x axis. A curve that rises late means some images fail often."))
        return blocks

    def definition_figure(self, ctx: Context, definition: Definition, found: dict[str, list]) -> dict | None:
        """A figure under one definition's table (None: no figure)."""
        return None

    def result_figures(self, ctx: Context) -> list[dict[str, Any]]:
        """Figures after the definitions' tables (called only when the store holds the table)."""
        return []

    # -- worst cases ----------------------------------------------------------------------------
    def worst(self, ctx: Context) -> list[dict[str, Any]]:
        """Blocks for "Worst cases found" from kept tensors of live units ([] when there is nothing to show)."""
        return []


__all__ = ["CONFIDENCE", "Context", "Definition", "Doc", "LEVELS", "LIVE_UNITS", "MAX_WORST", "METHOD_NAMES", "N_BOOT",
           "QUANTILES", "SEED", "Section", "as_json", "count", "definition_commands", "definition_estimates",
           "distribution", "distribution_command", "distribution_table", "estimate_command", "estimate_table",
           "training_data",
           "format_interval", "format_number", "group_columns", "h3", "ledger_units", "not_run", "p", "percent",
           "records", "slug", "table_note"]
