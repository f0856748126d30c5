"""The report's building blocks and the section API: one `Section` per store table.

A section holds what the report says about its table: `title`, `method` (the text under Methods),
`params` (parameter columns shown as recorded in the rows), `definitions` (default bad outcomes,
estimated per network with intervals) and three hooks returning blocks: `definition_figure`,
`result_figures` and `worst` (worst-case images). The assembler (`survey.analysis.report`) calls, in
reading order, `methods`, `results` and `worst` of every section; a table without a module of its own
gets `survey.analysis.sections.generic.GenericSection`.

Blocks are plain dicts rendered by templates/report.html.j2 (kind "p", "h3", "list", "table", "figure");
`Doc` numbers tables and figures in reading order.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from survey.analysis.db import execute, sql_identifier
from survey.analysis.estimate import ASSUMPTIONS, METHODS, estimate, per_image_distribution
# Numbers, commands and distribution labels live in .text; sections import them from here too.
from survey.analysis.sections.text import (CONFIDENCE, LEVELS, N_BOOT, QUANTILES, SEED,  # noqa: F401
                                           as_json, count, distribution, distribution_command, estimate_command,
                                           format_interval, format_number, percent, records, slug, training_data)

MAX_WORST = 6       # networks shown in worst-case figures
#: How tables name the interval methods of `survey.analysis.estimate`.
METHOD_NAMES = {"cluster-exact": "cluster-exact", "clopper-pearson": "Clopper–Pearson", "wilson": "Wilson",
                "bootstrap": "image bootstrap"}


# -- the document ---------------------------------------------------------------------------------

class Doc:
    """Collects sections, numbering tables and figures in reading order."""

    def __init__(self, out: Path, *, store: Path | str = "", svg: bool = False):
        self.out = out
        self.sections: list[dict[str, Any]] = []
        self.tables = 0
        self.figures = 0
        self.data: dict[str, Any] = {"store": str(store)}
        self.svg = svg

    def section(self, anchor: str, title: str) -> list[dict[str, Any]]:
        blocks: list[dict[str, Any]] = []
        self.sections.append({"anchor": anchor, "title": title, "number": len(self.sections) + 1,
                              "blocks": blocks})
        return blocks

    def table(self, caption: str, columns: Sequence[str], rows: Sequence[Sequence[Any]], *,
              note: str | None = None, commands: Sequence[str] = (), status_column: int | None = None,
              numeric: Sequence[int] = (), wrap: bool = False) -> dict[str, Any]:
        self.tables += 1
        cells = [[c if isinstance(c, str) else format_number(c) for c in row] for row in rows]
        return {"kind": "table", "number": self.tables, "caption": caption, "columns": list(columns),
                "rows": cells, "note": note, "commands": list(commands), "status_column": status_column,
                "numeric": list(numeric), "wrap": wrap}

    def figure(self, paths: Sequence[Path], caption: str) -> dict[str, Any]:
        self.figures += 1
        png = Path(paths[0])
        return {"kind": "figure", "number": self.figures, "caption": caption,
                "src": png.relative_to(self.out).as_posix(),
                "svg": next((Path(p).relative_to(self.out).as_posix() for p in paths[1:]), None)}

    def figure_path(self, name: str) -> Path:
        return self.out / "figures" / name


def p(text: str, cls: str | None = None) -> dict[str, Any]:
    return {"kind": "p", "text": text, "cls": cls}


def h3(text: str) -> dict[str, Any]:
    return {"kind": "h3", "text": text}


def not_run(table: str) -> dict[str, Any]:
    return p(f"Not run: the store holds no '{table}' table.", "not-run")


# -- the context a section works in ---------------------------------------------------------------

#: Units whose latest ledger entry is 'ok': rows of others (failed, or retracted by `survey forget`) and
#: their tensors are never shown. Bound to the `ledger` view; tie on finished_at: `forget` writes later.
LIVE_UNITS = ("SELECT unit_id FROM (SELECT unit_id, arg_max(status, finished_at) AS status FROM ledger "
              "GROUP BY unit_id) WHERE status = 'ok'")


@dataclass
class Context:
    """What a section sees: the document, the DuckDB connection over the store, the store's tables, the
    store (resolved, for tensor files; `given`: as typed, for printed commands), the study (a dict), the
    ground truths (`truths.get(dataset, image_id, size)`), the bootstrap's settings and a ledger summary."""

    doc: Doc
    con: Any
    known: list[str]
    store: Path
    given: Path
    info: dict[str, Any] = field(default_factory=dict)
    truths: Any = None
    n_boot: int = N_BOOT
    seed: int = SEED
    computed: dict[str, Any] = field(default_factory=dict)
    #: (task, network) -> {"ok": units, "failed": units, "error": a failure message}, latest entries only
    units: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)

    def columns(self, table: str) -> set[str]:
        return set(execute(self.con, f"DESCRIBE {sql_identifier(table)}")["column_name"])

    def figure_path(self, name: str) -> Path:
        return self.doc.figure_path(name)

    def live(self, alias: str = "") -> str:
        """An SQL condition keeping rows of live units (true when the store has no ledger)."""
        if "ledger" not in self.known:
            return "TRUE"
        return f"{alias + '.' if alias else ''}unit_id IN ({LIVE_UNITS})"

    def failed_networks(self, table: str, tasks: Sequence[str]) -> dict[str, dict[str, Any]]:
        """Networks whose units of `tasks` (writing `table`) all failed, so that `table` has no rows of them:
        network -> {"failed": units, "error": one message}."""
        present: set[str] = set()
        if table in self.known:
            present = set(execute(self.con, f"SELECT DISTINCT network FROM {sql_identifier(table)}")["network"])
        found: dict[str, dict[str, Any]] = {}
        for (task, network), c in sorted(self.units.items()):
            if task in tasks and c["failed"] and not c["ok"] and network not in present:
                entry = found.setdefault(network, {"failed": 0, "error": c.get("error")})
                entry["failed"] += c["failed"]
        return found


