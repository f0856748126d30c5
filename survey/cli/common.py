"""What every command shares: the `--store` option, one error path, and the exit codes.

Exit codes (for pipelines): 0 done; 1 the command ran but some work failed (`survey run`: a unit
failed); 2 bad input (study file, name, option, file, store), one line on stderr, no traceback;
130 interrupted (Ctrl-C or SIGTERM), after keeping what was finished.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Annotated, Callable, NoReturn, Optional, TypeVar

import typer

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT, EXIT_INTERRUPTED = 0, 1, 2, 130

#: User errors: a bad study, unknown name, unreadable file, refused query, busy store ...
USER_ERRORS = (ValueError, OSError)

StoreOption = Annotated[Optional[Path], typer.Option(
    "--store", help="Results directory (default: the study's `store`, else ./results).", show_default=False)]


def store_path(store: Path | None, study=None) -> Path:
    """The --store given, else the study's `store`, else ./results."""
    if store is not None:
        return Path(store)
    return Path(study.store) if study is not None else Path("results")


def one_line(message: object) -> str:
    return " ".join(part.strip() for part in str(message).splitlines() if part.strip())


def fail(message: str) -> NoReturn:
    """Stop the command as bad input (exit 2) with `message`."""
    raise ValueError(message)


def error(message: object) -> None:
    """Print `error: <message>` as one line on stderr, verbatim (no markup: `[[tasks]]` stays)."""
    typer.echo(f"error: {one_line(message)}", err=True)


def progress_bar(description: str, total: int | None = None):
    """A transient progress bar on stderr (stdout stays the command's result): `with progress_bar(..) as update:`
    then `update(done, total, what)`; without a total (None) it spins with the elapsed time."""
    import contextlib

    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    @contextlib.contextmanager
    def bar():
        console = Console(stderr=True)
        if not console.is_terminal:   # a pipe or a log file: no bar, not even its blank line
            yield lambda done, steps=None, what="": None
            return
        columns = [SpinnerColumn(), TextColumn("{task.description}", markup=False), BarColumn(),
                   MofNCompleteColumn(), TimeElapsedColumn()]
        with Progress(*columns, console=console, transient=True) as progress:
            task = progress.add_task(description, total=total)

            def update(done: int, steps: int | None = None, what: str = "") -> None:
                progress.update(task, completed=done, total=steps,
                                description=f"{description}: {what}" if what else description)

            yield update

    return bar()


F = TypeVar("F", bound=Callable)


def command(func: F) -> F:
    """Give a command the shared error path: user errors exit 2 with one line, an interrupt exits 130."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except KeyboardInterrupt:
            typer.echo("interrupted; rerun to resume", err=True)
            raise typer.Exit(EXIT_INTERRUPTED) from None
        except USER_ERRORS as err:
            error(err)
            raise typer.Exit(EXIT_BAD_INPUT) from None

    return wrapper  # type: ignore[return-value]
