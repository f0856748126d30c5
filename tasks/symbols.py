"""Small structural details to draw into images: card symbols, text, a heart, tumour-like blobs.

A detail is rendered once as a `Stamp`: an intensity profile (h, w) with peak exactly 1 and the
mask of pixels that belong to it. `size` is the height of the detail's bounding box in pixels.

- "spade", "heart", "diamond", "club": the card-suit glyphs U+2660, U+2665, U+2666, U+2663 and
  "text" (default "CAN U SEE IT"), outlines from the DejaVu Sans font bundled with matplotlib
  (`matplotlib.textpath.TextPath`), as in the paper's Fig. 4 (Antun et al., PNAS 2020);
- "heart-curve": the classic parametric heart x = 16 sin^3 t, y = 13 cos t - 5 cos 2t - 2 cos 3t - cos 4t
  (the paper's "heart that gradually disappears");
- "ellipse": a solid tumour-like ellipse (width/height `aspect`, rotated by `angle` degrees);
- "blob": a smooth isotropic Gaussian, standard deviation size / 4, so the mask (profile >= e^-2,
  within two standard deviations of the centre) is `size` pixels across.

Solid shapes are rasterised anti-aliased: each pixel holds the fraction of a supersampled grid
(even-odd rule on the outline polygons) that falls inside, and the mask is coverage >= 1/2.
Pixels fully inside have value 1, so `contrast * profile` peaks at exactly `contrast`.
"""

from __future__ import annotations

import math
from functools import lru_cache
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

#: detail name -> the string whose DejaVu Sans outline is drawn.
GLYPHS: dict[str, str] = {"spade": "\u2660", "heart": "\u2665", "diamond": "\u2666", "club": "\u2663"}
DEFAULT_TEXT = "CAN U SEE IT"
DETAILS: tuple[str, ...] = (*GLYPHS, "text", "heart-curve", "ellipse", "blob")
#: Supersampling factor per axis for anti-aliasing (lowered for very large stamps to bound memory).
SUPERSAMPLE = 8
_MAX_SAMPLES = 4_000_000
#: Blob mask level: the Gaussian at two standard deviations.
BLOB_MASK_LEVEL = math.exp(-2.0)


class Stamp(NamedTuple):
    """profile: (h, w) float64 in [0, 1] with maximum exactly 1; mask: (h, w) bool, the detail's pixels."""

    profile: np.ndarray
    mask: np.ndarray

    @property
    def shape(self) -> tuple[int, int]:
        return self.profile.shape

    def mask_height(self) -> int:
        """Rows spanned by the mask (the detail's bounding-box height in pixels)."""
        rows = np.flatnonzero(self.mask.any(axis=1))
        return int(rows[-1] - rows[0] + 1) if rows.size else 0


def font_file() -> Path:
    """The DejaVu Sans TTF shipped inside matplotlib (no system fonts, no downloads)."""
    import matplotlib

    path = Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf"
    if not path.is_file():
        raise FileNotFoundError(f"DejaVu Sans not found at {path}; is matplotlib installed completely?")
    return path


@lru_cache(maxsize=32)
def glyph_polygons(text: str) -> tuple[np.ndarray, ...]:
    """Closed outline polygons (K_i, 2) of `text` in DejaVu Sans, font units, y pointing up."""
    from matplotlib.font_manager import FontProperties
    from matplotlib.textpath import TextPath

    path = TextPath((0.0, 0.0), text, size=100.0, prop=FontProperties(fname=str(font_file())))
    polygons = tuple(np.asarray(p, dtype=np.float64) for p in path.to_polygons(closed_only=True) if len(p) >= 3)
    if not polygons:
        raise ValueError(f"the font has no visible outline for {text!r}")
    return polygons


def heart_curve_polygon(points: int = 400) -> np.ndarray:
    """The parametric heart as a closed polygon (points, 2), y pointing up."""
    t = np.linspace(0.0, 2.0 * math.pi, points, endpoint=False)
    x = 16.0 * np.sin(t) ** 3
    y = 13.0 * np.cos(t) - 5.0 * np.cos(2 * t) - 2.0 * np.cos(3 * t) - np.cos(4 * t)
    return np.stack([x, y], axis=1)


def ellipse_polygon(aspect: float, angle: float, points: int = 400) -> np.ndarray:
    """An ellipse with axes (aspect, 1), rotated by `angle` degrees, as a closed polygon (points, 2)."""
    t = np.linspace(0.0, 2.0 * math.pi, points, endpoint=False)
    x, y = aspect * np.cos(t), np.sin(t)
    c, s = math.cos(math.radians(angle)), math.sin(math.radians(angle))
    return np.stack([c * x - s * y, s * x + c * y], axis=1)