def ledger_units(con, known: Sequence[str]) -> dict[tuple[str, str], dict[str, Any]]:
    """(task, network) -> {"ok", "failed", "error"} counted over each unit's latest ledger entry."""
    if "ledger" not in known:
        return {}
    frame = execute(con, "WITH latest AS (SELECT unit_id, arg_max(task, finished_at) AS task, "
                         "arg_max(network, finished_at) AS network, arg_max(status, finished_at) AS status, "
                         "arg_max(error, finished_at) AS error FROM ledger GROUP BY unit_id) "
                         "SELECT task, network, count(*) FILTER (WHERE status = 'ok') AS ok, "
                         "count(*) FILTER (WHERE status = 'failed') AS failed, "
                         "min(error) FILTER (WHERE status = 'failed') AS error FROM latest GROUP BY ALL")
    return {(r.task, r.network): {"ok": count(r.ok), "failed": count(r.failed),
                                  "error": r.error if isinstance(r.error, str) else None}
            for r in frame.itertuples(index=False)}


# -- estimates of the default definitions ---------------------------------------------------------

@dataclass(frozen=True)
class Definition:
    """A default "bad" outcome for one table, estimated per network (and `by`) for the report.

    bad / where / per / x / y: the arguments of `estimate`; reference_bad (or reference_y for
    curves): the same question asked of the reference solver on the same data (None: not asked).
    """

    key: str
    table: str
    title: str
    bad: str
    rationale: str
    where: str | None = None
    by: tuple[str, ...] = ()
    per: str = "row"
    reference_bad: str | None = None
    reference_where: str | None = None
    reference_column: str | None = None
    x: str = "value"
    y: str = "psnr"
    reference_y: str | None = None
    unit: str = "row"
    confidence: float = CONFIDENCE


def group_columns(con, table: str, extra: Sequence[str]) -> list[str]:
    """network, dataset when the table holds more than one, then the `extra` columns the table has."""
    cols = set(execute(con, f"DESCRIBE {sql_identifier(table)}")["column_name"])
    by = ["network"]
    if "dataset" in cols:
        n = execute(con, f"SELECT count(DISTINCT dataset) AS n FROM {sql_identifier(table)}")["n"].iloc[0]
        if int(n) > 1:
            by.append("dataset")
    return by + [c for c in extra if c in cols]


