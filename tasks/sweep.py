"""Sampling sweeps: does the reconstruction improve when it is given more samples?

The paper's third instability (seeds/004, "more samples, worse image"): a network trained at one
sampling ratio is run, unchanged, on nested sampling patterns of increasing size. For each level
the operator of the same kind, mask kind and seed as the network's own is built at that level,
y = A_level x is measured, and the network f(y, A_level), the reference solver and the easy
linear reconstruction H(y) are scored against x. The reference keeps the weights it has on the
training operator at every level (`CSReconstructor.weights_fixed_at`): more samples, same prior.

Axes by physics kind:
- Fourier ("mri", "pmri", anything with `at_ratio`): `ratios`, sampled fraction of k-space.
  Masks are nested by construction (survey.physics.masks: same kind and seed, longer prefix of
  one priority order). Rows: ratio (achieved), requested_ratio, train_ratio.
- "radon": `views`, the number of projection angles over the same angular range. Rows: views,
  train_views.
- "denoise": `sigmas`, the noise level (y = x + sigma e, one e drawn from the unit's generator and
  shared by every level, so levels differ only in sigma);
  lower is "more information". Rows: sigma, train_sigma.
Every row also has axis ("ratio" / "views" / "sigma"), value and train_value, and at_train (the
level's operator equals the network's own), so one query covers every kind.

Networks bound to one sampling pattern (AUTOMAP reads fixed k-space positions) may fail on
another operator: the error is caught per level and recorded in the row's `error` column with
psnr / ssim NaN; the reference and H(y) are still scored. A pattern-bound network whose input
shape does not change cannot be detected this way and silently ignores the new samples.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Any, NamedTuple

import torch

from survey.metrics import psnr, ssim
from survey.physics import make_physics
from survey.tasks.base import eval_mode
from survey.tasks.base import TaskContext, TaskResult, register

DEFAULT_RATIOS = (0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5, 0.6, 0.8, 1.0)
DEFAULT_VIEWS = (10, 20, 30, 45, 60, 90, 120, 180)
DEFAULT_SIGMAS = (0.0, 5 / 255, 10 / 255, 15 / 255, 25 / 255, 35 / 255, 50 / 255)


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
class Sweep:
    """Run the network on nested operators at several sampling levels; score it, the reference and H(y).

    ratios: sampling ratios in (0, 1] for Fourier operators; views: projection counts for Radon;
    sigmas: noise levels (image units) for denoising. include_train: also run the network's own
    level when it is not in the list; keep_tensors: return the reconstructions (out, ref_out).
    """

    table = "sweeps"
    list_params = ("ratios", "views", "sigmas")

    ratios: tuple[float, ...] = DEFAULT_RATIOS
    views: tuple[int, ...] = DEFAULT_VIEWS
    sigmas: tuple[float, ...] = DEFAULT_SIGMAS
    include_train: bool = True
    keep_tensors: bool = False

    def __post_init__(self):
        name = type(self).__name__
        self.ratios = tuple(_number(name, "ratios", r) for r in _sequence(name, "ratios", self.ratios))
        if any(not 0.0 < r <= 1.0 for r in self.ratios):
            raise ValueError(f"{name}.ratios must lie in (0, 1], got {list(self.ratios)}")
        self.views = tuple(_sequence(name, "views", self.views))
        if any(isinstance(v, bool) or not isinstance(v, (int, float)) or int(v) != v or v < 1 for v in self.views):
            raise ValueError(f"{name}.views must be positive integers, got {list(self.views)}")
        self.views = tuple(int(v) for v in self.views)
        self.sigmas = tuple(_number(name, "sigmas", s) for s in _sequence(name, "sigmas", self.sigmas))
        if any(not s >= 0 for s in self.sigmas):
            raise ValueError(f"{name}.sigmas must be >= 0, got {list(self.sigmas)}")

    def params(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    # -- operators ---------------------------------------------------------------------------------

    def levels(self, physics) -> list[Level]:
        """The sweep's operators for the network's `physics`, in increasing amount of information."""
        kind = getattr(physics, "kind", None)
        if hasattr(physics, "at_ratio"):
            return self._ratio_levels(physics)
        if kind == "radon":
            return self._view_levels(physics)
        if kind == "denoise":
            return self._sigma_levels(physics)
        raise ValueError(f"sweep: no sweep axis for physics kind {kind!r} (needs `at_ratio`, radon or denoise)")

    def _ratio_levels(self, physics) -> list[Level]:
        if not self.ratios:
            raise ValueError("sweep: Fourier physics needs a non-empty `ratios`")
        train_ratio = float(physics.ratio)
        train_mask = physics.mask.cpu()

        def level(ratio: float) -> Level:
            op = physics.at_ratio(ratio)
            return Level(op, "ratio", float(op.ratio), train_ratio, bool(torch.equal(op.mask.cpu(), train_mask)),
                         {"ratio": float(op.ratio), "requested_ratio": float(ratio), "train_ratio": train_ratio})

        return self._with_train([level(r) for r in sorted(set(self.ratios))], lambda: level(train_ratio))

    def _view_levels(self, physics) -> list[Level]:
        if not self.views:
            raise ValueError("sweep: radon physics needs a non-empty `views`")
        geometry = {k: v for k, v in physics.describe().items() if k != "kind"}
        train_views = int(geometry["views"])
        device = _device_of(physics)

        def level(views: int) -> Level:
            op = physics if views == train_views else make_physics("radon", **{**geometry, "views": views}).to(device)
            return Level(op, "views", float(views), float(train_views), views == train_views,
                         {"views": views, "train_views": train_views})

        return self._with_train([level(v) for v in sorted(set(self.views))], lambda: level(train_views))

    def _sigma_levels(self, physics) -> list[Level]:
        if not self.sigmas:
            raise ValueError("sweep: denoise physics needs a non-empty `sigmas`")
        train_sigma = float(physics.sigma)

        def level(sigma: float) -> Level:
            op = make_physics("denoise", size=physics.size, sigma=sigma).to(_device_of(physics))
            return Level(op, "sigma", sigma, train_sigma, math.isclose(sigma, train_sigma, abs_tol=1e-12),
                         {"sigma": sigma, "train_sigma": train_sigma})

        return self._with_train([level(s) for s in sorted(set(self.sigmas), reverse=True)], lambda: level(train_sigma))

    def _with_train(self, levels: list[Level], train_level) -> list[Level]:
        """Add the network's own level (in order of value) when asked and no listed level equals it."""
        if self.include_train and not any(level.at_train for level in levels):
            levels.append(train_level())
            reverse = levels[0].axis == "sigma"
            levels.sort(key=lambda level: level.value, reverse=reverse)
        return levels

    # -- run ---------------------------------------------------------------------------------------

    def __call__(self, ctx: TaskContext, generator: torch.Generator) -> TaskResult:
        with eval_mode(ctx.net), eval_mode(ctx.reference), torch.no_grad():
            return self._run(ctx, generator)

    def _run(self, ctx: TaskContext, generator: torch.Generator) -> TaskResult:
        x = ctx.images
        shared = {**ctx.labels(), "task": type(self).task_name, "physics": getattr(ctx.physics, "kind", "")}
        rows: list[dict[str, Any]] = []
        kept: dict[str, list[torch.Tensor]] = {"out": [], "ref_out": []}
        levels = self.levels(ctx.physics)
        # the reference keeps the weights of the training operator at every level (more data, same prior)
        reference = ctx.reference
        if hasattr(reference, "weights_fixed_at"):
            reference = reference.weights_fixed_at(ctx.physics)
        noise = None
        if levels[0].axis == "sigma":  # one draw shared by every level: common random numbers
            real = x.real.dtype if torch.is_complex(x) else x.dtype
            noise = torch.randn(x.shape, generator=generator, device=generator.device, dtype=real).to(x.device)
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
            values = {k: v.detach().cpu().tolist() for k, v in columns.items()}
            level_facts = {"axis": level.axis, "value": level.value, "train_value": level.train_value,
                           "at_train": level.at_train, **level.columns, "error": error}
            for b, image_id in enumerate(ctx.image_ids):
                row = {**shared, "image_id": image_id, **level_facts}
                row.update({k: float(v[b]) for k, v in values.items()})
                rows.append(row)
        tensors: dict[str, torch.Tensor] = {}
        if self.keep_tensors:
            tensors = {k: torch.cat(v).detach().cpu() for k, v in kept.items() if v}
        return TaskResult(rows, tensors)


def _real(image: torch.Tensor) -> torch.Tensor:
    return image.abs() if torch.is_complex(image) else image


def _device_of(physics) -> torch.device:
    return next((b.device for b in physics.buffers()), torch.device("cpu"))


def _sequence(task: str, key: str, value: Any) -> list:
    if isinstance(value, (str, bytes)) or not hasattr(value, "__iter__"):
        raise ValueError(f"{task}.{key} must be a list, got {value!r}")
    return list(value)


def _number(task: str, key: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{task}.{key} must hold finite numbers, got {value!r}")
    return float(value)


__all__ = ["DEFAULT_RATIOS", "DEFAULT_SIGMAS", "DEFAULT_VIEWS", "Level", "Sweep"]
