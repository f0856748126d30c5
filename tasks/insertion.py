"""Structural insertions: is a small detail drawn into the image still there after reconstruction?

For each image x a detail d = contrast * profile (survey.tasks.symbols: card symbols, text, a heart,
tumour-like blobs) is drawn at a chosen position, and the network f and the reference see
y_d = A(x + d) and y = A x. The detail's footprint in the output, f(y_d) - f(y), is compared with d:

- corr: Pearson correlation of f(y_d) - f(y) with d over the detail's mask grown by `corr_margin`
  pixels (inside the bare mask a solid glyph is constant, where a correlation is undefined; the
  margin adds its edge, so corr measures whether the shape comes back). 0 when the output did not
  change at all there.
- contrast_ratio: mean of f(y_d) - f(y) over the mask divided by the mean of d over the mask
  (1 = full contrast kept). For a two-level detail this is the mean change / `contrast`; the mean
  of d is used so that anti-aliased edges and smooth blobs also score exactly 1 when recovered.
- local_psnr / local_ssim: f(y_d) against x + d in the detail's bounding box padded by
  `window_pad` pixels (at least 11 x 11, the SSIM window; data range 1).
- sharpness: the detail's edges in the output against the truth, ||grad (f(y_d) - f(y))|| / ||grad d||
  (2-norms over the mask grown by corr_margin, forward differences): 1 = edges as steep as drawn; a
  step spread over w pixels keeps about 1 / sqrt(w).
- recovered: corr >= corr_threshold and contrast_threshold <= contrast_ratio <= contrast_max and
  sharpness >= sharpness_threshold. Defaults 0.8, [0.5, 1.5], 0.7: the shape explains most of the
  change, the contrast is neither half lost nor invented, and the edges are not spread over more than
  about two pixels (0.7 ~ 1 / sqrt(2)), so a blurred detail does not pass. Correlation and contrast
  alone do not separate a blur (zero-filling at 25% lines keeps corr ~0.94 and contrast ~0.84 on brain
  slices); sharpness does (~0.58 for it, 1 for the identity). The control: the zero-filled
  reconstruction H fails the rule for most sharp-edged details at 64 x 64 with 25% Gaussian lines
  (tests/test_insertion.py); smooth blobs, whose own edges are soft, pass it.
The same columns prefixed ref_ for the reference and h_ for H(y_d) - H(y), the control every network
is paired against (h_recovered).

Positions: "random-tissue" draws the detail's centre uniformly among placements whose whole mask
lies in tissue (x > tissue_threshold); when no such placement exists, among those with the most
mask pixels in tissue (the row's inside_tissue says how much). "random": uniform over placements
inside the image; "center"; or a fixed [row, col] of the detail's centre pixel. `count`
independent placements per image, each its own sample x + d and its own row (column `draw`).
Operators with a noise model (`physics.noisy`, the denoising operator with sigma > 0) get one
noise draw e per sample, shared by y = A x + e and y_d = A(x + d) + e.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from survey.metrics import psnr, ssim
from survey.numerics import real_image
from survey.tasks import validate
from survey.tasks.base import LABELS, Column, Task, TaskContext, TaskResult, register, rows_from_columns
from survey.tasks.symbols import DEFAULT_TEXT, DETAILS, Stamp, make_stamp, paste

POSITIONS = ("random-tissue", "random", "center")
#: Side of the SSIM window of survey.metrics.ssim: local windows are at least this large.
MIN_WINDOW = 11


def masked_correlation(a: torch.Tensor, b: torch.Tensor, region: torch.Tensor) -> torch.Tensor:
    """Pearson correlation of a and b over the pixels where `region` is True: (N, ...) x3 -> (N,).

    0 where either has no variation over the region.
    """
    w = region.to(a.dtype).flatten(1)
    a, b = a.flatten(1), b.flatten(1)
    count = w.sum(1, keepdim=True).clamp_min(1)
    ca = (a - (a * w).sum(1, keepdim=True) / count) * w
    cb = (b - (b * w).sum(1, keepdim=True) / count) * w
    denominator = (ca.square().sum(1) * cb.square().sum(1)).sqrt()
    covariance = (ca * cb).sum(1)
    return torch.where(denominator > 0, covariance / denominator.clamp_min(torch.finfo(a.dtype).tiny),
                       torch.zeros_like(covariance))


def dilate(mask: torch.Tensor, pixels: int) -> torch.Tensor:
    """Bool mask (N, 1, n, n) grown by `pixels` in every direction (a square structuring element)."""
    if pixels <= 0:
        return mask
    grown = F.max_pool2d(mask.to(torch.float32), 2 * pixels + 1, stride=1, padding=pixels)
    return grown > 0


def crop(images: torch.Tensor, top: torch.Tensor, left: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Windows (N, 1, height, width) of images (N, 1, n, n) with per-sample top-left corners (N,)."""
    device = images.device
    rows = (top.to(device)[:, None] + torch.arange(height, device=device))[:, :, None]
    cols = (left.to(device)[:, None] + torch.arange(width, device=device))[:, None, :]
    batch = torch.arange(images.shape[0], device=device)[:, None, None]
    return images[batch, 0, rows, cols].unsqueeze(1)


