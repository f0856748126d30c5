"""The modified Shepp-Logan head phantom (Toft's higher-contrast intensities), values in [0, 1].

One image only, in the 'test' split; 'train' and 'val' raise ValueError (training on the image
you test on would be meaningless). Edges are antialiased by 4 x 4 supersampling.
"""

from __future__ import annotations

import math

import torch

from survey.data.base import ImageSet
from survey.data.ellipses import rasterise_ellipses

# intensity, semi-axis a (x), semi-axis b (y), centre x0, centre y0, angle (degrees, counter-clockwise)
MODIFIED_SHEPP_LOGAN = (
    (1.0, 0.6900, 0.9200, 0.00, 0.0000, 0.0),
    (-0.8, 0.6624, 0.8740, 0.00, -0.0184, 0.0),
    (-0.2, 0.1100, 0.3100, 0.22, 0.0000, -18.0),
    (-0.2, 0.1600, 0.4100, -0.22, 0.0000, 18.0),
    (0.1, 0.2100, 0.2500, 0.00, 0.3500, 0.0),
    (0.1, 0.0460, 0.0460, 0.00, 0.1000, 0.0),
    (0.1, 0.0460, 0.0460, 0.00, -0.1000, 0.0),
    (0.1, 0.0460, 0.0230, -0.08, -0.6050, 0.0),
    (0.1, 0.0230, 0.0230, 0.00, -0.6060, 0.0),
    (0.1, 0.0230, 0.0460, 0.06, -0.6050, 0.0),
)


def shepp_logan(size: int, supersample: int = 4) -> torch.Tensor:
    """The phantom as float32 (1, 1, size, size), max 1 (skull 1, brain 0.2, ventricles 0 at 64 px and up)."""
    t = torch.tensor(MODIFIED_SHEPP_LOGAN, dtype=torch.float32)[None]  # (1, 10, 6)
    image = rasterise_ellipses(t[..., 0], t[..., 1:3], t[..., 3:5], t[..., 5] * (math.pi / 180), size,
                               supersample)
    # below ~64 px the thin skull covers no pixel fully; rescale so every size spans [0, 1]
    return (image.clamp_(0.0, 1.0) / image.max()).clamp_(0.0, 1.0)


def load(split: str = "test", size: int = 64) -> ImageSet:
    if split != "test":
        raise ValueError(f"shepp-logan is a single test image; split {split!r} is empty (use split='test')")
    return ImageSet("shepp-logan", "test", ["shepp-logan/modified"], shepp_logan(size),
                    "modified Shepp-Logan phantom (Toft 1996 ellipse table), rendered in-process")
