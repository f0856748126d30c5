"""Default definitions of a bad outcome and their estimate, distribution and command tables."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from survey.analysis.db import execute, sql_identifier
from survey.analysis.estimate import ASSUMPTIONS, METHODS, estimate
from survey.analysis.sections.text import (CONFIDENCE, LEVELS, N_BOOT, SEED, distribution, estimate_command,
                                           format_interval, format_number, percent)
from survey.analysis.sections.doc import METHOD_NAMES, Doc, cell  # noqa: F401


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
        others = [f"{METHOD_NAMES.get(s['method'], s['method'])} {format_interval(s['ci_low'], s['ci_high'])}"
                  for s in line["secondary"]]
        secondary = cell(others[0] if others else "", more="\n".join(others[1:]) or None)
        body.append([*shown, r["n"], r["k"], r["clusters"], r["point"], format_interval(r["ci_low"], r["ci_high"]),
                     METHOD_NAMES.get(r["method"], r["method"]), r["upper_bound"], secondary if secondary["text"] else "–",
                     _population(r["estimand"])])
    y_note = f" (curves: x = {definition.x}, y = {definition.y})" if definition.per == "curve" else ""
    first = len(by) + (2 if marked else 1)
    return doc.table(f"{definition.title}: P(bad) per {definition.unit}, bad = {definition.bad}"
                     f"{' where ' + definition.where if definition.where else ''}{y_note}.",
                     columns, body, numeric=[*range(first, first + 5), first + 6],
                     note=table_note(definition, found, n_boot=n_boot, seed=seed),
                     commands=list(commands.values()))


def _population(estimand: str) -> str | dict:
    """The population column: the estimand itself when short, else its gist folded over the whole text."""
    from survey.analysis.sections.doc import LONG_CELL
    from survey.analysis.sections.verdicts import population

    text = str(estimand)
    return text if len(text) <= LONG_CELL else cell(population(text), full=text)


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