def gradient_magnitude(images: torch.Tensor) -> torch.Tensor:
    """|grad| (N, 1, n, n) by forward differences (zero at the last row / column)."""
    dx = F.pad(images[..., :, 1:] - images[..., :, :-1], (0, 1, 0, 0))
    dy = F.pad(images[..., 1:, :] - images[..., :-1, :], (0, 0, 0, 1))
    return (dx.square() + dy.square()).sqrt()


def edge_sharpness(change: torch.Tensor, d: torch.Tensor, region: torch.Tensor) -> torch.Tensor:
    """||grad change|| / ||grad d|| (2-norms over `region`), (N,): 1 for change = d, below 1 for a blur.

    The 2-norm, not the sum of |grad|: a monotone blur keeps the total variation of a step (the same rise
    over more pixels) but spreads it, and a step spread over w pixels keeps about 1 / sqrt(w) of its
    gradient 2-norm.
    """
    w = region.to(change.dtype)
    num = (gradient_magnitude(change).square() * w).flatten(1).sum(1)
    return (num / (gradient_magnitude(d).square() * w).flatten(1).sum(1)).sqrt()


def _recovery_columns(prefix: str, solver: str, output: str) -> dict[str, Column]:
    return {
        f"{prefix}corr": Column(f"Pearson correlation of {output} - {output.replace('y_d', 'y')} with the detail d "
                                f"over its mask grown by corr_margin ({solver})"),
        f"{prefix}contrast_ratio": Column(f"mean change of {solver}'s output over the mask / mean of d there "
                                          "(1 = full contrast kept)"),
        f"{prefix}local_psnr": Column(f"PSNR of {output} against x + d in the detail's padded window", "dB"),
        f"{prefix}local_ssim": Column(f"SSIM of {output} against x + d in the detail's padded window"),
        f"{prefix}psnr": Column(f"PSNR of {output} against x + d over the image", "dB"),
        f"{prefix}sharpness": Column(f"sum |grad| of {solver}'s change / sum |grad d| over the mask grown by "
                                     "corr_margin (1 = edges as steep as drawn)"),
        f"{prefix}recovered": Column(f"corr >= corr_threshold, contrast_threshold <= contrast_ratio <= contrast_max "
                                     f"and sharpness >= sharpness_threshold ({solver})"),
    }


