"""Shared readers and the one image-preparation path every dataset uses.

Readers turn a file into a list of 2-D float arrays in the file's own units (Hounsfield for CT,
scanner units for MR, grey levels for PNG). `prepare_image` then makes each one a square
float32 tensor in [0, 1]: centre crop (or zero-pad) to a square, antialiased resize, and a
percentile-robust scaling whose result has min 0 and max 1 exactly. Anything that cannot become
such an image raises ValueError with the reason, which the loaders record in `ImageSet.skipped`.
Users' files go to the 'test' split unless `split_mode="hash"` asks for a split by file hash.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from survey.data.base import ImageSet

DEFAULT_PERCENTILE = 99.5
DICOM_SUFFIXES = (".dcm", ".dicom")
NIFTI_SUFFIXES = (".nii", ".nii.gz")
RASTER_SUFFIXES = (".png", ".tif", ".tiff", ".jpg", ".jpeg")
NUMPY_SUFFIXES = (".npy",)

_LUMA = (0.299, 0.587, 0.114)  # ITU-R BT.601 weights for RGB -> luminance


# ---------------------------------------------------------------- geometry and intensity

def square(image: torch.Tensor, fit: str = "crop") -> torch.Tensor:
    """(..., h, w) -> (..., s, s): centre crop to s = min(h, w), or pad to s = max(h, w) with the
    smallest value present (the background, whatever the units)."""
    h, w = image.shape[-2:]
    if fit == "crop":
        s = min(h, w)
        top, left = (h - s) // 2, (w - s) // 2
        return image[..., top:top + s, left:left + s]
    if fit == "pad":
        s = max(h, w)
        top, left = (s - h) // 2, (s - w) // 2
        return F.pad(image, (left, s - w - left, top, s - h - top), value=float(image.min()))
    raise ValueError(f"fit must be 'crop' or 'pad', got {fit!r}")


def resize(images: torch.Tensor, size: int) -> torch.Tensor:
    """(K, 1, s, s) -> (K, 1, size, size), bilinear with antialiasing (a triangle filter when shrinking).

    The result is a convex combination of input pixels, so the value range never grows.
    """
    if size < 2:
        raise ValueError(f"image size must be at least 2, got {size}")
    if images.shape[-1] == size and images.shape[-2] == size:
        return images
    return F.interpolate(images, size=(size, size), mode="bilinear", antialias=True, align_corners=False)


def scale_unit(images: torch.Tensor, percentile: float = DEFAULT_PERCENTILE,
               low: float | None = None) -> torch.Tensor:
    """Per image (K, 1, n, n): map [low, robust max] to [0, 1] and clip.

    low defaults to each image's minimum; the robust max is the given percentile of the pixels
    (100 = plain max). Raises ValueError when an image has no range above `low`.
    """
    flat = images.reshape(images.shape[0], -1).to(torch.float64)
    lo = flat.amin(dim=1) if low is None else torch.full_like(flat[:, 0], float(low))
    hi = torch.quantile(flat, percentile / 100.0, dim=1) if percentile < 100 else flat.amax(dim=1)
    hi = torch.where(hi > lo, hi, flat.amax(dim=1))  # few bright pixels: fall back to the max
    span = hi - lo
    bad = ~(span > 1e-12 * torch.maximum(hi.abs(), lo.abs()).clamp_min(1e-30))
    if bool(bad.any()):
        raise ValueError(f"constant image (all values {float(flat[bad.nonzero()[0, 0], 0]):.6g})")
    out = (flat - lo[:, None]) / span[:, None]
    return out.clamp_(0.0, 1.0).to(torch.float32).reshape(images.shape)


def prepare_image(array, size: int, *, fit: str = "crop", percentile: float = DEFAULT_PERCENTILE,
                  low: float | None = None) -> torch.Tensor:
    """One 2-D array (h, w), real or complex (magnitude taken) -> float32 tensor (1, size, size) in [0, 1].

    Raises ValueError naming what is wrong: dimensionality, NaN/inf, or a constant image.
    """
    a = np.asarray(array)
    if a.ndim != 2:
        raise ValueError(f"expected a 2-D image, got shape {tuple(a.shape)}")
    if min(a.shape) < 2:
        raise ValueError(f"image too small: shape {tuple(a.shape)}")
    if np.iscomplexobj(a):
        a = np.abs(a)
    if a.dtype.kind not in "fiub":
        raise ValueError(f"unsupported pixel type {a.dtype}")
    a = a.astype(np.float64, copy=False)
    if not np.isfinite(a).all():
        raise ValueError(f"contains NaN or inf ({int((~np.isfinite(a)).sum())} pixels)")
    if a.max() == a.min():
        raise ValueError(f"constant image (all values {float(a.flat[0]):.6g})")
    t = square(torch.from_numpy(np.ascontiguousarray(a))[None, None], fit)
    t = resize(t, size)
    return scale_unit(t, percentile, low)[0]


def display_slice(volume: np.ndarray, index: int, axis: int) -> np.ndarray:
    """2-D slice of an RAS-oriented volume, laid out for display.

    Rows run from the top of the second remaining axis down (anterior up for axial slices,
    superior up for sagittal and coronal ones); columns follow the first remaining axis in
    increasing order (axial and coronal: the patient's left on the image's left, the neurological
    convention; sagittal: anterior on the right).
    """
    s = volume[(slice(None),) * axis + (index,)]  # a view; np.take would copy the volume
    return np.ascontiguousarray(s.T[::-1])


def tissue_fraction(slices: np.ndarray, level: float) -> np.ndarray:
    """(K, h, w) -> (K,): fraction of pixels of each slice above `level`."""
    return (slices > level).reshape(slices.shape[0], -1).mean(axis=1)


# ---------------------------------------------------------------- splits

#: How users' files are assigned to splits: "test" puts every image in 'test' (the default: a
#: researcher's own images are data to test on, and a hash split would leave a small folder with
#: no test image at all); "hash" assigns each group of images by `hash_split` (10/10/80%).
SPLIT_MODES = ("test", "hash")
DEFAULT_SPLIT_MODE = "test"


def check_split_mode(dataset: str, split_mode: str) -> None:
    if split_mode not in SPLIT_MODES:
        raise ValueError(f"{dataset}: split_mode must be one of {SPLIT_MODES}, got {split_mode!r}")


def file_split(split_mode: str, key: str) -> str:
    """The split of every image of group `key` (a file, a DICOM series) under `split_mode`."""
    return "test" if split_mode == "test" else hash_split(key)


@dataclass
class Scan:
    """Every usable image of a user's files with the split each belongs to, before choosing one."""

    ids: list[str]
    images: list[torch.Tensor]   # each (1, size, size)
    splits: list[str]
    skipped: list[tuple[str, str]]
    source: str

    def counts(self) -> dict[str, int]:
        return {s: self.splits.count(s) for s in ("train", "val", "test")}

    def select(self, name: str, split: str, split_mode: str) -> ImageSet:
        """The ImageSet of one split (skipped inputs carried along); ValueError saying how the images
        are split, and how to get another split, when it is empty."""
        chosen = [i for i, s in enumerate(self.splits) if s == split]
        if not chosen:
            if split_mode == "test":
                how = (f"split_mode='test' (the default for users' files) puts all {len(self.ids)} images in "
                       f"'test'; pass split_mode='hash' for a train/val/test split by file hash")
            else:
                how = f"images per split: {self.counts()}; pass split_mode='test' to use every image as test data"
            raise ValueError(f"{name} ({self.source}): no image in split {split!r}; {how}")
        return ImageSet(name, split, [self.ids[i] for i in chosen], torch.stack([self.images[i] for i in chosen]),
                        self.source, list(self.skipped))


