"""`survey report`: write the self-contained HTML evidence report of a store and print its path."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from survey.cli.common import StoreOption, command, fail, progress_bar, store_path


@command
def report(
    study: Annotated[Optional[Path], typer.Option("--study", help="Study file (TOML): intended use, tasks and "
                                                               "acceptance criteria (default: the study recorded "
                                                               "in the store's runs table).")] = None,
    store: StoreOption = None,
    out: Annotated[Optional[Path], typer.Option("--out", help="Report folder (default: "
                                                           "reports/<study name>/).")] = None,
) -> Path:
    """Write the evidence report (index.html + figures/) for the store; prints the path of index.html.

    Example: survey report --study tasks/quick.toml --store results --out reports/quick
    """
    from survey.analysis.report import build_report
    from survey.spec import load_study

    import warnings

    with warnings.catch_warnings():   # what a task says about its settings, `survey run` said; the report shows it
        warnings.simplefilter("ignore", UserWarning)
        spec = load_study(study) if study is not None else None
    store = store_path(store, spec)
    if not store.is_dir():
        fail(f"store {str(store)!r}: no such directory (run a study first, or pass --store)")
    if out is None:
        out = Path("reports") / (spec.name if spec is not None else _recorded_name(store))
    with progress_bar("report") as update:
        index = build_report(store, out, spec, on_progress=update)
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
