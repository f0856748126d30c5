"""`survey datasets ...`: list the datasets and draw examples."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from survey.cli.common import command

app = typer.Typer(help="Image datasets: list them, draw examples.\n\nExample: survey datasets list --size 64",
                  no_args_is_help=True)


@app.command("list")
@command
def list_datasets(size: int = typer.Option(64, help="Image side in pixels.")) -> None:
    """Name, image count per split, size and source of every dataset (reads local files only).

    Example: survey datasets list --size 64
    """
    from survey.data import dataset_names
    from survey.data.catalog import describe

    table = Table("name", "train", "val", "test", "size", "source")
    for name in dataset_names():
        info = describe(name, size=size)
        counts = info.get("counts") or {}
        table.add_row(name, *(str(counts.get(s, "-")) if counts else "-" for s in ("train", "val", "test")),
                      str(info["size"]), info["source"])
    Console(width=160).print(table)


@app.command("show")
@command
def show(
    name: str = typer.Argument(..., help="Dataset name (see `survey datasets list`)."),
    out: Path = typer.Option(..., "--out", help="PNG file to write."),
    split: str = typer.Option("test", help="train, val or test."),
    size: int = typer.Option(64, help="Image side in pixels."),
    count: int = typer.Option(8, help="Number of images in the grid."),
    path: Path = typer.Option(None, help="Files for the `folder` and `fastmri` datasets."),
) -> None:
    """Write a grid of example images of dataset NAME to --out.

    Example: survey datasets show brain --out brain.png --count 8
    """
    from survey.analysis.figures import image_grid
    from survey.data import load_dataset

    params = {"path": str(path)} if path is not None else {}
    images = load_dataset(name, split=split, size=size, **params)
    images = images.subset(range(min(count, len(images))))
    image_grid([images.images[i, 0] for i in range(len(images))], titles=images.ids, out=out)
    typer.echo(f"wrote {out} ({len(images)} images of {name}/{split})")