def hash_split(key: str) -> str:
    """Stable split of a key: sha256(key) mod 10 -> 0 test, 1 val, 2..9 train (10% / 10% / 80%)."""
    bucket = int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big") % 10
    return "test" if bucket == 0 else "val" if bucket == 1 else "train"


def require_path(path, dataset: str) -> Path:
    """The user's `path` parameter as an existing Path, or a ValueError saying what is missing."""
    if path is None or str(path) == "":
        raise ValueError(f"dataset {dataset!r} needs a path parameter (a file or folder)")
    p = Path(path).expanduser()
    if not p.exists():
        raise ValueError(f"dataset {dataset!r}: path {str(p)!r} does not exist")
    return p


# ---------------------------------------------------------------- file readers

def failure_reason(exc: BaseException) -> str:
    """The reason recorded for a file that could not be used: the message of our own ValueErrors,
    the exception's type and message for anything a third-party reader raised instead."""
    return str(exc) if isinstance(exc, ValueError) else f"{type(exc).__name__}: {exc}"


def file_kind(path: Path) -> str | None:
    """'dicom', 'nifti', 'raster', 'numpy' or None (not an image file we read)."""
    name = path.name.lower()
    if name.endswith(NIFTI_SUFFIXES):
        return "nifti"
    if name.endswith(DICOM_SUFFIXES):
        return "dicom"
    if name.endswith(RASTER_SUFFIXES):
        return "raster"
    if name.endswith(NUMPY_SUFFIXES):
        return "numpy"
    if path.suffix == "" and has_dicom_preamble(path):
        return "dicom"
    return None


