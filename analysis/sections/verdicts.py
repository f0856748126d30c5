"""Page one of the report: the verdict of every acceptance criterion per network (criteria as rows, networks as
columns), and the headline numbers (each group's estimate with its primary interval and estimand, the network
beside the reference where the same question was asked of both).

Plain dicts for the template: nothing here computes a number; the verdicts come from
`survey.analysis.sections.study.evaluate_criteria`, the estimates from the sections' definitions.
"""

from __future__ import annotations

from typing import Any, Sequence

from survey.analysis.sections.study import criterion_detail
from survey.analysis.sections.text import format_interval, format_number

#: What each verdict means, in one line each (the legend under the table).
MEANINGS = {"PASS": "the one-sided upper bound of P(bad) is below the limit",
            "FAIL": "the one-sided lower bound is above the limit: evidence of harm",
            "INCONCLUSIVE": "the interval straddles the limit: too few images (or volumes) to tell; the cell says "
                            "how many would decide it at the observed rate"}
#: Rows of the headline table at most (the full tables are in the results section).
MAX_HEADLINE = 6


def short_estimand(text: Any) -> str:
    """The population an estimate speaks for, first clause only ("mean per-image probability over brain")."""
    return str(text or "–").split(";")[0].split(":")[0].strip()


def _plural(unit: str, n: int) -> str:
    return unit if n == 1 else f"{unit}s"


def _cell_item(group: dict[str, Any], by: Sequence[str]) -> dict[str, Any]:
    unit = group.get("unit") or "image"
    m = int(group.get("clusters") or 0)
    label = ", ".join(str(group.get(c)) for c in by if c != "network")
    item = {"label": label, "verdict": group.get("verdict") or "–",
            "estimate": format_number(group.get("point")),
            "interval": format_interval(group.get("ci_low"), group.get("ci_high")),
            "upper": format_number(group.get("upper_bound")), "n": f"{m} {_plural(unit, m)}", "decide": ""}
    if group.get("verdict") == "INCONCLUSIVE":
        need = group.get("decide_clusters")
        item["decide"] = ("no sample decides it at this rate" if need is None else
                          f"~{need:,} would decide")
    return item


def verdict_table(results: Sequence[Any]) -> dict[str, Any]:
    """{"networks": column names, "rows": one per criterion with name, limit, status and per network a list of
    items (one per group: dataset label, verdict, estimate, primary interval, one-sided upper bound, sample size,
    what would decide it)}; a criterion without groups gets its status and message in one merged cell."""
    networks: list[str] = []
    for r in results:
        for g in r.groups:
            name = str(g.get("network", "all")) if "network" in r.by else "all"
            if name not in networks:
                networks.append(name)
    rows = []
    for r in results:
        cells: dict[str, list] = {n: [] for n in networks}
        for g in r.groups:
            name = str(g.get("network", "all")) if "network" in r.by else "all"
            cells[name].append(_cell_item(g, r.by))
        rows.append({"name": r.name, "table": r.table, "limit": format_number(r.max_upper), "detail": criterion_detail(r),
                     "status": r.status, "message": r.message if not r.groups else "",
                     "cells": [cells[n] for n in networks]})
    return {"networks": networks, "rows": rows, "meanings": MEANINGS}


def headline_numbers(computed: dict[str, Any], definitions: dict[str, Any]) -> dict[str, Any]:
    """The numbers a reader checks first: every default definition asked of the network and of the reference on
    the same data, at the first (smallest) value of its own grouping column (the smallest budget, level or
    radius), per network and dataset: network and reference estimate with primary intervals and sample, and
    the population (estimand). {"networks": columns, "rows": [{"what", "population", "full", "cells"}]};
    at most MAX_HEADLINE rows, in report order."""
    networks: list[str] = []
    rows = []
    for key, found in computed.items():
        definition = definitions.get(key)
        if definition is None or not found.get("reference") or not found.get("network"):
            continue
        by = list(found.get("by") or [])
        extra = [c for c in by if c not in ("network", "dataset")]
        primary = [r for r in found["network"] if r.get("primary")]
        what = definition.title
        if extra:   # the first value of the first own column: the smallest budget, level, radius ...
            first = sorted({r.get(extra[0]) for r in primary}, key=lambda v: (v is None, v))[0]
            primary = [r for r in primary if r.get(extra[0]) == first]
            what += f" ({extra[0]} = {format_number(first) if not isinstance(first, str) else first})"
        reference = {tuple(r.get(c) for c in by): r for r in found["reference"] if r.get("primary")}
        cells: dict[str, list] = {}
        for r in primary:
            network = str(r.get("network"))
            if network not in networks:
                networks.append(network)
            ref = reference.get(tuple(r.get(c) for c in by))
            cells.setdefault(network, []).append({
                "label": str(r.get("dataset")) if "dataset" in by else "",
                "network": _estimate(r), "reference": _estimate(ref) if ref else "–"})
        populations = sorted({population(r.get("estimand")) for r in primary})
        rows.append({"what": what, "population": "; ".join(populations),
                     "full": " | ".join(sorted({str(r.get("estimand") or "") for r in primary})), "cells": cells})
    for row in rows:
        row["cells"] = [row["cells"].get(n, []) for n in networks]
    return {"networks": networks, "rows": rows[:MAX_HEADLINE]}


def population(estimand: Any) -> str:
    """"images: probability that an image is bad (any of its rows)" from an estimate row's estimand."""
    text = str(estimand or "–")
    who = text.split("population of ", 1)[1].split(" like these", 1)[0] if "population of " in text else ""
    what = text.rsplit("): ", 1)[-1] if "): " in text else text.split(":")[-1]
    return f"{who}: {what.strip()}" if who else what.strip()


def _estimate(row: dict[str, Any]) -> str:
    return f"{format_number(row.get('point'))} {format_interval(row.get('ci_low'), row.get('ci_high'))}"


__all__ = ["MAX_HEADLINE", "MEANINGS", "headline_numbers", "population", "short_estimand", "verdict_table"]
