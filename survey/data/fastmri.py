"""fastMRI-style HDF5 files: a single .h5 file or a folder of them (searched recursively).

Per file, the image of each slice comes from the first dataset present among
- 'reconstruction_rss' or 'reconstruction_esc' (slices, h, w): used as they are;
- 'kspace', complex, (slices, coils, h, w) multi-coil or (slices, h, w) single-coil: the centred,
  orthonormal inverse 2-D FFT (ifftshift -> ifft2 -> fftshift) of each coil, combined by
  root-sum-of-squares (magnitude for one coil).
`key` forces one of them. Each slice is centre-cropped to a square (fastMRI's readout oversampling
makes k-space images tall), resized and scaled to [0, 1]. Ids 'fastmri/<file>#<slice>'. Every slice
is in 'test' by default (`split_mode="test"`); `split_mode="hash"` splits by sha256 of the file name
mod 10 (0 test, 1 val, 2..9 train), so one volume's slices share a split. Unusable files are listed
in `skipped` as (file, reason), unusable slices of a usable file as ('file#slice', reason); if
nothing is usable, ValueError with the reasons.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from survey.data import io
from survey.data.base import ImageSet

IMAGE_KEYS = ("reconstruction_rss", "reconstruction_esc")
KSPACE_KEY = "kspace"
SPLIT_MODES = io.SPLIT_MODES


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
         percentile: float = io.DEFAULT_PERCENTILE) -> io.Scan:
    """Every usable slice of the fastMRI file(s) at `path`, with its split; raises if there is none."""
    import h5py

    root = io.require_path(path, "fastmri")
    io.check_split_mode("fastmri", split_mode)
    files = h5_files(root)
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
                ids.append(f"fastmri/{rel}#{i}")
                splits.append(split)
    if not ids:
        reasons = "".join(f"\n  {f}: {r}" for f, r in skipped[:20])
        raise ValueError(f"fastmri {str(root)!r}: no usable slice in {len(files)} HDF5 files{reasons}")
    return io.Scan(ids, images, splits, skipped, f"fastMRI HDF5 files (path={root})")


def load(split: str = "test", size: int = 64, *, path=None, key: str | None = None,
         split_mode: str = io.DEFAULT_SPLIT_MODE, percentile: float = io.DEFAULT_PERCENTILE) -> ImageSet:
    """The slices of split `split` from the fastMRI file(s) at `path` (all of them, in 'test', by default;
    see the module docstring); unusable files and slices are in the result's `skipped`."""
    found = scan(path, size, key=key, split_mode=split_mode, percentile=percentile)
    return found.select("fastmri", split, split_mode)
