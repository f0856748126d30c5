"""fastMRI-style HDF5 files: a single .h5 file or a folder of them (searched recursively).

Per file, the image of each slice comes from the first dataset present among
- 'reconstruction_rss' or 'reconstruction_esc' (slices, h, w): used as they are;
- 'kspace', complex, (slices, coils, h, w) multi-coil or (slices, h, w) single-coil: the centred,
  orthonormal inverse 2-D FFT (ifftshift -> ifft2 -> fftshift) of each coil, combined by
  root-sum-of-squares (magnitude for one coil).
`key` forces one of them. Each slice is centre-cropped to a square (fastMRI's readout oversampling
makes k-space images tall), resized and scaled to [0, 1]. Ids 'fastmri/<file>#<slice>'; a file is
one volume ('fastmri/<file>'). Every slice
is in 'test' by default (`split_mode="test"`); `split_mode="hash"` splits by sha256 of the file name
mod 10 (0 test, 1 val, 2..9 train), so one volume's slices share a split. Unusable files are listed
in `skipped` as (file, reason), unusable slices of a usable file as ('file#slice', reason); if
nothing is usable, ValueError with the reasons.

`source="kspace"` uses the raw k-space itself as the measurements, as fastMRI's users do (the images
above are re-simulated into k-space by the study's operator instead). The ground truth is then the
complex image x whose k-space under the `mri` operator reproduces the file's samples exactly, so a
fastMRI mask on that operator (survey.physics.fastmri_masks) undersamples the acquired data:
- multi-coil files are reduced to one virtual coil by SVD coil compression (Buehrer et al. 2007,
  MRM 57:1131; Huang et al. 2008, MRI 26:133): the fixed combination w (unit norm) of the principal
  left singular vector of the (coils, samples) matrix of the whole volume, k_v = sum_c conj(w_c) k_c.
  It is linear, so the virtual coil keeps the sampling pattern and the raw noise (combined);
- the grid becomes size x size (size even): the readout axis (rows, axis -2) is cropped in image
  space when `readout="image"` (removes fastMRI's 2x readout oversampling; every phase-encode line
  stays one acquired line, transformed along its readout) or in k-space when `readout="kspace"`;
  the phase-encode axis (columns, the one fastMRI masks act on) is always cropped in k-space, so its
  samples are the acquired ones. A grid smaller than size is an unusable file;
- x = fftshift(ifft2(ifftshift(k), norm='ortho')) / c (fastMRI's centred transform), c = max |x|
  over the volume (recorded in `source`), so |x| <= 1. The `mri` operator's y = F x holds the
  samples in FFT layout with fastMRI's phase convention differing by (-1)^(i + j):
  `to_raw_layout(y) * c` equals the raw (processed) k-space exactly. image="magnitude" gives |x|
  instead (a real image; its k-space is then re-simulated, not raw).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from survey.data import io
from survey.data.base import ImageId, ImageSet

IMAGE_KEYS = ("reconstruction_rss", "reconstruction_esc")
KSPACE_KEY = "kspace"
SPLIT_MODES = io.SPLIT_MODES
SOURCES = ("image", "kspace")
IMAGE_KINDS = ("complex", "magnitude")
READOUT_CROPS = ("image", "kspace")


def kspace_to_image(kspace: np.ndarray) -> np.ndarray:
    """Centred k-space (coils, h, w) or (h, w), complex -> root-sum-of-squares image (h, w), float64.

    image_c = fftshift(ifft2(ifftshift(k_c), norm='ortho')), then sqrt(sum_c |image_c|^2).
    """
    k = np.asarray(kspace)
    coils = k if k.ndim == 3 else k[None]
    images = np.fft.fftshift(np.fft.ifft2(np.fft.ifftshift(coils, axes=(-2, -1)), norm="ortho"), axes=(-2, -1))
    return np.sqrt((np.abs(images) ** 2).sum(axis=0))


def h5_files(root: Path) -> list[tuple[Path, str]]:
    if root.is_file():
        return [(root, root.name)]
    found = [p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in (".h5", ".hdf5")]
    return sorted(((p, p.relative_to(root).as_posix()) for p in found), key=lambda item: item[1])


def choose_key(h5, key: str | None) -> str:
    names = list(h5.keys())
    if key is not None:
        if key not in names:
            raise ValueError(f"no dataset {key!r} (found {names})")
        return key
    for candidate in (*IMAGE_KEYS, KSPACE_KEY):
        if candidate in names:
            return candidate
    raise ValueError(f"no {' / '.join((*IMAGE_KEYS, KSPACE_KEY))} dataset (found {names})")


def slice_reader(dataset, key: str):
    """(number of slices, function slice index -> 2-D image) for one HDF5 dataset; checks shapes."""
    shape, kind = tuple(dataset.shape), dataset.dtype.kind
    if key == KSPACE_KEY:
        if kind != "c":
            raise ValueError(f"'kspace' must be complex, got dtype {dataset.dtype}")
        if len(shape) not in (3, 4):
            raise ValueError(f"'kspace' must be (slices, coils, h, w) or (slices, h, w), got shape {shape}")
        return shape[0], lambda i: kspace_to_image(dataset[i])
    if len(shape) == 2:
        return 1, lambda i: dataset[()]
    if len(shape) != 3:
        raise ValueError(f"{key!r} must be (slices, h, w), got shape {shape}")
    return shape[0], lambda i: dataset[i]


def scan(path, size: int, *, key: str | None = None, split_mode: str = io.DEFAULT_SPLIT_MODE,
         percentile: float = io.DEFAULT_PERCENTILE, source: str = "image", image: str = "complex",
         readout: str = "image") -> io.Scan:
    """Every usable slice of the fastMRI file(s) at `path`, with its split; raises if there is none."""
    import h5py

    root = io.require_path(path, "fastmri")
    io.check_split_mode("fastmri", split_mode)
    _check_choice("source", source, SOURCES)
    files = h5_files(root)
    if source == "kspace":
        if key not in (None, KSPACE_KEY):
            raise ValueError(f"fastmri: source='kspace' reads the 'kspace' dataset, not key={key!r}")
        return scan_raw(root, files, size, split_mode=split_mode, image=image, readout=readout)
    ids, images, splits, skipped = [], [], [], []
    for file, rel in files:
        try:
            h5 = h5py.File(file, "r")
        except Exception as exc:  # h5py raises OSError for files that are not HDF5
            skipped.append((rel, f"not a readable HDF5 file ({io.failure_reason(exc)})"))
            continue
        with h5:
            try:
                name = choose_key(h5, key)
                count, read = slice_reader(h5[name], name)
            except Exception as exc:
                skipped.append((rel, io.failure_reason(exc)))
                continue
            split = io.file_split(split_mode, rel)
            for i in range(count):
                try:  # a corrupt chunk loses its slice, not the file's other slices
                    images.append(io.prepare_image(read(i), size, fit="crop", percentile=percentile))
                except Exception as exc:
                    skipped.append((f"{rel}#{i}", io.failure_reason(exc)))
                    continue
                ids.append(ImageId(f"fastmri/{rel}#{i}", volume=f"fastmri/{rel}"))
                splits.append(split)
    if not ids:
        reasons = "".join(f"\n  {f}: {r}" for f, r in skipped[:20])
        raise ValueError(f"fastmri {str(root)!r}: no usable slice in {len(files)} HDF5 files{reasons}")
    return io.Scan(ids, images, splits, skipped, f"fastMRI HDF5 files (path={root})")


def load(split: str = "test", size: int = 64, *, path=None, key: str | None = None,
         split_mode: str = io.DEFAULT_SPLIT_MODE, percentile: float = io.DEFAULT_PERCENTILE,
         source: str = "image", image: str = "complex", readout: str = "image") -> ImageSet:
    """The slices of split `split` from the fastMRI file(s) at `path` (all of them, in 'test', by default;
    see the module docstring); unusable files and slices are in the result's `skipped`.

    source: "image" (reconstructions or RSS of k-space, in [0, 1]) or "kspace" (the raw k-space as the
    measurements: complex images, or their magnitude with image="magnitude"; readout: "image" or
    "kspace", how a longer readout axis is cropped to size)."""
    found = scan(path, size, key=key, split_mode=split_mode, percentile=percentile, source=source,
                 image=image, readout=readout)
    return found.select("fastmri", split, split_mode)


# ---------------------------------------------------------------- raw k-space as the measurements

def _check_choice(name: str, value, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"fastmri: {name} must be one of {choices}, got {value!r}")


def centred_ifft(k: np.ndarray, axes=(-2, -1)) -> np.ndarray:
    """fastMRI's centred orthonormal inverse DFT over `axes` (ifftshift -> ifftn -> fftshift)."""
    return np.fft.fftshift(np.fft.ifftn(np.fft.ifftshift(k, axes=axes), axes=axes, norm="ortho"), axes=axes)


