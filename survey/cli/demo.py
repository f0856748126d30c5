"""`survey demo`: the README's main job on the embedded default (local Ray, ./results, reports/quick)."""

from __future__ import annotations

from pathlib import Path

import typer

QUICK = Path(__file__).resolve().parents[2] / "tasks" / "quick.toml"


def demo(
    store: Path = typer.Option(Path("results"), "--store", help="Results directory."),
    reports: Path = typer.Option(Path("reports"), "--reports", help="Where the HTML report goes."),
) -> None:
    """Run tasks/quick.toml on an embedded local Ray cluster into ./results, then write its report."""
    from survey.cli.report import report
    from survey.cli.run import run

    run(QUICK, store=store, address=None)
    report(study=QUICK, store=store, out=reports / "quick")
