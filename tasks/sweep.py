"""Sampling sweeps: does the reconstruction improve when it is given more samples?

The paper's third instability (Antun et al., PNAS 2020: "more samples, worse image"): a network trained at one
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

Sampling patterns (`mask`): "own" moves the network's own mask kind and seed along the ratio axis;
a kind of survey.physics.masks (e.g. "equispaced-lines", the MRI-VN sweep of the paper's SI:
equispaced lines plus a fully sampled centre) sweeps that nested family instead, at every level
including the training ratio (at_train is then False: no level is the network's own operator).

Forward model (`forward`): "same" measures y = A_level x with the operator the network and the
reference reconstruct with; "finer" measures with the operator's finer model (`A_finer`: Radon at
twice the resolution, the image as square pixels, two sub-rays per detector bin), so a view sweep is
not an inverse crime (the paper's Ell 50 sweep used analytic ellipse sinograms for the same reason).
Operators without a finer model refuse "finer".

Fixed sampling by construction: a network that reads only its trained sampling points (AUTOMAP's
dense layer takes fixed k-space positions) cannot use more samples; its curve would be flat by
construction, not evidence of stability. It is recognised by a declared `fixed_sampling = True`
attribute, or by a probe: at the first level with measured entries outside the training operator's,
f(y) equals f(y restricted to the training entries). Its rows then carry fixed_sampling True, the
reason in `skipped`, and psnr / ssim NaN at every level (left out of the more-samples claim); the
reference and H(y) are still scored. Networks that instead fail on another operator (a shape error)
have the error caught per level in the row's `error` column with psnr / ssim NaN.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, NamedTuple

import torch

from survey.metrics import psnr, ssim
from survey.physics.masks import MASK_KINDS, make_mask
from survey.numerics import real_image
from survey.tasks import validate
from survey.tasks.base import LABELS, Column, Task, TaskContext, TaskResult, register, rows_from_columns

DEFAULT_RATIOS = (0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5, 0.6, 0.8, 1.0)
DEFAULT_VIEWS = (10, 20, 30, 45, 60, 90, 120, 180)
DEFAULT_SIGMAS = (0.0, 5 / 255, 10 / 255, 15 / 255, 25 / 255, 35 / 255, 50 / 255)
#: Sweep axis (survey.physics.base.Axis.name) -> the parameter holding its values.
AXIS_PARAMETERS = {"ratio": "ratios", "views": "views", "sigma": "sigmas"}
FORWARD_MODELS = ("same", "finer")
#: The `skipped` text of a network that reads only its trained sampling points.
FIXED_SAMPLING = "fixed sampling by construction: the network reads only its trained sampling points"

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
    "mask": Column("mask kind of the level's operator (ratio axis only; survey.physics.masks)"),
    "forward": Column("forward model of the measurements: 'same' (the level's operator) or 'finer'"),
    "fixed_sampling": Column("the network reads only its trained sampling points (declared or probed): "
                             "left out of the more-samples claim"),
    "skipped": Column("why the network was not scored on this level ('' when it was)"),
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
    level when it is not in the list; mask: "own" or a mask kind to sweep (ratio axis); forward:
    "same" or "finer" (module docstring); keep_tensors: return the reconstructions (out, ref_out).
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
    mask: str = "own"
    forward: str = "same"
    keep_tensors: bool = False

    def __post_init__(self):
        validate.sequence(self, "ratios", validate.numbers_in(0.0, 1.0, low_open=True), "numbers in (0, 1]")
        validate.sequence(self, "views", validate.integers_in(1), "positive integers", convert=int)
        validate.sequence(self, "sigmas", validate.numbers_in(0.0), "numbers >= 0")
        validate.flag(self, "include_train")
        validate.choice(self, "mask", ("own", *MASK_KINDS))
        validate.choice(self, "forward", FORWARD_MODELS)
        validate.flag(self, "keep_tensors")

    def applies_to(self, physics) -> str | None:
        """A sweep needs an operator with a sampling axis it knows (ratio, views or sigma)."""
        axis = physics.sweep_axis() if getattr(physics, "sweep_axes", ()) else None
        if axis is None or axis.name not in AXIS_PARAMETERS:
            return (f"{type(physics).__name__} has no sweep axis this task knows (axes with parameters: "
                    f"{sorted(AXIS_PARAMETERS)})")
        return None

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
        if self.mask != "own" and not (axis.name == "ratio" and hasattr(physics, "with_mask")):
            raise ValueError(f"sweep: mask={self.mask!r} needs a Fourier operator with masks (ratio axis); "
                             f"{type(physics).__name__} sweeps {axis.name!r}")
        if self.forward == "finer" and not hasattr(physics, "A_finer"):
            raise ValueError(f"sweep: forward='finer' needs an operator with a finer forward model (A_finer: "
                             f"radon); {type(physics).__name__} has none")

        def level(value) -> Level:
            if self.mask == "own":
                op = physics.at_level(axis.name, value)
            else:
                seed = physics.seed if getattr(physics, "seed", None) is not None else 0
                op = physics.with_mask(make_mask(self.mask, physics.size, value, seed=seed), mask_kind=self.mask)
            achieved = op.level(axis.name)
            facts = {axis.name: achieved}
            if axis.snaps:
                facts[f"requested_{axis.name}"] = float(value)
            facts[f"train_{axis.name}"] = train
            if axis.name == "ratio":
                facts["mask"] = getattr(op, "mask_kind", "custom")
            return Level(op, axis.name, float(achieved), train_value, physics.same_level(axis.name, op), facts)

        levels = [level(v) for v in sorted(set(values), reverse=not axis.increasing)]
        if self.include_train and not any(lv.at_train or lv.value == train_value for lv in levels):
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
        fixed = fixed_sampling(ctx.net, ctx.physics, [lv.physics for lv in levels], x[:1])
        for level in levels:
            op = level.physics
            y = self.measure(op, x)
            y = y if noise is None else y + level.value * noise
            columns: dict[str, torch.Tensor] = {}
            h = real_image(op.H(y))
            columns["h_psnr"], columns["h_ssim"] = psnr(h, x), ssim(h, x)
            error = ""
            if fixed:  # a flat curve by construction is no evidence: the network is not scored
                out = torch.full_like(x, math.nan)
            else:
                try:
                    out = real_image(ctx.net(y, op))
                    if out.shape != x.shape:
                        raise ValueError(f"the network returned shape {tuple(out.shape)} for images "
                                         f"{tuple(x.shape)}")
                except (RuntimeError, ValueError, IndexError) as err:  # e.g. a net bound to one sampling pattern
                    error = f"{type(err).__name__}: {err}"[:500]
                    out = torch.full_like(x, math.nan)
            columns["psnr"], columns["ssim"] = psnr(out, x), ssim(out, x)
            kept["out"].append(out)
            if reference is not None:
                ref_out = real_image(reference(y, op))
                columns["ref_psnr"], columns["ref_ssim"] = psnr(ref_out, x), ssim(ref_out, x)
                kept["ref_out"].append(ref_out)
            level_facts = {"axis": level.axis, "value": level.value, "train_value": level.train_value,
                           "at_train": level.at_train, **level.columns, "forward": self.forward,
                           "fixed_sampling": bool(fixed), "skipped": FIXED_SAMPLING if fixed else "", "error": error}
            per_image = rows_from_columns({"image_id": ctx.image_ids, **columns}, len(ctx.image_ids))
            rows += [{"image_id": row.pop("image_id"), **level_facts, **row} for row in per_image]
        tensors: dict[str, torch.Tensor] = {}
        if self.keep_tensors:
            tensors = {k: torch.cat(v).detach().cpu() for k, v in kept.items() if v}
        return TaskResult(rows, tensors)


    def measure(self, op, x: torch.Tensor) -> torch.Tensor:
        """Noiseless measurements of x at a level: A_level x, or its finer model (forward = "finer")."""
        return op.A_finer(x) if self.forward == "finer" else op.A(x)


def fixed_sampling(net, physics, operators, x: torch.Tensor) -> bool:
    """True when `net` reads only the sampling points of its training operator `physics`.

    Declared by a `fixed_sampling` attribute on the network, or probed on the first operator of
    `operators` that measures entries outside the training operator's (same measurement shape):
    fixed when f(y) == f(y restricted to the training entries) to 1e-6 of its scale. A network that
    fails on the probe, or a sweep with no such operator (noise levels, views), reads as not fixed.
    """
    declared = getattr(net, "fixed_sampling", None)
    if isinstance(declared, bool):
        return declared
    if not hasattr(physics, "measured_mask"):
        return False
    train = physics.measured_mask()
    for op in operators:
        if tuple(op.measurement_shape) != tuple(physics.measurement_shape):
            continue
        extra = op.measured_mask().to(train.device) & ~train
        if not bool(extra.any()):
            continue
        y = op.A(x)
        try:
            out = real_image(net(y, op))
            restricted = real_image(net(y * train.to(y.device), op))
        except (RuntimeError, ValueError, IndexError):
            return False
        scale = float(out.abs().max()) if out.numel() else 0.0
        return bool(torch.isfinite(out).all()) and float((out - restricted).abs().max()) <= 1e-6 * max(scale, 1e-12)
    return False



__all__ = ["AXIS_PARAMETERS", "DEFAULT_RATIOS", "DEFAULT_SIGMAS", "DEFAULT_VIEWS", "FIXED_SAMPLING", "FORWARD_MODELS",
           "Level", "SWEEP_COLUMNS", "Sweep", "fixed_sampling"]
