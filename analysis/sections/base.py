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

import json
import math
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from survey.analysis.db import execute, sql_identifier
from survey.analysis.estimate import estimate

CONFIDENCE = 0.95
#: Bootstrap resamples and seed of the report's estimates (the defaults of `survey estimate`); the report
#: prints the values it used, and the commands under each table pass them when they differ.
N_BOOT = 2000
SEED = 0
MAX_WORST = 6       # networks shown in worst-case figures


# -- formatting -----------------------------------------------------------------------------------

def format_number(value: Any, digits: int = 4) -> str:
    """The report's number format: 4 significant digits; '–' for missing values."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    if isinstance(value, (bool, np.bool_)):
        return "yes" if value else "no"
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    value = float(value)
    return f"{value:.0f}" if abs(value) >= 10 ** digits else f"{value:.{digits}g}"


def format_interval(low: Any, high: Any) -> str:
    return f"[{format_number(low)}, {format_number(high)}]"


def percent(confidence: float) -> str:
    """0.95 -> '95%' (0.975 -> '97.5%')."""
    return f"{round(100 * confidence, 6):g}%"


def estimate_command(table: str, bad: str | None, *, where: str | None, by: Sequence[str], per: str,
                     store: Path, confidence: float = CONFIDENCE, x: str = "value", y: str = "psnr",
                     n_boot: int = N_BOOT, seed: int = SEED) -> str:
    """The `survey estimate` command line that prints the same numbers (x, y: curve axes, per="curve")."""
    parts = ["survey", "estimate", "--table", table]
    if bad is not None:
        parts += ["--bad", bad]
    if where:
        parts += ["--where", where]
    if by:
        parts += ["--by", ",".join(by)]
    if per != "row":
        parts += ["--per", per]
    if per == "curve":
        parts += [*(["--x", x] if x != "value" else []), *(["--y", y] if y != "psnr" else [])]
    if confidence != 0.95:
        parts += ["--confidence", f"{confidence:g}"]
    if n_boot != 2000:   # the CLI's defaults
        parts += ["--bootstrap", str(n_boot)]
    if seed != 0:
        parts += ["--seed", str(seed)]
    parts += ["--store", str(store)]
    return " ".join(_shell_quote(p) for p in parts)


def _shell_quote(text: str) -> str:
    """shlex.quote, but SQL with single quotes goes in double quotes when that needs no escaping."""
    quoted = shlex.quote(text)
    if quoted.startswith("'") and "'" in text and not any(ch in text for ch in '"$`\\!'):
        return f'"{text}"'
    return quoted


def as_json(text: Any) -> Any:
    """A JSON text column as Python; None when missing or not JSON."""
    if text is None or (isinstance(text, float) and math.isnan(text)):
        return None
    try:
        return json.loads(text)
    except (TypeError, ValueError):
        return None


def records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """Frame rows as dicts, NaN as None."""
    return [{k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in r.items()}
            for r in frame.to_dict("records")]


def count(value: Any) -> int:
    """An SQL count or sum as int; NULL (NaN in pandas) as 0."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return 0
    return int(value)


def slug(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in str(name))


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
                   commands: dict[str, str], *, n_boot: int = N_BOOT, seed: int = SEED) -> dict:
    """The table of one definition: per group and solver, n, k, p and the three intervals."""
    level = percent(definition.confidence)
    columns = [*by, "solver", "n", "k", "p", f"{level} Clopper–Pearson", f"{level} Wilson",
               f"{level} image bootstrap"]
    lines: dict[tuple, dict[str, Any]] = {}
    for solver, rows in (("network", found["network"]), ("reference (CS)", found.get("reference") or [])):
        for r in rows:
            key = (*(r.get(c) for c in by), solver)
            line = lines.setdefault(key, {"key": key, "n": r["n"], "k": r["k"], "p": r["p"]})
            line[r["method"]] = format_interval(r["ci_low"], r["ci_high"])
    ordered = sorted(lines.values(), key=lambda line: tuple(str(v) for v in line["key"][:-1]) +
                     (line["key"][-1] != "network",))
    body = [[*(str(v) if not isinstance(v, float) else format_number(v) for v in line["key"]), line["n"], line["k"],
             line["p"], line.get("clopper-pearson", "–"), line.get("wilson", "–"), line.get("bootstrap", "–")]
            for line in ordered]
    y_note = f" (curves: x = {definition.x}, y = {definition.y})" if definition.per == "curve" else ""
    return doc.table(f"{definition.title}: P(bad) per {definition.unit}, bad = {definition.bad}"
                     f"{' where ' + definition.where if definition.where else ''}{y_note}.",
                     columns, body, numeric=range(len(by) + 1, len(columns)),
                     note=table_note(definition, found, n_boot=n_boot, seed=seed),
                     commands=list(commands.values()))


def table_note(definition: Definition, found: dict[str, list], *, n_boot: int = N_BOOT, seed: int = SEED) -> str:
    note = ""
    if found.get("reference"):
        asked = (f"bad = {definition.reference_bad}" if definition.reference_bad else f"y = {definition.reference_y}")
        note = ("Reference rows ask the same question of the compressed-sensing reference on the same data "
                f"({asked}). ")
    note += f"Image bootstrap: {n_boot} resamples, seed {seed}"
    if any(r["method"] == "bootstrap" and r["note"] for rows in found.values() for r in rows):
        note += "; '–' where no unit (or every unit) is bad: resampling cannot bound p, use Clopper–Pearson"
    return note + "."


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
        blocks = [estimate_table(ctx.doc, definition, by, found, commands, n_boot=ctx.n_boot, seed=ctx.seed)]
        figure = self.definition_figure(ctx, definition, found)
        return blocks + ([figure] if figure is not None else [])

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


__all__ = ["CONFIDENCE", "Context", "Definition", "Doc", "LIVE_UNITS", "MAX_WORST", "N_BOOT", "SEED", "Section",
           "as_json", "count", "definition_commands", "definition_estimates", "estimate_command", "estimate_table",
           "format_interval", "format_number", "group_columns", "h3", "ledger_units", "not_run", "p", "percent",
           "records", "slug", "table_note"]
