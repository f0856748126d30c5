"""SQL over the results store: an in-memory DuckDB with one view per table, locked to read-only.

Views (created when the directory holds at least one Parquet file):
    <table>  for every `<store>/<table>/network=<name>/part-*.parquet` directory (attacks, ball, ...),
             read with hive_partitioning (`network` from the directory, as text) and union_by_name
             (fragments of stores written before the store unified each table's schema may differ);
    runs     provenance, one row per run (`<store>/runs/part-*.parquet`);
    ledger   finished / failed units (`<store>/_ledger/part-*.parquet`).

A float NaN reads as NULL (unknown) in every view, so no predicate counts it as bad or as good (DuckDB
orders NaN above every number: `gain >= 2` would hold for it); `nan_counts` says how many a table holds.
A table whose fragments cannot be read together (a truncated fragment, a column of two types) gets no
view; `unreadable` names the fragment or column, and a query of it says so in one line.

The sandbox has two layers. The engine: after the views exist, `enable_external_access=false` with
`allowed_directories=[<store>/]` and `lock_configuration=true`, so no statement can read a file
outside the store, reach the network, load extensions or undo the settings. The statement check:
only SELECT-like statements (SELECT, WITH, FROM, DESCRIBE, SHOW, SUMMARIZE, EXPLAIN of those, and a
few read-only PRAGMAs) run; COPY, CREATE, INSERT, ATTACH, INSTALL, LOAD, SET, EXPORT ... are refused,
since the engine alone would still allow writing inside the store.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Sequence

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

from survey.layout import FRAGMENT_GLOB, LEDGER_DIR, PARTITION_KEY, RUNS_DIR, is_reserved

#: PRAGMAs that only read the catalog; everything else is refused.
READ_ONLY_PRAGMAS = frozenset({"show_tables", "show_tables_expanded", "table_info", "show", "version",
                               "database_size", "storage_info", "functions", "collations", "platform"})
_GLOB_CHARS = re.compile(r"[*?\[\]{}]")
_EXPLAIN = re.compile(r"^\s*EXPLAIN\s+(?:\([^)]*\)\s*)?(?:ANALY[SZ]E\s+)?", re.IGNORECASE)
_PRAGMA_NAME = re.compile(r"^\s*PRAGMA\s+([A-Za-z_][A-Za-z0-9_]*)", re.IGNORECASE)


class QueryError(ValueError):
    """A statement was refused by the sandbox, or DuckDB could not run it (message says which)."""


def sql_string(value: str) -> str:
    """A SQL string literal: single quotes doubled (DuckDB cannot bind parameters inside CREATE VIEW)."""
    return "'" + str(value).replace("'", "''") + "'"


def sql_identifier(name: str) -> str:
    """A quoted SQL identifier: double quotes doubled."""
    return '"' + str(name).replace('"', '""') + '"'


def _root(store: Path | str) -> Path:
    root = Path(store).expanduser().resolve()
    if not root.is_dir():
        raise ValueError(f"store {str(store)!r}: no such directory")
    if _GLOB_CHARS.search(str(root)):
        raise ValueError(f"store path {str(root)!r} contains a glob character (* ? [ ] {{ }}); DuckDB would "
                         "expand it in read_parquet: move or rename the store")
    return root


# Finished fragments only (FRAGMENT_GLOB): a survey writing to the store meanwhile has temporary files
# that come and go, and reading one would fail the whole query.
def _has_parquet(directory: Path, recursive: bool) -> bool:
    return any(directory.glob(f"**/{FRAGMENT_GLOB}" if recursive else FRAGMENT_GLOB))


def _kind(kind: pa.DataType) -> str:
    if pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_decimal(kind):
        return "number"
    if pa.types.is_string(kind) or pa.types.is_large_string(kind):
        return "text"
    return str(kind)


def fragment_problem(root: Path, paths: Sequence[Path]) -> str | None:
    """Why the fragments `paths` cannot be read as one table (one line naming the fragment or column), or None:
    a fragment whose footer cannot be read (truncated, not Parquet), a column of incompatible types."""
    kinds: dict[str, dict[str, str]] = {}
    for path in paths:
        rel = path.relative_to(root).as_posix()
        try:
            schema = pq.read_schema(path)
        except Exception as exc:  # noqa: BLE001 - any unreadable file is reported, none is raised
            detail = " ".join(str(exc).split())[:160]
            return (f"fragment {rel} cannot be read ({type(exc).__name__}: {detail}); move it out of the store "
                    "and `survey run` the study again to redo its units")
        for field in schema:
            if not pa.types.is_null(field.type):
                kinds.setdefault(field.name, {}).setdefault(_kind(field.type), rel)
    for column, found in kinds.items():
        if len(found) > 1:
            shown = ", ".join(f"{kind} in {rel}" for kind, rel in found.items())
            return f"column {column!r} has incompatible types across fragments ({shown})"
    return None


def _sources(store: Path | str) -> tuple[dict[str, tuple[str, bool]], dict[str, str]]:
    """(view name -> (Parquet glob, hive partitioning), unreadable table -> why) for the directories with data."""
    root = _root(store)
    sources: dict[str, tuple[str, bool]] = {}
    problems: dict[str, str] = {}
    for path in sorted(p for p in root.iterdir() if p.is_dir()):
        name = path.name
        if is_reserved(name):
            continue
        files = sorted(path.glob(f"**/{FRAGMENT_GLOB}"))
        if files:
            sources[name] = (f"{path.as_posix()}/**/{FRAGMENT_GLOB}", True)
            problem = fragment_problem(root, files)
            if problem:
                problems[name] = problem
    for name, sub in (("runs", RUNS_DIR), ("ledger", LEDGER_DIR)):
        files = sorted((root / sub).glob(FRAGMENT_GLOB)) if (root / sub).is_dir() else []
        if files:
            sources[name] = (f"{(root / sub).as_posix()}/{FRAGMENT_GLOB}", False)
            problem = fragment_problem(root, files)
            if problem:
                problems[name] = problem
    return {k: v for k, v in sources.items() if k not in problems}, problems


def unreadable(store: Path | str) -> dict[str, str]:
    """Table -> why it cannot be read (a truncated fragment, a column of two types); {} for a sound store."""
    return _sources(store)[1]


def view_sources(store: Path | str) -> dict[str, tuple[str, bool]]:
    """View name -> (Parquet glob, hive partitioning) for every table that can be read (see `unreadable`)."""
    return _sources(store)[0]


def _select(con: duckdb.DuckDBPyConnection, source: str) -> str:
    """SELECT over `source` with every FLOAT / DOUBLE column's NaN read as NULL."""
    described = con.execute(f"DESCRIBE SELECT * FROM {source}").fetchall()
    floats = [r[0] for r in described if str(r[1]).upper() in ("DOUBLE", "FLOAT", "REAL")]
    if not floats:
        return f"SELECT * FROM {source}"
    replaced = ", ".join(f"CASE WHEN isnan({sql_identifier(c)}) THEN NULL ELSE {sql_identifier(c)} END "
                         f"AS {sql_identifier(c)}" for c in floats)
    return f"SELECT * REPLACE ({replaced}) FROM {source}"


