"""Sampling sweeps: does the reconstruction improve when it is given more samples?

The paper's third instability (seeds/004, "more samples, worse image"): a network trained at one
sampling ratio is run, unchanged, on nested sampling patterns of increasing size. For each level
the operator of the same kind, mask kind and seed as the network's own is built at that level,
y = A_level x is measured, and the network f(y, A_level), the reference solver and the easy
linear reconstruction H(y) are scored against x. The reference keeps the weights it has on the
training operator at every level (`CSReconstructor.weights_fixed_at`): more samples, same prior.

Axes: each operator says which sampling axis it moves along (`physics.sweep_axes`, `at_level`), and
the sweep takes the values from the parameter of that axis:
- "ratio" (Fourier operators), `ratios`: sampled fraction of k-space. Masks are nested by
  construction (survey.physics.masks: same kind and seed, longer prefix of one priority order).
  Rows: ratio (achieved), requested_ratio, train_ratio.
- "views" (Radon), `views`: the number of projection angles over the same angular range. Rows:
  views, train_views.
- "sigma" (denoising), `sigmas`: the noise level (y = x + sigma e, one e drawn from the unit's
  generator and shared by every level, so levels differ only in sigma); lower is "more
  information". Rows: sigma, train_sigma.
Every row also has axis ("ratio" / "views" / "sigma"), value and train_value, and at_train (the
level's operator equals the network's own), so one query covers every kind.

Networks bound to one sampling pattern (AUTOMAP reads fixed k-space positions) may fail on
another operator: the error is caught per level and recorded in the row's `error` column with
psnr / ssim NaN; the reference and H(y) are still scored. A pattern-bound network whose input
shape does not change cannot be detected this way and silently ignores the new samples.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, NamedTuple

import torch

from survey.metrics import psnr, ssim
from survey.tasks import validate
from survey.tasks.base import LABELS, Column, Task, TaskContext, TaskResult, register, rows_from_columns

DEFAULT_RATIOS = (0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5, 0.6, 0.8, 1.0)
DEFAULT_VIEWS = (10, 20, 30, 45, 60, 90, 120, 180)
DEFAULT_SIGMAS = (0.0, 5 / 255, 10 / 255, 15 / 255, 25 / 255, 35 / 255, 50 / 255)
#: Sweep axis (survey.physics.base.Axis.name) -> the parameter holding its values.
AXIS_PARAMETERS = {"ratio": "ratios", "views": "views", "sigma": "sigmas"}

#: Columns of sweep rows: one row per (level, image).
SWEEP_COLUMNS: dict[str, Column] = {
    **LABELS,
    "image_id": Column("stable id of the ground-truth image"),
    "axis": Column("the sampling axis swept: 'ratio', 'views' or 'sigma'"),
    "value": Column("the level's value on the axis (achieved ratio, view count, noise sigma)"),
    "train_value": Column("the network's own value on the axis"),
    "at_train": Column("whether the level's operator is the network's own"),
    "ratio": Column("achieved sampling ratio of the level (ratio axis only)"),
    "requested_ratio": Column("sampling ratio asked for (ratio axis only)"),
    "train_ratio": Column("the network's own sampling ratio (ratio axis only)"),
    "views": Column("projection angles of the level (views axis only)"),
    "train_views": Column("the network's own projection count (views axis only)"),
    "sigma": Column("noise standard deviation of the level (sigma axis only)", "image units"),
    "train_sigma": Column("the network's own noise level (sigma axis only)", "image units"),
    "error": Column("why the network failed on this level's operator; '' when it ran"),
    "h_psnr": Column("PSNR of the easy reconstruction H(y) against x", "dB"),
    "h_ssim": Column("SSIM of H(y) against x"),
    "psnr": Column("PSNR of f(y, A_level) against x (NaN when the network failed)", "dB"),
    "ssim": Column("SSIM of f(y, A_level) against x (NaN when the network failed)"),
    "ref_psnr": Column("PSNR of the reference's output against x (rows with a reference only)", "dB"),
    "ref_ssim": Column("SSIM of the reference's output against x (rows with a reference only)"),
}


class Level(NamedTuple):
    """One sweep level: its operator, the axis and values recorded in every row, kind-specific columns."""

    physics: Any
    axis: str
    value: float
    train_value: float
    at_train: bool
    columns: dict[str, Any]


@register("sweep")
@dataclass(kw_only=True)
class Sweep(Task):
    """Run the network on nested operators at several sampling levels; score it, the reference and H(y).

    ratios: sampling ratios in (0, 1] for Fourier operators; views: projection counts for Radon;
    sigmas: noise levels (image units) for denoising. include_train: also run the network's own
    level when it is not in the list; keep_tensors: return the reconstructions (out, ref_out).
    """

    table = "sweeps"
    title = "Sampling sweep"
    columns = SWEEP_COLUMNS
    example = dict(ratios=[0.3, 0.6], views=[4, 8], sigmas=[0.05, 0.1])
    list_params = ("ratios", "views", "sigmas")

    ratios: tuple[float, ...] = DEFAULT_RATIOS
    views: tuple[int, ...] = DEFAULT_VIEWS
    sigmas: tuple[float, ...] = DEFAULT_SIGMAS
    include_train: bool = True
    keep_tensors: bool = False

    def __post_init__(self):
        validate.sequence(self, "ratios", validate.numbers_in(0.0, 1.0, low_open=True), "numbers in (0, 1]")
        validate.sequence(self, "views", validate.integers_in(1), "positive integers", convert=int)
        validate.sequence(self, "sigmas", validate.numbers_in(0.0), "numbers >= 0")
        validate.flag(self, "include_train")
        validate.flag(self, "keep_tensors")

    # -- operators ---------------------------------------------------------------------------------

    def levels(self, physics) -> list[Level]:
        """The sweep's operators for the network's `physics`, in increasing amount of information."""
        axis = physics.sweep_axis() if hasattr(physics, "sweep_axis") else None
        if axis is None or axis.name not in AXIS_PARAMETERS:
            raise ValueError(f"sweep: {type(physics).__name__} has no sweep axis this task knows "
                             f"(axes with parameters: {sorted(AXIS_PARAMETERS)})")
        parameter = AXIS_PARAMETERS[axis.name]
        values = getattr(self, parameter)
        if not values:
            raise ValueError(f"sweep: the {axis.name} axis of {type(physics).__name__} needs a non-empty "
                             f"`{parameter}`")
        train = physics.level(axis.name)
        train_value = float(train)

        def level(value) -> Level:
            op = physics.at_level(axis.name, value)
            achieved = op.level(axis.name)
            facts = {axis.name: achieved}
            if axis.snaps:
                facts[f"requested_{axis.name}"] = float(value)
            facts[f"train_{axis.name}"] = train
            return Level(op, axis.name, float(achieved), train_value, physics.same_level(axis.name, op), facts)

        levels = [level(v) for v in sorted(set(values), reverse=not axis.increasing)]
        if self.include_train and not any(lv.at_train for lv in levels):
            levels.append(level(train))
            levels.sort(key=lambda lv: lv.value, reverse=not axis.increasing)
        return levels

    # -- run ---------------------------------------------------------------------------------------

    def run(self, ctx: TaskContext, generator: torch.Generator) -> TaskResult:
        x = ctx.images
        rows: list[dict[str, Any]] = []
        kept: dict[str, list[torch.Tensor]] = {"out": [], "ref_out": []}
        levels = self.levels(ctx.physics)
        # the reference keeps the weights of the training operator at every level (more data, same prior)
        reference = ctx.reference
        if hasattr(reference, "weights_fixed_at"):
            reference = reference.weights_fixed_at(ctx.physics)
        noise = None
        if ctx.physics.sweep_axis(levels[0].axis).noise:  # one draw shared by every level: common random numbers
            real = x.real.dtype if torch.is_complex(x) else x.dtype
            shape = (x.shape[0], *ctx.physics.measurement_shape)
            noise = torch.randn(shape, generator=generator, device=generator.device, dtype=real).to(x.device)
        for level in levels:
            op = level.physics
            y = op.A(x) if noise is None else op.A(x) + level.value * noise
            columns: dict[str, torch.Tensor] = {}
            h = _real(op.H(y))
            columns["h_psnr"], columns["h_ssim"] = psnr(h, x), ssim(h, x)
            error = ""
            try:
                out = _real(ctx.net(y, op))
                if out.shape != x.shape:
                    raise ValueError(f"the network returned shape {tuple(out.shape)} for images {tuple(x.shape)}")
            except (RuntimeError, ValueError, IndexError) as err:  # e.g. a net bound to one sampling pattern
                error = f"{type(err).__name__}: {err}"[:500]
                out = torch.full_like(x, math.nan)
            columns["psnr"], columns["ssim"] = psnr(out, x), ssim(out, x)
            kept["out"].append(out)
            if reference is not None:
                ref_out = _real(reference(y, op))
                columns["ref_psnr"], columns["ref_ssim"] = psnr(ref_out, x), ssim(ref_out, x)
                kept["ref_out"].append(ref_out)
            level_facts = {"axis": level.axis, "value": level.value, "train_value": level.train_value,
                           "at_train": level.at_train, **level.columns, "error": error}
            per_image = rows_from_columns({"image_id": ctx.image_ids, **columns}, len(ctx.image_ids))
            rows += [{"image_id": row.pop("image_id"), **level_facts, **row} for row in per_image]
        tensors: dict[str, torch.Tensor] = {}
        if self.keep_tensors:
            tensors = {k: torch.cat(v).detach().cpu() for k, v in kept.items() if v}
        return TaskResult(rows, tensors)


def _real(image: torch.Tensor) -> torch.Tensor:
    return image.abs() if torch.is_complex(image) else image


__all__ = ["AXIS_PARAMETERS", "DEFAULT_RATIOS", "DEFAULT_SIGMAS", "DEFAULT_VIEWS", "Level", "SWEEP_COLUMNS", "Sweep"]