def rasterise(polygons: tuple[np.ndarray, ...] | list[np.ndarray], size: int) -> Stamp:
    """Anti-aliased coverage of polygons (y up) scaled so their bounding box is `size` pixels tall.

    The bounding box's top-left corner sits on the top-left pixel corner; the stamp is
    (size, ceil(width)) pixels. Inside/outside uses the even-odd rule, so glyph counters stay holes.
    """
    from matplotlib.path import Path as MplPath

    points = np.concatenate(polygons)
    x0, y0 = points.min(axis=0)
    x1, y1 = points.max(axis=0)
    if not (y1 > y0 and x1 > x0):
        raise ValueError("rasterise: the outline has an empty bounding box")
    scale = size / (y1 - y0)  # pixels per outline unit
    height, width = size, max(1, math.ceil((x1 - x0) * scale - 1e-9))
    factor = SUPERSAMPLE
    while factor > 2 and height * width * factor * factor > _MAX_SAMPLES:
        factor //= 2
    offsets = (np.arange(factor) + 0.5) / factor
    rows = (np.arange(height)[:, None] + offsets[None, :]).ravel()  # sample centres, pixel units
    cols = (np.arange(width)[:, None] + offsets[None, :]).ravel()
    gx, gy = np.meshgrid(x0 + cols / scale, y1 - rows / scale)
    samples = np.stack([gx.ravel(), gy.ravel()], axis=1)
    inside = np.zeros(len(samples), dtype=bool)
    for polygon in polygons:
        inside ^= MplPath(polygon, closed=False).contains_points(samples)
    coverage = inside.reshape(height, factor, width, factor).mean(axis=(1, 3))
    return _normalised(coverage, coverage >= 0.5)


def gaussian_blob(size: int) -> Stamp:
    """Isotropic Gaussian with sigma = size / 4 on an odd grid centred on a pixel; mask = within 2 sigma."""
    sigma = size / 4.0
    radius = math.ceil(3.0 * sigma)
    r = np.arange(-radius, radius + 1, dtype=np.float64)
    profile = np.exp(-(r[:, None] ** 2 + r[None, :] ** 2) / (2.0 * sigma ** 2))
    return _normalised(profile, profile >= BLOB_MASK_LEVEL - 1e-12)


def _normalised(profile: np.ndarray, mask: np.ndarray) -> Stamp:
    peak = profile.max()
    if peak <= 0 or not mask.any():
        raise ValueError("the detail is too small to cover a single pixel; increase its size")
    profile = profile / peak
    profile.setflags(write=False)
    mask = np.ascontiguousarray(mask)
    mask.setflags(write=False)
    return Stamp(profile, mask)


@lru_cache(maxsize=64)
def make_stamp(detail: str, size: int, *, text: str = DEFAULT_TEXT, aspect: float = 0.7,
               angle: float = 0.0) -> Stamp:
    """The detail `detail` (one of DETAILS) with bounding-box height `size` pixels (>= 3).

    text: the string drawn by "text"; aspect, angle: width/height ratio and rotation (degrees,
    counter-clockwise) of "ellipse". Cached: the arrays are read-only.
    """
    if detail not in DETAILS:
        raise ValueError(f"unknown detail {detail!r}; choose one of {list(DETAILS)}")
    if isinstance(size, bool) or int(size) != size or size < 3:
        raise ValueError(f"detail size must be an integer number of pixels >= 3, got {size!r}")
    size = int(size)
    if detail in GLYPHS:
        return rasterise(glyph_polygons(GLYPHS[detail]), size)
    if detail == "text":
        if not text.strip():
            raise ValueError("detail 'text' needs a non-empty text")
        return rasterise(glyph_polygons(text), size)
    if detail == "heart-curve":
        return rasterise((heart_curve_polygon(),), size)
    if detail == "ellipse":
        if not aspect > 0:
            raise ValueError(f"ellipse aspect must be > 0, got {aspect!r}")
        return rasterise((ellipse_polygon(float(aspect), float(angle)),), size)
    return gaussian_blob(size)


def paste(stamp: Stamp, centres: torch.Tensor, image_size: int, *, dtype: torch.dtype = torch.float32,
          device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """Draw `stamp` into N blank images, its centre pixel (h // 2, w // 2) at each centres[k] = (row, col).

    Returns the profile images (N, 1, n, n) of `dtype` (0 outside the stamp) and the masks
    (N, 1, n, n) bool. Raises ValueError when a stamp would leave the image.
    """
    h, w = stamp.shape
    centres = torch.as_tensor(centres, dtype=torch.long).reshape(-1, 2).cpu()
    top = centres[:, 0] - h // 2
    left = centres[:, 1] - w // 2
    outside = (top < 0) | (left < 0) | (top + h > image_size) | (left + w > image_size)
    if bool(outside.any()):
        k = int(torch.nonzero(outside)[0])
        raise ValueError(f"a {h} x {w} detail centred at {tuple(centres[k].tolist())} does not fit in a "
                         f"{image_size} x {image_size} image")
    count = centres.shape[0]
    profile = torch.from_numpy(stamp.profile.copy()).to(device=device, dtype=dtype)
    mask = torch.from_numpy(stamp.mask.copy()).to(device)
    images = torch.zeros(count, 1, image_size, image_size, dtype=dtype, device=device)
    masks = torch.zeros(count, 1, image_size, image_size, dtype=torch.bool, device=device)
    rows = (top.to(device)[:, None] + torch.arange(h, device=device))[:, :, None]  # (N, h, 1)
    cols = (left.to(device)[:, None] + torch.arange(w, device=device))[:, None, :]  # (N, 1, w)
    batch = torch.arange(count, device=device)[:, None, None]
    images[batch, 0, rows, cols] = profile
    masks[batch, 0, rows, cols] = mask
    return images, masks


__all__ = ["BLOB_MASK_LEVEL", "DEFAULT_TEXT", "DETAILS", "GLYPHS", "Stamp", "ellipse_polygon", "font_file",
           "gaussian_blob", "glyph_polygons", "heart_curve_polygon", "make_stamp", "paste", "rasterise"]
