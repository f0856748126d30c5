"""The `survey` command line: one Typer sub-app per command group; commands stay thin.

Every command shares one error path and exit codes (see survey.cli.common): 0 done, 1 work failed,
2 bad input (one line on stderr), 130 interrupted.
"""

from __future__ import annotations

import typer

from survey import __version__
from survey.cli import analyze, datasets, demo, physics, plan, report, run, schema, tasks, verify, zoo

app = typer.Typer(
    name="survey",
    help="Large statistical tests of the stability of deep-learning image reconstruction.\n\n"
         "Example: survey run tasks/quick.toml && survey report --study tasks/quick.toml",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
)
app.add_typer(datasets.app, name="datasets")
app.add_typer(physics.app, name="physics")
app.add_typer(zoo.app, name="zoo")
app.add_typer(tasks.app, name="tasks")
app.command("run")(run.run)
app.command("status")(run.status)
app.command("plan")(plan.plan)
app.command("forget")(run.forget)
app.command("demo")(demo.demo)
app.command("query")(analyze.query)
app.command("estimate")(analyze.estimate)
app.command("plan-size")(analyze.plan_size)
app.command("report")(report.report)
app.command("schema")(schema.schema)
app.command("verify")(verify.verify)
app.command("extract")(verify.extract)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"stability-survey {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                 help="Print the version and exit."),
) -> None:
    """Large statistical tests of the stability of deep-learning image reconstruction.

    Example: survey run tasks/quick.toml && survey report --study tasks/quick.toml
    """


def run_cli() -> None:
    """Console-script entry (each command handles its own errors: see survey.cli.common)."""
    app()