#: Columns of insertion rows: one row per (image, placement).
INSERTION_COLUMNS: dict[str, Column] = {
    **LABELS,
    "detail": Column("the detail drawn (survey.tasks.symbols.DETAILS)"),
    "size": Column("height of the detail's bounding box", "pixels"),
    "contrast": Column("intensity added at the detail's peak", "image units"),
    "position": Column("placement rule ('random-tissue', 'random', 'center') or 'row,col' of a fixed centre"),
    "corr_threshold": Column("corr at or above which the shape counts as recovered"),
    "contrast_threshold": Column("contrast_ratio at or above which the contrast counts as kept"),
    "contrast_max": Column("contrast_ratio above which the contrast counts as invented, not kept"),
    "sharpness_threshold": Column("sharpness at or above which the edges count as kept"),
    "text": Column("the string drawn by detail 'text'; None for other details"),
    "image_id": Column("stable id of the ground-truth image"),
    "draw": Column("index of the placement on this image"),
    "centre_row": Column("row of the detail's centre pixel", "pixels"),
    "centre_col": Column("column of the detail's centre pixel", "pixels"),
    **_recovery_columns("", "the network", "f(y_d)"),
    **_recovery_columns("ref_", "the reference; rows with a reference only", "g(y_d)"),
    **_recovery_columns("h_", "the easy reconstruction H, the control", "H(y_d)"),
    "inside_tissue": Column("share of the detail's mask lying in tissue (x > tissue_threshold)"),
    "detail_pixels": Column("pixels in the detail's mask", "pixels"),
}


