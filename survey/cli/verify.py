"""`survey verify` and `survey extract`: check a report's numbers against a store, and cut the compact
extract of a store that a report's numbers need."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from survey.cli.common import EXIT_FAILED, command, fail


@command
def verify(
    report: Annotated[Path, typer.Argument(help="Report folder (holds manifest.json beside index.html).")],
    store: Annotated[Path, typer.Option("--store", help="Store (or extract) to recompute the numbers from.")],
) -> None:
    """Recompute every number the report's manifest records from STORE; print each that differs and each
    fragment that changed since the report. Exit 0: all match; 1: some differ or the store was altered;
    2: not a report, or a store of another study.

    Example: survey verify reports/quick --store results
    """
    from survey.analysis.verify import lines, verify as run_verify

    outcome = run_verify(report, store)
    for line in lines(outcome, store):
        typer.echo(line)
    if not outcome.ok:
        raise typer.Exit(EXIT_FAILED)


@command
def extract(
    store: Annotated[Path, typer.Argument(help="Store to cut the extract from.")],
    out: Annotated[Path, typer.Option("--out", help="Folder of the extract (new, empty, or an older extract).")],
    report: Annotated[Optional[Path], typer.Option("--report", help="Report folder: keep only the tables and "
                                                                  "columns its numbers need, and check them on "
                                                                  "the extract (default: every table and "
                                                                  "column, tensors aside).")] = None,
) -> None:
    """Write a compact Parquet extract of STORE (a store itself: `survey estimate`, `query` and `verify`
    read it); prints its folder, fragments and size.

    Example: survey extract results --report reports/quick --out tests/fixtures/quick-extract
    """
    from survey.analysis.extract import write_extract
    from survey.analysis.verify import load_manifest

    manifest = load_manifest(report) if report is not None else None
    if not Path(store).is_dir():
        fail(f"store {str(store)!r}: no such directory")
    record = write_extract(store, out, manifest)
    size = sum(f.stat().st_size for f in Path(out).rglob("*") if f.is_file())
    rows = sum(f["rows"] or 0 for f in record["fragments"].values())
    typer.echo(f"{out}: {len(record['fragments'])} fragments, {rows:,} rows, {size / 1e6:.2f} MB")
