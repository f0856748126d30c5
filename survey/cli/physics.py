"""`survey physics ...`: look at a forward operator."""

from __future__ import annotations

from pathlib import Path

import typer

from survey.cli.common import command

app = typer.Typer(help="Forward operators: draw the mask or sinogram and H(Ax).\n\n"
                       "Example: survey physics show mri --ratio 0.25 --out mask.png", no_args_is_help=True)


@app.command("show")
@command
def show(
    kind: str = typer.Argument(..., help="Operator kind: mri, pmri, radon or denoise."),
    out: Path = typer.Option(..., "--out", help="PNG file to write."),
    size: int = typer.Option(64, help="Image side in pixels."),
    ratio: float = typer.Option(None, help="Sampling ratio (mri, pmri)."),
    mask: str = typer.Option(None, help="Mask type (mri, pmri), e.g. gaussian-lines, random-points."),
    coils: int = typer.Option(None, help="Number of coils (pmri)."),
    views: int = typer.Option(None, help="Number of views (radon)."),
    angular_range: float = typer.Option(None, help="Angular range in degrees (radon); < 180 is limited angle."),
    seed: int = typer.Option(None, help="Mask seed."),
    dataset: str = typer.Option("shepp-logan", help="Dataset of the example image."),
) -> None:
    """Draw the sampling pattern (or sinogram) of operator KIND and H(Ax) of an example image.

    Example: survey physics show radon --views 30 --angular-range 150 --out radon.png
    """
    from survey.analysis.figures import physics_panel
    from survey.data import load_dataset
    from survey.physics import make_physics

    given = {"ratio": ratio, "mask": mask, "coils": coils, "views": views,
             "angular_range": angular_range, "seed": seed}
    physics = make_physics(kind, size=size, **{k: v for k, v in given.items() if v is not None})
    x = load_dataset(dataset, split="test", size=size, count=1).images
    physics_panel(physics, x, out=out)
    typer.echo(f"wrote {out} ({physics.describe()})")