@register("insertion")
@dataclass(kw_only=True)
class Insertion(Task):
    """Draw a structural detail into each image and measure whether the reconstruction keeps it.

    detail: one of survey.tasks.symbols.DETAILS; size: the detail's bounding-box height in pixels;
    contrast: added intensity at the detail's peak (images are in [0, 1]; may be negative);
    position: "random-tissue", "random", "center" or [row, col] (the detail's centre pixel);
    count: independent placements per image; tissue_threshold: tissue is x > this;
    text / aspect / angle: the string of "text", the width/height ratio and rotation (degrees) of
    "ellipse"; corr_threshold / contrast_threshold / contrast_max / sharpness_threshold: the recovery
    criterion (module docstring);
    corr_margin: pixels added around the mask for corr; window_pad: padding of the local window;
    keep_tensors: return x + d, the outputs and the masks.
    """

    table = "insertions"
    title = "Structural insertion"
    columns = INSERTION_COLUMNS
    example = dict(detail="heart", size=7, contrast=0.4, position="random", count=2)
    list_params = ("position",)

    detail: str = "spade"
    size: int = 12
    contrast: float = 0.3
    position: Any = "random-tissue"
    count: int = 1
    tissue_threshold: float = 0.1
    text: str = DEFAULT_TEXT
    aspect: float = 0.7
    angle: float = 0.0
    corr_threshold: float = 0.8
    contrast_threshold: float = 0.5
    contrast_max: float = 1.5
    sharpness_threshold: float = 0.7
    corr_margin: int = 2
    window_pad: int = 4
    keep_tensors: bool = True

    def __post_init__(self):
        name = type(self).__name__
        validate.choice(self, "detail", DETAILS)
        for key, low in (("size", 3), ("count", 1), ("corr_margin", 0), ("window_pad", 0)):
            validate.integer(self, key, low=low)
        for key in ("contrast", "tissue_threshold", "corr_threshold", "contrast_threshold", "contrast_max",
                    "sharpness_threshold", "angle"):
            validate.number(self, key)
        validate.positive(self, "aspect")
        validate.text(self, "text")
        validate.flag(self, "keep_tensors")
        if self.contrast_max < self.contrast_threshold:
            raise ValueError(f"{name}.contrast_max ({self.contrast_max}) must be at least contrast_threshold "
                             f"({self.contrast_threshold})")
        if self.contrast == 0:
            raise ValueError(f"{name}.contrast must be non-zero (the detail's added intensity), got 0")
        if isinstance(self.position, str):
            if self.position not in POSITIONS:
                raise ValueError(f"{name}.position: {self.position!r} is not one of {list(POSITIONS)} "
                                 "or a [row, col] pair")
        else:
            try:
                row, col = (int(v) for v in self.position)
            except (TypeError, ValueError):
                raise ValueError(f"{name}.position must be one of {list(POSITIONS)} or a [row, col] pair of "
                                 f"integers, got {self.position!r}") from None
            self.position = (row, col)
        self.stamp()  # a detail that cannot be drawn fails here, not inside a worker

    def stamp(self) -> Stamp:
        return make_stamp(self.detail, self.size, text=self.text, aspect=float(self.aspect), angle=float(self.angle))

    def position_label(self) -> str:
        return self.position if isinstance(self.position, str) else f"{self.position[0]},{self.position[1]}"

    # -- placement ---------------------------------------------------------------------------------

    def check_image_size(self, n_rows: int, n_cols: int, stamp: Stamp | None = None) -> None:
        """Raise ValueError when the detail does not fit in n_rows x n_cols images (the engine asks before
        scheduling, so an impossible study fails at once instead of once per unit)."""
        h, w = (stamp or self.stamp()).shape
        if h > n_rows or w > n_cols:
            raise ValueError(f"a {self.detail!r} of size {self.size} is {h} x {w} pixels and does not fit in "
                             f"{n_rows} x {n_cols} images")

    def centres(self, x: torch.Tensor, stamp: Stamp, generator: torch.Generator) -> torch.Tensor:
        """Centre pixels (N, 2) long for the N images x (N, 1, n, n), drawn with `generator`."""
        h, w = stamp.shape
        n_rows, n_cols = x.shape[-2:]
        self.check_image_size(n_rows, n_cols, stamp)
        count, rows_free, cols_free = x.shape[0], n_rows - h + 1, n_cols - w + 1
        offset = torch.tensor([h // 2, w // 2])
        if not isinstance(self.position, str):
            centre = torch.tensor(self.position)
            top_left = centre - offset
            if top_left[0] < 0 or top_left[1] < 0 or top_left[0] >= rows_free or top_left[1] >= cols_free:
                raise ValueError(f"Insertion.position {list(self.position)}: a {h} x {w} detail centred there "
                                 f"leaves the {n_rows} x {n_cols} image")
            return centre.expand(count, 2).clone()
        if self.position == "center":
            return (torch.tensor([(rows_free - 1) // 2, (cols_free - 1) // 2]) + offset).expand(count, 2).clone()
        if self.position == "random":
            allowed = torch.ones(count, rows_free * cols_free, dtype=torch.bool)
        else:
            allowed = self._tissue_placements(x, stamp).flatten(1).cpu()
        draw = torch.rand(count, rows_free * cols_free, generator=generator, device=generator.device,
                          dtype=torch.float64).cpu()
        choice = torch.where(allowed, draw, torch.full_like(draw, -1.0)).argmax(1)
        return torch.stack([choice // cols_free, choice % cols_free], dim=1) + offset

    def _tissue_placements(self, x: torch.Tensor, stamp: Stamp) -> torch.Tensor:
        """(N, rows_free, cols_free) bool: top-left corners with the most mask pixels in tissue."""
        tissue = (x.real if torch.is_complex(x) else x) > self.tissue_threshold
        kernel = torch.from_numpy(stamp.mask.astype(np.float32)).to(x.device)[None, None]
        inside = F.conv2d(tissue.to(torch.float32), kernel)[:, 0].round()  # mask pixels in tissue
        best = inside.flatten(1).amax(1).view(-1, 1, 1)
        return inside >= best

    # -- run ---------------------------------------------------------------------------------------

    def run(self, ctx: TaskContext, generator: torch.Generator) -> TaskResult:
        physics, images = ctx.physics, ctx.images
        real_dtype = images.real.dtype if torch.is_complex(images) else images.dtype
        stamp = self.stamp()
        x = images.repeat_interleave(self.count, dim=0)  # sample k = image * count + draw
        centres = self.centres(x, stamp, generator)
        profile, mask = paste(stamp, centres, x.shape[-1], dtype=real_dtype, device=x.device)
        d = self.contrast * profile
        x_d = x + d
        noise = _measurement_noise(physics, x, generator)
        if noise is None:  # noiseless: f(A x) once per image
            y, y_d = physics.A(images), physics.A(x_d)
            repeat = self.count
        else:  # the same noise draw with and without the detail, so the difference isolates d
            y, y_d = physics.A(x) + noise, physics.A(x_d) + noise
            repeat = 1

        clean = real_image(ctx.net(y, physics)).repeat_interleave(repeat, dim=0)
        out = real_image(ctx.net(y_d, physics))
        columns = self._measure(out, clean, x_d, d, mask, centres, stamp)
        kept = {"x_d": x_d, "out": out, "mask": mask}
        if ctx.reference is not None:
            ref_clean = real_image(ctx.reference(y, physics)).repeat_interleave(repeat, dim=0)
            ref_out = real_image(ctx.reference(y_d, physics))
            ref_columns = self._measure(ref_out, ref_clean, x_d, d, mask, centres, stamp)
            columns.update({f"ref_{k}": v for k, v in ref_columns.items()})
            kept["ref_out"] = ref_out
        h_clean = real_image(physics.H(y)).repeat_interleave(repeat, dim=0)
        h_out = real_image(physics.H(y_d))
        h_columns = self._measure(h_out, h_clean, x_d, d, mask, centres, stamp)
        columns.update({f"h_{k}": v for k, v in h_columns.items()})
        tissue = (x.real if torch.is_complex(x) else x) > self.tissue_threshold
        columns["inside_tissue"] = (tissue & mask).flatten(1).sum(1) / mask.flatten(1).sum(1)
        columns["detail_pixels"] = mask.flatten(1).sum(1)
        return self._rows(ctx, columns, centres, kept)

    def _measure(self, out, clean, x_d, d, mask, centres, stamp: Stamp) -> dict[str, torch.Tensor]:
        """Per-sample recovery metrics (N,) of reconstructions `out` of x + d given `clean` = f(A x)."""
        change = out - clean
        region = dilate(mask, self.corr_margin)
        corr = masked_correlation(change, d, region)
        contrast_ratio = (change * mask).flatten(1).sum(1) / (d * mask).flatten(1).sum(1)
        sharpness = edge_sharpness(change, d, region)
        h, w = stamp.shape
        n_rows, n_cols = x_d.shape[-2:]
        win_h = min(n_rows, max(h + 2 * self.window_pad, MIN_WINDOW))
        win_w = min(n_cols, max(w + 2 * self.window_pad, MIN_WINDOW))
        top = (centres[:, 0] - h // 2 - (win_h - h) // 2).clamp(0, n_rows - win_h)
        left = (centres[:, 1] - w // 2 - (win_w - w) // 2).clamp(0, n_cols - win_w)
        local_out, local_truth = crop(out, top, left, win_h, win_w), crop(x_d, top, left, win_h, win_w)
        recovered = ((corr >= self.corr_threshold) & (contrast_ratio >= self.contrast_threshold)
                     & (contrast_ratio <= self.contrast_max) & (sharpness >= self.sharpness_threshold))
        return {"corr": corr, "contrast_ratio": contrast_ratio, "local_psnr": psnr(local_out, local_truth),
                "local_ssim": ssim(local_out, local_truth), "psnr": psnr(out, x_d), "sharpness": sharpness,
                "recovered": recovered}

    def _rows(self, ctx: TaskContext, columns: dict[str, torch.Tensor], centres: torch.Tensor,
              kept: dict[str, torch.Tensor]) -> TaskResult:
        shared = {"detail": self.detail, "size": self.size, "contrast": float(self.contrast),
                  "position": self.position_label(), "corr_threshold": float(self.corr_threshold),
                  "contrast_threshold": float(self.contrast_threshold), "contrast_max": float(self.contrast_max),
                  "sharpness_threshold": float(self.sharpness_threshold),
                  "text": self.text if self.detail == "text" else None}
        count = centres.shape[0]
        placement = {"image_id": [ctx.image_ids[k // self.count] for k in range(count)],
                     "draw": [k % self.count for k in range(count)], "centre_row": centres[:, 0],
                     "centre_col": centres[:, 1]}
        rows = [{**shared, **row} for row in rows_from_columns({**placement, **columns}, count)]
        tensors = {k: v.detach().cpu() for k, v in kept.items()} if self.keep_tensors else {}
        return TaskResult(rows, tensors)


def _measurement_noise(physics, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor | None:
    """sigma * e for operators with a noise model (`noisy`, e.g. denoising) and sigma > 0, else None."""
    if not hasattr(physics, "noisy") or not getattr(physics, "sigma", 0.0) > 0:
        return None
    return physics.noisy(torch.zeros_like(x), generator)



__all__ = ["Insertion", "POSITIONS", "crop", "dilate", "edge_sharpness", "gradient_magnitude", "masked_correlation"]
