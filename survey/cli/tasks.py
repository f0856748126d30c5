"""`survey tasks ...`: the tests a study can name, and every parameter of one."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from survey.cli.common import command

app = typer.Typer(help="The tasks (tests) a study can run: list them, or show one's parameters.\n\n"
                       "Example: survey tasks show attack", no_args_is_help=False, invoke_without_command=True)

StudyOption = typer.Option(None, "--study", help="Study file (TOML): also the tasks its plugins register.")


def _load(study: Optional[Path]) -> None:
    if study is not None:
        from survey.spec import load_study
        load_study(study)


def _variant_label(name: str, cls) -> str:
    from survey.tasks import task_class

    primary = task_class(name)
    return "" if cls is primary else f"{primary.variant_key} = {getattr(cls, primary.variant_key)!r}"


@app.callback()
@command
def tasks(ctx: typer.Context, study: Optional[Path] = StudyOption) -> None:
    """List every registered task: name, the table it writes and its title.

    Example: survey tasks --study tasks/quick.toml
    """
    if ctx.invoked_subcommand is not None:
        return
    from survey.tasks import task_class, task_names, variants

    _load(study)
    for name in task_names():
        classes = list(dict.fromkeys([task_class(name), *variants(name).values()]))
        for cls in classes:
            label = _variant_label(name, cls)
            shown = f"{name} ({label})" if label else name
            typer.echo(f"{shown:<34} {cls.table:<12} {cls.title}")


@app.command("show")
@command
def show(
    name: str = typer.Argument(..., help="Registered task name, e.g. attack."),
    study: Optional[Path] = StudyOption,
) -> None:
    """Every parameter of task NAME (and of its variants) with its default, unit and meaning, the table it
    writes and its example parameters.

    Example: survey tasks show ball
    """
    from survey.tasks import task_class, variants
    from survey.tasks.describe import parameters

    _load(study)
    classes = list(dict.fromkeys([task_class(name), *variants(name).values()]))
    for cls in classes:
        label = _variant_label(name, cls)
        typer.echo(f"{name}{f' with {label}' if label else ''}: {cls.title}")
        typer.echo(f"  writes table {cls.table!r}; example: {cls.example}")
        for p in parameters(cls):
            unit = f" [{p.unit}]" if p.unit else ""
            typer.echo(f"  {p.name} = {p.default!r}{unit}: {p.meaning or '(undocumented)'}")
        typer.echo("")


__all__ = ["app"]
