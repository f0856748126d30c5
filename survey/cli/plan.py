"""`survey plan STUDY`: units, probed memory and batch sizes, measured cost per unit and the expected time and
peak memory, before anything runs (no store, no Ray)."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from survey.cli.common import command


def _gb(n: int | None) -> str:
    return "-" if n is None else f"{n / 1024 ** 3:.2f}"


def _mb(n: int | None) -> str:
    return "-" if n is None else f"{n / 1024 ** 2:.0f}"


def _secs(s: float | None) -> str:
    if s is None:
        return "-"
    return f"{s:.2f} s" if s < 120 else (f"{s / 60:.1f} min" if s < 7200 else f"{s / 3600:.1f} h")


@command
def plan(
    study: Path = typer.Argument(..., help="Study file (TOML), e.g. tasks/quick.toml."),
    measure: bool = typer.Option(True, "--measure/--no-measure",
                                 help="Time one image of each distinct task in-process (default), or only probe "
                                      "memory (fast; no time estimate)."),
    device: str = typer.Option(None, "--device", help="Device to probe on (default: the study's [engine] device)."),
) -> None:
    """Print units per network and task, the memory one image needs and the batch the budget allows, the
    measured seconds per unit and the expected total time and peak memory; runs nothing into the store.

    Exits 2 (one line) when a network fails its probe or the memory budget cannot hold one image.

    Example: survey plan tasks/quick.toml --no-measure
    """
    from survey.engine.cost import estimate_study
    from survey.spec import load_study

    spec = load_study(study)
    steps = Console(stderr=True, width=200)   # each probe and timed image as it starts, apart from the table
    cost = estimate_study(spec, measure=measure, device=device,
                          on_step=lambda text: steps.print(f"{spec.name} plan: {text}", markup=False, highlight=False))
    table = Table("network", "task", "units", "images", "batch", "MB/image (probe)", "s/image", "s/unit",
                  "peak MB (1 image)", "expected", title=f"{cost.study} on {cost.device}: budget "
                  f"{_gb(cost.budget_bytes)} GB per actor, {cost.actors} actor(s) per network")
    for r in cost.rows:
        per_unit = None if r.seconds is None else r.seconds / r.units
        table.add_row(r.network, r.task, str(r.units), str(r.images), str(r.batch), _mb(r.probe_peak_bytes),
                      _secs(r.seconds_per_image), _secs(per_unit), _mb(r.peak_bytes), _secs(r.seconds))
    console = Console(width=200)
    console.print(table)
    total = cost.total_seconds()
    console.print(f"expected wall time {_secs(total) if total is not None else '- (use --measure)'} "
                  f"(one image per task timed on this machine, scaled by images); "
                  f"peak memory per actor {_gb(cost.peak_bytes())} GB of {_gb(cost.budget_bytes)} GB "
                  f"(probed, at the batches above)",
                  markup=False, highlight=False, soft_wrap=True)