def definition_estimates(con, definition: Definition, by: Sequence[str], *, n_boot: int = N_BOOT,
                         seed: int = SEED) -> dict[str, list[dict[str, Any]]]:
    """{"network": estimate rows, "reference": estimate rows (may be empty)} for one definition."""
    kwargs = dict(by=list(by), per=definition.per, confidence=definition.confidence, x=definition.x,
                  n_boot=n_boot, seed=seed)
    found = {"network": estimate(con, definition.table, definition.bad, where=definition.where, y=definition.y,
                                 **kwargs)}
    found["reference"] = []
    cols = set(execute(con, f"DESCRIBE {sql_identifier(definition.table)}")["column_name"])
    if definition.reference_column not in cols:  # the reference was not run on these rows
        return found
    if definition.per == "curve":
        found["reference"] = estimate(con, definition.table, definition.bad, where=definition.reference_where,
                                      y=definition.reference_y, **kwargs)
    elif definition.reference_bad is not None:
        found["reference"] = estimate(con, definition.table, definition.reference_bad,
                                      where=definition.reference_where, **kwargs)
    return found


def definition_commands(definition: Definition, by: Sequence[str], found: dict[str, list], store: Path, *,
                        n_boot: int = N_BOOT, seed: int = SEED) -> dict[str, str]:
    """{"network": command, "reference": command (when estimated)}: `survey estimate` lines printing `found`."""
    common = dict(by=by, per=definition.per, store=store, x=definition.x, confidence=definition.confidence,
                  n_boot=n_boot, seed=seed)
    commands = {"network": estimate_command(definition.table, definition.bad, where=definition.where, y=definition.y,
                                            **common)}
    if found["reference"]:
        bad = definition.bad if definition.per == "curve" else definition.reference_bad
        commands["reference"] = estimate_command(definition.table, bad, where=definition.reference_where,
                                                 y=definition.reference_y or definition.y, **common)
    return commands


def estimate_table(doc: Doc, definition: Definition, by: Sequence[str], found: dict[str, list],
                   commands: dict[str, str], *, n_boot: int = N_BOOT, seed: int = SEED,
                   info: dict[str, Any] | None = None, dataset: str | None = None) -> dict:
    """The table of one definition: per group and solver, n, k, images, the primary estimate and interval (its
    method named) with its one-sided upper bound, then the secondary intervals and the population (estimand).

    info: the study (a dict): with it, a "data" column marks each group in- or out-of-distribution for its network;
    dataset: the table's only dataset, for groups that do not name one."""
    level = percent(definition.confidence)
    marked = info is not None and "network" in by
    columns = [*by, *(["data"] if marked else []), "solver", "n", "k", "images", "estimate",
               f"{level} interval (primary)", "primary method", f"{level} upper bound (one-sided)",
               "secondary intervals", "population"]
    lines: dict[tuple, dict[str, Any]] = {}
    for solver, rows in (("network", found["network"]), ("reference (CS)", found.get("reference") or [])):
        for r in rows:
            key = (*(r.get(c) for c in by), solver)
            line = lines.setdefault(key, {"key": key, "secondary": []})
            if r.get("primary"):
                line["primary"] = r
            else:
                line["secondary"].append(r)
    ordered = sorted((line for line in lines.values() if "primary" in line),
                     key=lambda line: tuple(str(v) for v in line["key"][:-1]) + (line["key"][-1] != "network",))
    body = []
    for line in ordered:
        r = line["primary"]
        shown = [str(v) if not isinstance(v, float) else format_number(v) for v in line["key"]]
        if marked:
            shown.insert(len(by), distribution(info, r.get("network"), r.get("dataset", dataset)) or "–")
        secondary = "; ".join(f"{METHOD_NAMES.get(s['method'], s['method'])} {format_interval(s['ci_low'], s['ci_high'])}"
                              for s in line["secondary"])
        body.append([*shown, r["n"], r["k"], r["clusters"], r["point"], format_interval(r["ci_low"], r["ci_high"]),
                     METHOD_NAMES.get(r["method"], r["method"]), r["upper_bound"], secondary or "–", r["estimand"]])
    y_note = f" (curves: x = {definition.x}, y = {definition.y})" if definition.per == "curve" else ""
    first = len(by) + (2 if marked else 1)
    return doc.table(f"{definition.title}: P(bad) per {definition.unit}, bad = {definition.bad}"
                     f"{' where ' + definition.where if definition.where else ''}{y_note}.",
                     columns, body, numeric=[*range(first, first + 5), first + 7],
                     note=table_note(definition, found, n_boot=n_boot, seed=seed),
                     commands=list(commands.values()))


