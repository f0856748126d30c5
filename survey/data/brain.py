"""Axial slices of a real T1-weighted brain MRI: the ICBM 2009a nonlinear symmetric template.

The template ships inside the nilearn wheel (1 mm isotropic, 197 x 233 x 189, skull-stripped);
it is read with nibabel from the installed package, never downloaded, and nilearn itself is not
imported (slow). Slices:
- kept when at least `min_tissue` of the slice's voxels are tissue (> 10% of the volume maximum):
  z = 21..143, 123 slices, with the default 0.1;
- cut to one square box around the tissue of all kept slices (plus an 8% margin), so anatomy
  has the same scale in every slice, then resized to size x size with antialiasing;
- shown anterior up, the patient's left on the image's left;
- scaled to [0, 1] by the 99.5th percentile of the slice's tissue pixels (clipped above).
Splits by slice index: test z % 5 == 0, val z % 5 == 1, train the rest. Ids 'brain/z083'. Every slice
belongs to one volume and one subject (VOLUME, SUBJECT): intervals over these slices speak for slices of
this one template, not for a population of brains.
"""

from __future__ import annotations

import importlib.util
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from survey.data import io
from survey.data.base import ImageId, ImageSet

TEMPLATE = "mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz"
TISSUE_LEVEL = 0.1   # of the volume maximum
MARGIN = 0.08        # background kept around the tissue box, as a fraction of its larger side
VOLUME = "brain/icbm2009a"
SUBJECT = "icbm152-2009a-template"


def template_path() -> Path:
    """Where the installed nilearn wheel keeps the T1 template (found without importing nilearn)."""
    spec = importlib.util.find_spec("nilearn")
    if spec is None or not spec.submodule_search_locations:
        raise ValueError("dataset 'brain' needs the nilearn package installed (it ships the ICBM 2009a "
                         "template); install it with pip install nilearn")
    path = Path(list(spec.submodule_search_locations)[0]) / "datasets" / "data" / TEMPLATE
    if not path.is_file():
        raise ValueError(f"dataset 'brain': the installed nilearn has no {TEMPLATE} at {path}")
    return path


@lru_cache(maxsize=1)
def template_volume() -> np.ndarray:
    """The template as float32 (x, y, z) in RAS orientation; decoded once per process (read-only)."""
    volume = io.read_nifti(template_path())
    volume.setflags(write=False)
    return volume


def split_of(z: int) -> str:
    return "test" if z % 5 == 0 else "val" if z % 5 == 1 else "train"


def kept_slices(volume: np.ndarray, min_tissue: float) -> list[int]:
    """Axial indices z whose tissue fraction is at least min_tissue."""
    level = TISSUE_LEVEL * float(volume.max())
    fraction = io.tissue_fraction(np.moveaxis(volume, 2, 0), level)
    return [int(z) for z in np.nonzero(fraction >= min_tissue)[0]]


def tissue_box(slices: np.ndarray, level: float) -> tuple[int, int, int]:
    """(top, left, side) of one square box holding the tissue of every (K, h, w) slice, plus a
    MARGIN of background on each side (so no anatomy touches the image border at any size)."""
    tissue = (slices > level).any(axis=0)
    rows, cols = np.nonzero(tissue.any(axis=1))[0], np.nonzero(tissue.any(axis=0))[0]
    extent = max(rows[-1] - rows[0], cols[-1] - cols[0]) + 1
    side = extent + 2 * int(round(MARGIN * extent))
    top = (rows[0] + rows[-1] + 1 - side) // 2
    left = (cols[0] + cols[-1] + 1 - side) // 2
    return int(top), int(left), int(side)


def cut_box(slices: np.ndarray, top: int, left: int, side: int) -> np.ndarray:
    """(K, h, w) -> (K, side, side), zero where the box leaves the slice."""
    k, h, w = slices.shape
    out = np.zeros((k, side, side), dtype=np.float32)
    r0, c0 = max(top, 0), max(left, 0)
    r1, c1 = min(top + side, h), min(left + side, w)
    out[:, r0 - top:r1 - top, c0 - left:c1 - left] = slices[:, r0:r1, c0:c1]
    return out


def load(split: str = "test", size: int = 64, *, min_tissue: float = 0.1,
         percentile: float = io.DEFAULT_PERCENTILE) -> ImageSet:
    """The `split` slices of the brain template at size x size (see the module docstring)."""
    if split not in ("train", "val", "test"):
        raise ValueError(f"brain: unknown split {split!r}")
    if not 0.0 < min_tissue < 1.0:
        raise ValueError(f"brain: min_tissue must be in (0, 1), got {min_tissue}")
    volume = template_volume()
    level = TISSUE_LEVEL * float(volume.max())
    zs = kept_slices(volume, min_tissue)
    slices = np.stack([io.display_slice(volume, z, axis=2) for z in zs])
    box = tissue_box(slices, level)   # from every kept slice, so all splits share one geometry
    chosen = [i for i, z in enumerate(zs) if split_of(z) == split]
    images = io.resize(torch.from_numpy(cut_box(slices[chosen], *box))[:, None], size)
    images = scale_by_tissue(images, level, percentile)
    source = (f"ICBM 2009a nonlinear symmetric T1 template ({TEMPLATE}, shipped in the nilearn wheel), "
              f"axial slices z={zs[0]}..{zs[-1]} with tissue fraction >= {min_tissue}")
    ids = [ImageId(f"brain/z{zs[i]:03d}", volume=VOLUME, subject=SUBJECT) for i in chosen]
    return ImageSet("brain", split, ids, images, source)


def scale_by_tissue(images: torch.Tensor, level: float, percentile: float) -> torch.Tensor:
    """(K, 1, n, n) -> [0, 1]: divide each image by the percentile of its pixels above `level`."""
    out = torch.empty_like(images)
    for i, img in enumerate(images):
        tissue = img[img > level]
        if tissue.numel() == 0:  # the slice shrank below one tissue pixel at this size
            tissue = img.flatten()
        peak = torch.quantile(tissue.to(torch.float64), percentile / 100.0).clamp_min(1e-12)
        out[i] = (img / peak).clamp(0.0, 1.0)
    return out
