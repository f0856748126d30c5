"""`survey schema [TABLE]`: what each column of a table means and its unit (the tasks' declarations),
and with a store, the stored types and any columns no task declares."""

from __future__ import annotations

from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

from survey.cli.common import StoreOption, command, store_path


@command
def schema(
    table: Optional[str] = typer.Argument(None, help="Table (attacks, ball, sweeps, insertions, runs, ...); "
                                                     "without it, the tables and their titles."),
    store: StoreOption = None,
) -> None:
    """Each column of TABLE with its meaning and unit, as the tasks declare them (no store needed);
    with a store (--store, else ./results when it exists), also the stored type and any undeclared
    column. Without TABLE: the tables and their titles.

    Example: survey schema attacks --store results
    """
    from survey.analysis.db import declared_tables, table_schema, view_sources

    console = Console(width=max(160, Console().width))
    if store is None and store_path(None).is_dir():
        store = store_path(None)
    if table is None:
        stored = view_sources(store) if store is not None else {}
        names = {**declared_tables(), **{name: "(in the store only)" for name in stored}}
        out = Table("table", "title", *(["in store"] if store is not None else []), title="tables")
        for name, title in names.items():
            out.add_row(name, title, *(["yes" if name in stored else "no"] if store is not None else []))
        console.print(out)
        return
    rows = table_schema(table, store)
    out = Table("column", *(["type"] if store is not None else []), "unit", "meaning",
                title=f"{table}" + (f" in {store}" if store is not None else " (declared)"))
    for row in rows:
        kind = [row["type"] or "(not stored)"] if store is not None else []
        meaning = row["meaning"] if row["declared"] else "(not declared by any task)"
        out.add_row(row["column"], *kind, row["unit"], meaning)
    console.print(out)
