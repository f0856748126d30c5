"""`survey extract`: a compact copy of a store holding only what a report's numbers need, readable as a
store by `survey estimate`, `survey query` and `survey verify`.

Same layout as the store (`<table>/network=<name>/part-extract.parquet`, `runs/`, `_ledger/`), one
fragment per partition, rows sorted so that the same store gives the same bytes. With a report's
manifest, only the tables and columns its calls name are kept (a column is kept when its name appears
in a call, or it identifies a row's image, volume, subject, unit or run), and the extract is checked
before it is kept: every recorded number recomputes to the printed value on it (a table whose numbers
do not is rewritten with all its columns). Tensors are never copied.

`extract.json` beside the fragments records the source store's fragment hashes and the extract's own,
so `survey verify` can tell an extract cut from the report's store from one that changed since.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

from survey.analysis.manifest import fragments
from survey.analysis.verify import EXTRACT

#: Columns every kept table keeps: what rows are grouped and clustered by, and provenance of rows.
KEYS = frozenset({"network", "dataset", "image_id", "volume_id", "subject_id", "unit_id", "run_id", "task",
                  "repeat"})
PART = "part-extract.parquet"


def call_tokens(manifest: dict[str, Any]) -> set[str]:
    """Every identifier-like word in the manifest's calls (column and table names among them)."""
    text = json.dumps([[c.get("function"), c.get("kwargs")] for c in (manifest.get("calls") or {}).values()])
    words = set(re.findall(r"[A-Za-z_][A-Za-z0-9_]*", text))
    functions = {spec.get("function") for spec in (manifest.get("calls") or {}).values()}
    if "rare_distribution" in functions:
        words.add("rare")
    if "paired_gain_ratio" in functions:   # the columns it reads beside its arguments
        words |= {"attacks", "attacked", "gain", "search", "levelled_off", "solver_converged"}
    return words


def _columns(con, table: str) -> list[str]:
    from survey.analysis.db import execute, sql_identifier
    return list(execute(con, f"DESCRIBE {sql_identifier(table)}")["column_name"])


def _write(con, table: str, columns: list[str], out: Path, hive: bool) -> None:
    import pyarrow.parquet as pq

    from survey.analysis.db import sql_identifier, sql_string
    from survey.layout import LEDGER_DIR, RUNS_DIR

    cols = ", ".join(sql_identifier(c) for c in columns)
    if not hive:
        sub = {"runs": RUNS_DIR, "ledger": LEDGER_DIR}[table]
        frame = con.sql(f"SELECT {cols} FROM {sql_identifier(table)} ORDER BY ALL").to_arrow_table()
        (out / sub).mkdir(parents=True, exist_ok=True)
        pq.write_table(frame, out / sub / PART, compression="zstd")
        return
    kept = [c for c in columns if c != "network"]
    networks = [r[0] for r in con.execute(f"SELECT DISTINCT network FROM {sql_identifier(table)} "
                                          "ORDER BY 1").fetchall()]
    for network in networks:
        frame = con.sql(f"SELECT {', '.join(sql_identifier(c) for c in kept)} FROM {sql_identifier(table)} "
                        f"WHERE network = {sql_string(network)} ORDER BY ALL").to_arrow_table()
        folder = out / table / f"network={network}"
        folder.mkdir(parents=True, exist_ok=True)
        pq.write_table(frame, folder / PART, compression="zstd")


def write_extract(store: Path | str, out: Path | str, manifest: dict[str, Any] | None = None) -> dict[str, Any]:
    """Write the extract of `store` into the folder `out` (replaced if it is an extract, refused if it holds
    anything else); returns the extract's record (also written to out/extract.json).

    manifest: a report's manifest (survey.analysis.verify.load_manifest): keep only what its numbers need
    and check them on the extract; None keeps every table and column (tensors aside)."""
    from survey.analysis.db import connect, tables as view_names, view_sources

    root = Path(store).expanduser().resolve()
    out = Path(out).expanduser()
    if out.resolve() == root:
        raise ValueError(f"--out {str(out)!r} is the store itself")
    if out.exists() and any(out.iterdir()):
        if not (out / EXTRACT).is_file():
            raise ValueError(f"--out {str(out)!r} exists and is not an extract: give an empty or new folder")
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    sources = view_sources(root)
    tokens = call_tokens(manifest) if manifest is not None else None
    con = connect(root)
    full: set[str] = set()
    try:
        for attempt in range(2):
            kept: dict[str, list[str]] = {}
            for table in view_names(con):
                cols = _columns(con, table)
                if table in ("runs", "ledger") or tokens is None or table in full:
                    chosen = cols if tokens is None or table in ("runs", "ledger") or table in full else []
                elif table in tokens:
                    chosen = [c for c in cols if c in tokens or c in KEYS]
                else:
                    continue
                if table == "ledger" and tokens is not None and "ledger" not in tokens:
                    continue
                kept[table] = chosen
                _write(con, table, chosen, out, hive=sources[table][1])
            record = {"kind": "stability-survey extract", "source": str(store),
                      "source_fragments": fragments(root), "columns": kept}
            record["fragments"] = fragments(out)
            (out / EXTRACT).write_text(json.dumps(record, indent=1, sort_keys=True) + "\n", encoding="utf-8")
            if manifest is None:
                return record
            wrong = _check(manifest, out)
            if not wrong:
                return record
            if attempt == 0:   # a table whose numbers moved keeps every column ("?": every table does)
                full |= set(kept) if "?" in wrong else {t for t in wrong if t in kept}
                for table in full:
                    shutil.rmtree(out / table, ignore_errors=True)
                continue
            raise ValueError(f"the extract does not reproduce {len(wrong)} table(s) of the report's numbers "
                             f"({', '.join(sorted(wrong))}): keep the store")
    finally:
        con.close()
    return record


def _check(manifest: dict[str, Any], out: Path) -> set[str]:
    """Tables (as named in the calls) of the numbers that do not recompute on the extract."""
    from survey.analysis.verify import recompute

    _, differ = recompute(manifest, out)
    if not differ:
        return set()
    tables = set()
    for d in differ:
        spec = manifest["calls"].get(d["call"]) or {}
        kwargs = spec.get("kwargs") or {}
        if "table" in kwargs:
            tables.add(kwargs["table"])
        elif spec.get("function") == "criteria":
            tables |= {c.get("table") for c in kwargs.get("criteria") or []}
        elif spec.get("function") == "rare_distribution":
            tables.add("rare")
        elif spec.get("function") == "paired_gain_ratio":
            tables.add("attacks")
        else:
            tables |= set(re.findall(r'FROM "?([A-Za-z_]+)', kwargs.get("sql", "")))
    return tables or {"?"}