def has_dicom_preamble(path: Path) -> bool:
    """True if the file carries the DICOM Part 10 marker 'DICM' at byte 128."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(132)
    except OSError:
        return False
    return len(head) == 132 and head[128:132] == b"DICM"


def read_dicom(path: Path) -> tuple[list[np.ndarray], dict]:
    """Frames of a DICOM file in modality units (RescaleSlope/Intercept applied), plus header facts.

    MONOCHROME1 is inverted so bright means more signal; colour is converted to luminance.
    Multi-frame files give one array per frame. Raises ValueError when the pixels cannot be decoded.
    """
    import pydicom

    try:
        ds = pydicom.dcmread(path)
    except Exception as exc:  # pydicom raises several types for non-DICOM bytes
        raise ValueError(f"not a readable DICOM file ({type(exc).__name__}: {exc})") from None
    if "PixelData" not in ds:
        raise ValueError("DICOM file has no pixel data")
    try:
        pixels = ds.pixel_array
    except Exception as exc:
        raise ValueError(f"DICOM pixel data cannot be decoded ({type(exc).__name__}: {exc})") from None
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2"))
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    samples = int(ds.get("SamplesPerPixel", 1) or 1)
    a = np.asarray(pixels)
    if samples > 1:
        if photometric.startswith("YBR") and int(pydicom.__version__.split(".")[0]) < 3:
            # pydicom >= 3 already returns RGB for YBR data; 2.x leaves the conversion to us
            from pydicom.pixel_data_handlers.util import convert_color_space
            a = convert_color_space(a, photometric, "RGB")
        a = luminance(a)
    elif photometric == "PALETTE COLOR":
        try:
            from pydicom.pixels import apply_color_lut
        except ImportError:  # pydicom 2.x
            from pydicom.pixel_data_handlers.util import apply_color_lut
        a = luminance(apply_color_lut(a, ds))
    a = a.astype(np.float64)
    slope = float(ds.get("RescaleSlope", 1.0) or 1.0)
    intercept = float(ds.get("RescaleIntercept", 0.0) or 0.0)
    a = a * slope + intercept
    if photometric == "MONOCHROME1":
        a = a.max() - a
    stack = a if frames > 1 else a[None]
    if stack.ndim != 3:
        raise ValueError(f"DICOM pixel array has unexpected shape {tuple(a.shape)}")
    info = {"modality": str(ds.get("Modality", "")), "photometric": photometric, "frames": frames,
            "series": str(ds.get("SeriesInstanceUID", "")) or None, "patient": str(ds.get("PatientID", "")) or None}
    return list(stack), info


def luminance(rgb: np.ndarray) -> np.ndarray:
    """(..., 3 or 4) RGB(A) -> (...) luminance; alpha is ignored."""
    rgb = np.asarray(rgb, dtype=np.float64)
    return rgb[..., 0] * _LUMA[0] + rgb[..., 1] * _LUMA[1] + rgb[..., 2] * _LUMA[2]


def read_raster(path: Path) -> list[np.ndarray]:
    """Pages of a PNG/TIFF/JPEG as 2-D grey arrays (RGB -> luminance, 16-bit kept as is)."""
    from PIL import Image, ImageSequence

    try:
        with Image.open(path) as im:
            pages = []
            for page in ImageSequence.Iterator(im):
                if page.mode in ("RGB", "RGBA", "CMYK", "YCbCr", "P", "PA", "LAB", "HSV"):
                    pages.append(luminance(np.asarray(page.convert("RGB"))))
                elif page.mode in ("LA", "La"):
                    pages.append(np.asarray(page.getchannel(0), dtype=np.float64))
                else:  # 1, L, I, I;16, F
                    pages.append(np.asarray(page, dtype=np.float64))
    except Exception as exc:
        raise ValueError(f"not a readable image ({type(exc).__name__}: {exc})") from None
    return pages


def read_numpy(path: Path) -> np.ndarray:
    """The array in a .npy file (no pickles)."""
    try:
        return np.load(path, allow_pickle=False)
    except Exception as exc:
        raise ValueError(f"not a readable .npy file ({type(exc).__name__}: {exc})") from None


def read_nifti(path: Path) -> np.ndarray:
    """A NIfTI image as a float32 array reoriented to RAS (axis 0 left->right, 1 posterior->anterior,
    2 inferior->superior); trailing singleton dimensions beyond the third are dropped."""
    import nibabel as nib

    try:
        img = nib.as_closest_canonical(nib.load(path))
        data = np.asarray(img.dataobj, dtype=np.float32)
    except Exception as exc:
        raise ValueError(f"not a readable NIfTI file ({type(exc).__name__}: {exc})") from None
    while data.ndim > 3 and data.shape[-1] == 1:
        data = data[..., 0]
    return data