def table_note(definition: Definition, found: dict[str, list], *, n_boot: int = N_BOOT, seed: int = SEED) -> str:
    note = ""
    if found.get("reference"):
        asked = (f"bad = {definition.reference_bad}" if definition.reference_bad else f"y = {definition.reference_y}")
        note = ("Reference rows ask the same question of the compressed-sensing reference on the same data "
                f"({asked}). ")
    rows = [r for found_rows in found.values() for r in found_rows]
    used = [m for m in METHODS if any(r["method"] == m for r in rows)]
    primaries = [m for m in METHODS if any(r["method"] == m and r.get("primary") for r in rows)]
    if primaries:
        note += (f"Primary: {', '.join(METHOD_NAMES[m] for m in primaries)} (estimate: "
                 + ("the mean per-image probability" if "cluster-exact" in primaries else "k / n")
                 + "; the one-sided upper bound is what criteria compare with their limits). ")
    note += "Assumptions: " + "; ".join(f"{METHOD_NAMES[m]}: {ASSUMPTIONS[m]}" for m in used) + ". "
    note += f"Image bootstrap: {n_boot} resamples, seed {seed}"
    if any(r["method"] == "bootstrap" and r["note"] for r in rows):
        note += "; '–' where no unit (or every unit) is bad: resampling cannot bound p, use the primary interval"
    return note + "."


def distribution_table(doc: Doc, definition: Definition, by: Sequence[str], rows: list[dict[str, Any]],
                       command: str, *, levels: Sequence[float] = LEVELS) -> dict:
    """Per group: images, how P(bad) spreads over them (mean, quantiles, max) and, per level, the images whose
    P(bad) exceeds it, with an exact interval for that fraction of the population of images."""
    level = percent(definition.confidence)
    groups: dict[tuple, dict[str, Any]] = {}
    for r in rows:
        groups.setdefault(tuple(r.get(c) for c in by), {"summary": r, "levels": {}})["levels"][r["level"]] = r
    columns = [*by, "images", "mean", "median", "90th pct", "max",
               *(f"P(bad) > {v:g}: images [{level} CI of the fraction]" for v in levels)]
    body = []
    for key, g in groups.items():
        s = g["summary"]
        cells = [f"{a['above']} / {a['images']} {format_interval(a['ci_low'], a['ci_high'])}" if a else "–"
                 for a in (g["levels"].get(float(v)) for v in levels)]
        body.append([*(str(v) if not isinstance(v, float) else format_number(v) for v in key), s["images"], s["mean"],
                     s.get("q0.5"), s.get("q0.9"), s["max"], *cells])
    estimand = rows[0]["estimand"].split(":")[0] if rows else ""
    return doc.table(f"{definition.title}: how P(bad) spreads over images ({estimand}); each image's P(bad) is the "
                     f"share of its {definition.unit}s that are bad.", columns, body,
                     numeric=range(len(by), len(columns)),
                     note="A mean per-image probability can hide a few images that fail often: the columns on the "
                          "right count the images whose own P(bad) exceeds each level, with an exact (Clopper–Pearson "
                          "on images) interval for that fraction of the population of images.",
                     commands=[command])


# -- sections -------------------------------------------------------------------------------------

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
        keys = ", ".join(sql_identifier(c) for c in [*by, *params])
        frame = execute(ctx.con, f"SELECT {keys}, count(*) AS rows_, count(DISTINCT image_id) AS images_ "
                                 f"FROM {sql_identifier(self.table)} GROUP BY ALL ORDER BY ALL LIMIT 40")
        body = [[*(format_number(v) if not isinstance(v, str) else v for v in r[:-2]), int(r[-2]), int(r[-1])]
                for r in frame.itertuples(index=False)]
        return ctx.doc.table(f"Parameters of the '{self.table}' rows as recorded in the store, with row and image "
                             "counts.", [*by, *params, "rows", "images"], body,
                             numeric=range(len(params) + len(by), len(params) + len(by) + 2))

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