def _source(pattern: str, hive: bool) -> str:
    # network is a name: never let DuckDB guess a number or a date from the directory names
    options = (f"hive_partitioning=true, hive_types={{{sql_string(PARTITION_KEY)}: 'VARCHAR'}}, "
               "union_by_name=true" if hive else "union_by_name=true")
    return f"read_parquet({sql_string(pattern)}, {options})"


def nan_counts(store: Path | str, table: str) -> dict[str, int]:
    """Column -> how many rows of `table` hold NaN there (read as NULL by the views); {} when none."""
    pattern, hive = view_sources(store)[table]
    con = duckdb.connect(":memory:")
    try:
        source = _source(pattern, hive)
        described = con.execute(f"DESCRIBE SELECT * FROM {source}").fetchall()
        floats = [r[0] for r in described if str(r[1]).upper() in ("DOUBLE", "FLOAT", "REAL")]
        if not floats:
            return {}
        counts = con.execute("SELECT " + ", ".join(f"count(*) FILTER (WHERE isnan({sql_identifier(c)}))"
                                                   for c in floats) + f" FROM {source}").fetchone()
    finally:
        con.close()
    return {c: int(n) for c, n in zip(floats, counts) if n}


#: id of a connection made by `connect` -> the tables of its store that got no view, and why (for messages).
_PROBLEMS: dict[int, dict[str, str]] = {}