def centred_fft(x: np.ndarray, axes=(-2, -1)) -> np.ndarray:
    """fastMRI's centred orthonormal DFT over `axes`, the inverse of `centred_ifft`."""
    return np.fft.fftshift(np.fft.fftn(np.fft.ifftshift(x, axes=axes), axes=axes, norm="ortho"), axes=axes)


def _centre_slice(length: int, size: int) -> slice:
    """The `size` central entries of a centred axis of `length`, keeping DC (length // 2) at size // 2."""
    start = length // 2 - size // 2
    return slice(start, start + size)


def fit_grid(kspace: np.ndarray, size: int, readout: str = "image") -> np.ndarray:
    """Centred k-space (..., rows, cols) -> (..., size, size): the readout (rows) cropped in image space
    ("image") or k-space ("kspace"), the phase-encode columns cropped in k-space."""
    rows, cols = kspace.shape[-2:]
    if rows < size or cols < size:
        raise ValueError(f"k-space grid {rows} x {cols} is smaller than size {size} (choose size <= {min(rows, cols)})")
    k = kspace[..., :, _centre_slice(cols, size)]
    if rows > size:
        if readout == "image":
            lines = centred_ifft(k, axes=(-2,))[..., _centre_slice(rows, size), :]
            k = centred_fft(lines, axes=(-2,))
        else:
            k = k[..., _centre_slice(rows, size), :]
    return k


