"""The survey from Python (a notebook, a script): run a study, open its store, get pandas DataFrames.

    from survey.api import open_store, run
    run("tasks/quick.toml")                        # the same as `survey run tasks/quick.toml`
    store = open_store("results")
    store.tables()                                 # ['attacks', 'ball', ...]
    store.schema("attacks")                        # column, meaning, unit
    store.read("attacks", where="attacked = 'network'")
    store.query("SELECT network, avg(gain) FROM attacks GROUP BY network")
    store.estimate("ball", bad="point_gain >= 2", by=["network"])
    store.report("reports/quick")

Every method is a thin call of the library function behind the matching CLI command, so numbers are
the ones `survey query`, `survey estimate` and `survey report` print.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import pandas as pd


class SurveyStore:
    """A read-only handle on a store folder (`./results` by default); nothing is held open between calls."""

    def __init__(self, path: Path | str = "results"):
        self.path = Path(path).expanduser()
        if not self.path.is_dir():
            raise FileNotFoundError(f"{self.path}: no such store (run a study first: survey run STUDY)")

    def __repr__(self) -> str:
        return f"SurveyStore({str(self.path)!r})"

    def tables(self) -> list[str]:
        """Names of the tables (views) the store holds: one per test that ran, plus runs and ledger."""
        from survey.analysis.db import connect, tables

        con = connect(self.path)
        try:
            return tables(con)
        finally:
            con.close()

    def schema(self, table: str) -> pd.DataFrame:
        """One row per column of `table`: name, meaning, unit (declared by the task), type (as stored)."""
        from survey.analysis.db import query
        from survey.tasks import load_tasks
        import survey.tasks as registry

        load_tasks()
        declared = registry.table_columns(table) if hasattr(registry, "table_columns") else {}
        stored = query(self.path, f"DESCRIBE SELECT * FROM {_identifier(table)}")
        types = dict(zip(stored["column_name"], stored["column_type"]))
        names = list(declared) + [c for c in types if c not in declared]
        return pd.DataFrame([{"column": c, "meaning": getattr(declared.get(c), "meaning", ""),
                              "unit": getattr(declared.get(c), "unit", ""), "type": types.get(c)}
                             for c in names])

    def read(self, table: str, where: str | None = None, columns: Sequence[str] | None = None) -> pd.DataFrame:
        """Rows of `table` (optionally filtered by a SQL `where` and cut to `columns`) as a DataFrame."""
        cols = ", ".join(_identifier(c) for c in columns) if columns else "*"
        sql = f"SELECT {cols} FROM {_identifier(table)}" + (f" WHERE ({where})" if where else "")
        return self.query(sql)

    def query(self, sql: str, params: Sequence[Any] | dict[str, Any] | None = None) -> pd.DataFrame:
        """One read-only SQL statement over the store (DuckDB), as `survey query`; values bind via `params`."""
        from survey.analysis.db import query

        return query(self.path, sql, params)

    def estimate(self, table: str, bad: str | None = None, **options: Any) -> pd.DataFrame:
        """P(bad) per group with intervals, as `survey estimate`: one row per (group, interval method).

        options: where, by, per ("row" | "image" | "curve"), confidence, ... (see survey.analysis.estimate).
        """
        from survey.analysis.estimate import estimate

        return pd.DataFrame(estimate(self.path, table, bad, **options))

    def report(self, out: Path | str, study: Path | str | None = None) -> Path:
        """Write the evidence report into folder `out` (index.html + figures); returns index.html's path."""
        from survey.analysis.report import build_report
        from survey.spec import load_study

        return build_report(self.path, out, load_study(study) if study is not None else None)


def open_store(path: Path | str = "results") -> SurveyStore:
    """A `SurveyStore` on the folder `path`."""
    return SurveyStore(path)


def run(study: Path | str, store: Path | str | None = None, address: str | None = None):
    """Run (or resume) a study file, as `survey run`: a local Ray cluster on loopback unless `address`
    names a cluster; returns the run summary (planned, done, skipped, failed, rows)."""
    from survey.engine.scheduler import run_study
    from survey.spec import load_study

    return run_study(load_study(study), store_dir=store, address=address)


def _identifier(name: str) -> str:
    from survey.analysis.db import sql_identifier

    return sql_identifier(name)


__all__ = ["SurveyStore", "open_store", "run"]