def connect(store: Path | str, *, sandbox: bool = True) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB connection with one view per table of `store`, then locked down.

    With `sandbox` (the default) the connection can afterwards read only files under the store and
    cannot change its configuration; run user SQL through `query` for the statement check as well.
    """
    root = _root(store)
    con = duckdb.connect(":memory:")
    sources, problems = _sources(root)
    _PROBLEMS[id(con)] = problems
    try:
        for name, (pattern, hive) in sources.items():
            con.execute(f"CREATE VIEW {sql_identifier(name)} AS {_select(con, _source(pattern, hive))}")
        if sandbox:
            con.execute(f"SET allowed_directories=[{sql_string(root.as_posix() + '/')}]")
            con.execute("SET autoinstall_known_extensions=false")
            con.execute("SET autoload_known_extensions=false")
            con.execute("SET allow_community_extensions=false")
            con.execute("SET enable_external_access=false")
            con.execute("SET lock_configuration=true")
    except Exception:
        con.close()
        raise
    return con


def tables(con: duckdb.DuckDBPyConnection) -> list[str]:
    """Names of the views over the store."""
    return [r[0] for r in con.execute("SELECT view_name FROM duckdb_views() WHERE NOT internal "
                                      "ORDER BY view_name").fetchall()]


def columns(con: duckdb.DuckDBPyConnection, table: str) -> list[str]:
    """Column names of one view; ValueError naming the views there are when it does not exist."""
    known = tables(con)
    if table not in known:
        raise ValueError(missing_table(con, table))
    return [r[0] for r in con.execute(f"DESCRIBE {sql_identifier(table)}").fetchall()]


def check_statement(con: duckdb.DuckDBPyConnection, sql: str) -> None:
    """Raise QueryError unless `sql` is exactly one read-only statement."""
    try:
        statements = con.extract_statements(sql)
    except duckdb.Error as exc:
        raise QueryError(f"cannot parse the SQL: {exc}") from None
    if len(statements) != 1:
        raise QueryError(f"give exactly one statement, got {len(statements)}")
    statement = statements[0]
    kind = statement.type.name
    if kind == "SELECT":
        return
    if kind == "EXPLAIN":
        # EXPLAIN ANALYZE executes its statement: check what is being explained.
        inner = _EXPLAIN.sub("", statement.query, count=1)
        if inner == statement.query:
            raise QueryError("cannot read the EXPLAIN statement; write EXPLAIN [ANALYZE] SELECT ...")
        return check_statement(con, inner)
    if kind == "PRAGMA":
        match = _PRAGMA_NAME.match(statement.query)
        name = match.group(1).lower() if match else "?"
        if name in READ_ONLY_PRAGMAS:
            return
        raise QueryError(f"PRAGMA {name} is refused: only read-only pragmas run here "
                         f"({', '.join(sorted(READ_ONLY_PRAGMAS))})")
    kind = "INSTALL/LOAD" if kind == "LOAD" else kind
    raise QueryError(f"{kind} statements are refused: the store is read-only here; "
                     "only SELECT / WITH / DESCRIBE / SUMMARIZE / EXPLAIN run")


def execute(con: duckdb.DuckDBPyConnection, sql: str, params: Sequence[Any] | dict[str, Any] | None = None,
            *, fetch: str = "df", store: Path | str | None = None):
    """Check and run one read-only statement with bound parameters; DuckDB errors become QueryError.

    fetch: "df" (pandas DataFrame), "arrow" (pyarrow Table) or "numpy" (dict of column -> array).
    """
    if fetch not in ("df", "arrow", "numpy"):
        raise ValueError(f"fetch must be 'df', 'arrow' or 'numpy', got {fetch!r}")
    check_statement(con, sql)
    try:
        relation = con.sql(sql, params=params if params is not None else None)
        if relation is None:
            raise QueryError("the statement returned no result")
        if fetch == "arrow":
            return relation.to_arrow_table()
        return relation.df() if fetch == "df" else relation.fetchnumpy()
    except duckdb.PermissionException as exc:
        where = f" {Path(store).resolve()}" if store is not None else ""
        raise QueryError(f"refused: the query reads or writes a file outside the store{where} "
                         f"(only the store's own files can be read) -- {exc}") from None
    except duckdb.CatalogException as exc:
        missing = re.search(r"Table with name (\S+) does not exist", str(exc))
        if missing is None:
            raise QueryError(f"{type(exc).__name__}: {one_line(exc)}") from None
        raise QueryError(missing_table(con, missing.group(1).strip('"'), store)) from None
    except duckdb.Error as exc:
        raise QueryError(f"{type(exc).__name__}: {exc}") from None


def one_line(text: object) -> str:
    return " ".join(str(text).split())


def missing_table(con: duckdb.DuckDBPyConnection, name: str, store: Path | str | None = None) -> str:
    """One line: table `name` is not in the store (not written yet, or unreadable and why); the tables present."""
    present = tables(con)
    problems = unreadable(store) if store is not None else _PROBLEMS.get(id(con), {})
    if name in problems:
        return f"table {name!r} cannot be read: {problems[name]}; tables that can: {', '.join(present) or 'none'}"
    left = f"; unreadable: {', '.join(problems)}" if problems else ""
    return (f"table {name!r} is not in the store (not written yet: no unit of a task writing it has finished); "
            f"tables present: {', '.join(present) or 'none'}{left}")


def query(store: Path | str, sql: str, params: Sequence[Any] | dict[str, Any] | None = None,
          *, arrow: bool = False):
    """Run one read-only SQL statement over the store; a pandas DataFrame (or pyarrow Table with `arrow`).

    params: values for `?` / `$1` placeholders (a list) or `$name` placeholders (a dict), bound by DuckDB.
    """
    con = connect(store)
    try:
        return execute(con, sql, params, fetch="arrow" if arrow else "df", store=store)
    finally:
        con.close()


def declared_tables() -> dict[str, str]:
    """Table -> title, for the tables the registered tasks write, then `runs` and `ledger`."""
    from survey.tasks import tables as task_tables

    out = {name: " / ".join(dict.fromkeys(cls.title for cls in classes)) for name, classes in task_tables().items()}
    out.update(runs="Provenance: one row per `survey run`", ledger="Work units finished, failed or forgotten")
    return out


def declared_columns(table: str) -> dict[str, tuple[str, str]]:
    """Column -> (meaning, unit) as declared: the tasks' columns plus the engine's, or `runs`'s columns;
    ValueError naming the tables there are for an unknown one."""
    from survey.layout import ROW_COLUMNS, RUN_COLUMNS
    from survey.tasks import table_columns

    if table == "runs":
        return dict(RUN_COLUMNS)
    if table == "ledger":
        return {}
    try:
        declared = table_columns(table)
    except ValueError:
        raise ValueError(f"unknown table {table!r}; tables are {sorted(declared_tables())}") from None
    return {**{name: (c.meaning, c.unit) for name, c in declared.items()}, **ROW_COLUMNS}


def table_schema(table: str, store: Path | str | None = None) -> list[dict[str, Any]]:
    """One dict per column of `table`: column, meaning, unit, declared (bool) and, with a `store`, type
    (DuckDB's, None for a declared column the store does not hold). Without a store: the declaration.
    A table only in the store (written by a task no longer registered) lists the stored columns."""
    try:
        declared = declared_columns(table)
    except ValueError:
        if store is None or table not in view_sources(store):
            raise
        declared = {}
    rows = [{"column": name, "meaning": meaning, "unit": unit, "declared": True}
            for name, (meaning, unit) in declared.items()]
    if store is None:
        return rows
    con = connect(store)
    try:
        stored = ({r[0]: r[1] for r in con.execute(f"DESCRIBE {sql_identifier(table)}").fetchall()}
                  if table in tables(con) else {})
    finally:
        con.close()
    for row in rows:
        row["type"] = stored.get(row["column"])
    rows += [{"column": name, "meaning": "", "unit": "", "declared": False, "type": kind}
             for name, kind in stored.items() if name not in declared]
    return rows


__all__ = ["QueryError", "check_statement", "columns", "connect", "fragment_problem", "missing_table", "nan_counts",
           "unreadable", "declared_columns", "declared_tables", "execute",
           "query", "sql_identifier", "sql_string", "table_schema", "tables", "view_sources"]