def compression_weights(covariance: np.ndarray) -> np.ndarray:
    """The unit coil combination w (coils,) of SVD coil compression to one virtual coil: the principal
    eigenvector of the coil covariance sum_samples k k^H (= the principal left singular vector of the
    coils x samples matrix), its phase fixed so that the largest entry is real and positive."""
    values, vectors = np.linalg.eigh(covariance)
    w = vectors[:, np.argmax(values)]
    big = w[np.argmax(np.abs(w))]
    return w * (np.abs(big) / big)


def to_raw_layout(y: torch.Tensor) -> torch.Tensor:
    """The `mri` operator's measurements (..., n, n) (FFT layout, n even) in fastMRI's centred k-space
    layout and phase convention: (-1)^(i + j) * fftshift(y). Then to_raw_layout(A x) * scale is the
    sampled raw k-space of the file exactly (zeros off the mask)."""
    n_rows, n_cols = y.shape[-2:]
    if n_rows % 2 or n_cols % 2:
        raise ValueError(f"to_raw_layout needs an even grid, got {n_rows} x {n_cols}")
    i = torch.arange(n_rows, device=y.device)[:, None]
    j = torch.arange(n_cols, device=y.device)[None, :]
    sign = 1 - 2 * ((i + j) % 2)
    return torch.fft.fftshift(y, dim=(-2, -1)) * sign.to(y.real.dtype)


@dataclass
class RawVolume:
    """One file's raw k-space as measurements: kspace (S, n, n) complex128 (coil-compressed, cropped,
    centred), images = centred_ifft(kspace) / scale, slice indices kept, the combination `weights`
    (None for single-coil files), and what was skipped ('file#slice', reason)."""

    kspace: np.ndarray
    images: np.ndarray
    scale: float
    slices: list[int]
    weights: np.ndarray | None
    skipped: list[tuple[str, str]]


