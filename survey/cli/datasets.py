"""`survey datasets ...`: list the datasets and draw examples."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from survey.cli.common import command, fail

ParamOption = typer.Option(None, "--param", help="A loader option as key=value (repeat), e.g. path=scans, "
                                                 "pattern='*.png'; values read as JSON when they can.")


def loader_params(param: list[str] | None, path: Path | None = None) -> dict:
    """--param key=value pairs (values as JSON numbers / true / false / null when they read as one)."""
    from survey.cli.analyze import _param_value

    params = {}
    for item in param or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            fail(f"--param {item!r}: write key=value, e.g. --param path=scans")
        params[key.strip()] = _param_value(value)
    if path is not None:
        params["path"] = str(path)
    return params


def _print_skipped(info_or_images) -> None:
    message = getattr(info_or_images, "skipped_message", lambda: "")()
    if message:
        typer.echo(message)

app = typer.Typer(help="Image datasets: list them, draw examples.\n\nExample: survey datasets list --size 64",
                  no_args_is_help=True)


@app.command("list")
@command
def list_datasets(
    names: list[str] = typer.Argument(None, help="Only these datasets (needed with --param)."),
    size: int = typer.Option(64, help="Image side in pixels."),
    param: list[str] = ParamOption,
) -> None:
    """Name, image count per split, size and source of every dataset (reads local files only); with
    --param, the named datasets as their loader sees them with those options.

    Example: survey datasets list folder --param path=scans --param pattern='*.dcm'
    """
    from survey.data import dataset_names
    from survey.data.catalog import describe

    params = loader_params(param)
    if params and not names:
        fail("--param applies to the datasets you name: survey datasets list folder --param path=scans")
    table = Table("name", "train", "val", "test", "size", "source", *(["skipped files"] if params else []))
    for name in names or dataset_names():
        try:
            info = describe(name, size=size, **params)
        except TypeError as err:
            fail(f"dataset {name!r} does not take these options ({', '.join(params)}): {err}")
        counts = info.get("counts") or {}
        table.add_row(name, *(str(counts.get(s, "-")) if counts else "-" for s in ("train", "val", "test")),
                      str(info["size"]), info["source"],
                      *([str(info.get("skipped", 0))] if params else []))
    Console(width=160).print(table)


@app.command("show")
@command
def show(
    name: str = typer.Argument(..., help="Dataset name (see `survey datasets list`)."),
    out: Path = typer.Option(..., "--out", help="PNG file to write."),
    split: str = typer.Option("test", help="train, val or test."),
    size: int = typer.Option(64, help="Image side in pixels."),
    count: int = typer.Option(8, help="Number of images in the grid."),
    path: Path = typer.Option(None, help="Files for the `folder` and `fastmri` datasets (same as --param path=...)."),
    param: list[str] = ParamOption,
) -> None:
    """Write a grid of example images of dataset NAME to --out.

    Example: survey datasets show folder --param path=scans --param pattern='*.png' --out scans.png
    """
    from survey.analysis.figures import image_grid
    from survey.data import load_dataset

    params = loader_params(param, path)
    try:
        images = load_dataset(name, split=split, size=size, **params)
    except TypeError as err:
        fail(f"dataset {name!r} does not take these options ({', '.join(params)}): {err}")
    _print_skipped(images)
    images = images.subset(range(min(count, len(images))))
    image_grid([images.images[i, 0] for i in range(len(images))], titles=images.ids, out=out)
    typer.echo(f"wrote {out} ({len(images)} images of {name}/{split})")
