"""`survey report`: write the self-contained HTML evidence report of a store and print its path."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer


def report(
    study: Annotated[Optional[Path], typer.Option("--study", help="Study file (TOML): intended use, tasks and "
                                                               "acceptance criteria (default: the study recorded "
                                                               "in the store's runs table).")] = None,
    store: Annotated[Optional[Path], typer.Option("--store", help="Results directory (default: the study's "
                                                               "`store`, else ./results).")] = None,
    out: Annotated[Optional[Path], typer.Option("--out", help="Report folder (default: "
                                                           "reports/<study name>/).")] = None,
) -> Path:
    """Write the evidence report (index.html + figures/) for the store; prints the path of index.html."""
    from survey.analysis.report import build_report
    from survey.spec import StudyError, load_study

    spec = None
    if study is not None:
        try:
            spec = load_study(study)
        except StudyError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(1) from None
    store = Path(store) if store is not None else Path(spec.store if spec is not None else "results")
    if not store.is_dir():
        typer.echo(f"error: store {str(store)!r}: no such directory (run a study first, or pass --store)", err=True)
        raise typer.Exit(1)
    if out is None:
        out = Path("reports") / (spec.name if spec is not None else _recorded_name(store))
    try:
        index = build_report(store, out, spec)
    except ValueError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    typer.echo(str(index))
    return index


def _recorded_name(store: Path) -> str:
    """The newest run's study name in the store, else the store folder's name."""
    from survey.analysis.db import query

    try:
        frame = query(store, "SELECT study FROM runs ORDER BY started_at DESC LIMIT 1")
    except ValueError:
        return store.resolve().name
    return str(frame["study"].iloc[0]) if len(frame) else store.resolve().name
