"""Units of independence: which of image, volume and subject the rows of a table carry, and which one an
estimate clusters at (survey.analysis.estimate). Slices of one volume are correlated, so the default is the
coarsest unit every row carries with at least 2 clusters in every group."""

from __future__ import annotations

from typing import Any, Sequence

from survey.analysis.db import QueryError, columns, execute, sql_identifier

#: units of independence (finest first) and the column naming each (survey.data.base.ImageId).
UNIT_COLUMNS = {"image": "image_id", "volume": "volume_id", "subject": "subject_id"}


def carried_units(con, table: str, *, where: str | None = None, by: Sequence[str] = ()) -> dict[str, int]:
    """unit -> the fewest clusters of that unit in any group of `by` (rows filtered by `where`), for each unit
    whose column every row carries (non-null); {"image": ...} at least when the table has image_id."""
    known = columns(con, table)
    units = [u for u, c in UNIT_COLUMNS.items() if c in known]
    if "image" not in units:
        return {}
    src = f"(SELECT * FROM {sql_identifier(table)} WHERE ({where}))" if where else sql_identifier(table)
    keys = [c for c in ("network", "dataset") if c in known]
    parts = []
    for u in units:
        col = sql_identifier(UNIT_COLUMNS[u])
        tup = ", ".join([*(sql_identifier(k) for k in keys), col])
        parts.append(f"count(*) - count({col}) AS {u}_missing, count(DISTINCT ({tup})) AS {u}_clusters")
    group = f" GROUP BY {', '.join(sql_identifier(b) for b in by)}" if by else ""
    try:
        frame = execute(con, f"SELECT {', '.join(parts)} FROM {src} AS t{group}")
    except QueryError as exc:
        raise ValueError(f"estimate on {table!r} where={where!r}: {exc}") from None
    if frame.empty:
        return {"image": 0}
    return {u: int(frame[f"{u}_clusters"].min()) for u in units if int(frame[f"{u}_missing"].max()) == 0}


def resolve_unit(con, table: str, unit: str | None, *, where: str | None = None, by: Sequence[str] = ()) -> str:
    """The unit of independence to cluster at: `unit` when the rows carry it (ValueError listing the units
    they carry when not), else the coarsest unit carried with at least 2 clusters in every group (image
    when none is)."""
    present = carried_units(con, table, where=where, by=by)
    if unit is not None:
        if unit not in UNIT_COLUMNS:
            raise ValueError(f"unknown cluster unit {unit!r}; choose one of {', '.join(UNIT_COLUMNS)} (the rows of "
                             f"{table!r} carry: {', '.join(present) or 'none'})")
        if unit not in present:
            raise ValueError(f"cluster unit {unit!r}: the rows of {table!r} do not carry {UNIT_COLUMNS[unit]} "
                             f"(units present: {', '.join(present) or 'none'})")
        return unit
    for u in reversed(list(UNIT_COLUMNS)):
        if present.get(u, 0) >= 2:
            return u
    return "image"


def single_unit(con, table: str, where: str | None, known: Sequence[str]) -> dict[Any, dict[str, str]]:
    """Per dataset (key None without a dataset column), {"volume": id, "subject": id} for the coarser units
    that all its rows carry with one value only."""
    src = f"(SELECT * FROM {sql_identifier(table)} WHERE ({where}))" if where else sql_identifier(table)
    key = sql_identifier("dataset") if "dataset" in known else "NULL"
    out: dict[Any, dict[str, str]] = {}
    for u in ("volume", "subject"):
        col = UNIT_COLUMNS[u]
        if col not in known:
            continue
        c = sql_identifier(col)
        try:
            frame = execute(con, f"SELECT {key} AS dataset, count(*) - count({c}) AS missing, "
                                 f"count(DISTINCT {c}) AS distinct_, any_value({c}) AS value FROM {src} AS t "
                                 "GROUP BY ALL")
        except QueryError:
            continue
        for r in frame.itertuples(index=False):
            if int(r.missing) == 0 and int(r.distinct_) == 1:
                out.setdefault(r.dataset if "dataset" in known else None, {})[u] = str(r.value)
    return out


__all__ = ["UNIT_COLUMNS", "carried_units", "resolve_unit", "single_unit"]
