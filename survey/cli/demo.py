"""`survey demo`: the README's main job on the embedded default (local Ray, ./results, reports/quick)."""

from __future__ import annotations

from pathlib import Path

import typer

from survey.cli.common import EXIT_FAILED, StoreOption, command, store_path

QUICK = Path(__file__).resolve().parents[2] / "tasks" / "quick.toml"


@command
def demo(
    store: StoreOption = None,
    reports: Path = typer.Option(Path("reports"), "--reports", help="Where the HTML report goes."),
) -> None:
    """Run tasks/quick.toml on an embedded local Ray cluster into ./results, then write its report.

    Exits 1 when a unit failed (the report is written all the same).

    Example: survey demo --store results --reports reports
    """
    from survey.cli.report import report
    from survey.cli.run import run_and_print

    summary = run_and_print(QUICK, store=store_path(store), address=None)
    report(study=QUICK, store=store_path(store), out=reports / "quick")
    if summary.failed:
        raise typer.Exit(EXIT_FAILED)