def read_raw(dataset, size: int, readout: str = "image", name: str = "") -> RawVolume:
    """The raw k-space of one HDF5 'kspace' dataset (slices, [coils,] rows, cols) as a `RawVolume`."""
    shape = tuple(dataset.shape)
    if dataset.dtype.kind != "c":
        raise ValueError(f"'kspace' must be complex, got dtype {dataset.dtype}")
    if len(shape) not in (3, 4):
        raise ValueError(f"'kspace' must be (slices, coils, h, w) or (slices, h, w), got shape {shape}")
    if size % 2:
        raise ValueError(f"source='kspace' needs an even size (fastMRI's centred grid), got {size}")
    multi = len(shape) == 4
    slices, skipped, covariance = [], [], 0
    for i in range(shape[0]):   # pass 1: usable slices, and the coil covariance of multi-coil data
        try:
            k = np.asarray(dataset[i], dtype=np.complex128)
            if not np.isfinite(k).all():
                raise ValueError(f"k-space contains NaN or inf ({int((~np.isfinite(k)).sum())} samples)")
        except Exception as exc:
            skipped.append((f"{name}#{i}", io.failure_reason(exc)))
            continue
        slices.append(i)
        if multi:
            flat = k.reshape(k.shape[0], -1)
            covariance = covariance + flat @ flat.conj().T
    if not slices:
        raise ValueError("no readable k-space slice")
    weights = compression_weights(covariance) if multi else None
    kspace = []
    for i in slices:
        k = np.asarray(dataset[i], dtype=np.complex128)
        if multi:
            k = np.tensordot(weights.conj(), k, axes=(0, 0))
        kspace.append(fit_grid(k, size, readout))
    kspace = np.stack(kspace)
    images = centred_ifft(kspace)
    scale = float(np.abs(images).max())
    if not scale > 0:
        raise ValueError("k-space is all zeros")
    return RawVolume(kspace, images / scale, scale, slices, weights, skipped)


def scan_raw(root: Path, files: list[tuple[Path, str]], size: int, *, split_mode: str, image: str,
             readout: str) -> io.Scan:
    """`scan` for source='kspace': every usable slice's complex (or magnitude) image, per-volume scaled."""
    import h5py

    _check_choice("image", image, IMAGE_KINDS)
    _check_choice("readout", readout, READOUT_CROPS)
    ids, images, splits, skipped, scales = [], [], [], [], []
    for file, rel in files:
        try:
            h5 = h5py.File(file, "r")
        except Exception as exc:
            skipped.append((rel, f"not a readable HDF5 file ({io.failure_reason(exc)})"))
            continue
        with h5:
            try:
                if KSPACE_KEY not in h5:
                    raise ValueError(f"no 'kspace' dataset (found {list(h5.keys())})")
                volume = read_raw(h5[KSPACE_KEY], size, readout, rel)
            except Exception as exc:
                skipped.append((rel, io.failure_reason(exc)))
                continue
        skipped.extend(volume.skipped)
        scales.append(f"{rel} {volume.scale:.6g}")
        split = io.file_split(split_mode, rel)
        for i, x in zip(volume.slices, volume.images):
            pixels = torch.from_numpy(x.astype(np.complex64))
            images.append((pixels.abs() if image == "magnitude" else pixels)[None])
            ids.append(ImageId(f"fastmri/{rel}#{i}", volume=f"fastmri/{rel}"))
            splits.append(split)
    if not ids:
        reasons = "".join(f"\n  {f}: {r}" for f, r in skipped[:20])
        raise ValueError(f"fastmri {str(root)!r}: no usable k-space in {len(files)} HDF5 files{reasons}")
    shown = "; ".join(scales[:10]) + (f"; ... {len(scales) - 10} more" if len(scales) > 10 else "")
    source = (f"fastMRI raw k-space as measurements (path={root}, image={image}, readout crop in {readout} "
              f"space, multi-coil by SVD compression to one coil; x = image / c per volume, c: {shown})")
    return io.Scan(ids, images, splits, skipped, source)
