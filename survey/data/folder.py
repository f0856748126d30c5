"""A user's own images: a folder (searched recursively, in sorted order) or a single file.

Read: DICOM (.dcm/.dicom, and files without extension that carry the DICM marker; multi-frame files
give one image per frame), NIfTI (.nii/.nii.gz, reoriented to RAS; a 3-D volume gives every slice
along `axis`: 0 sagittal, 1 coronal, 2 axial), PNG/TIFF/JPEG (RGB -> luminance; multi-page TIFF gives
one image per page) and NumPy .npy (2-D, or a 3-D stack sliced along `npy_axis`, default 0;
complex -> magnitude). In stacks, slices with almost no signal (fewer than `min_tissue` of the
pixels above 5% of the stack's range) are dropped. Each image is centre-cropped (`fit="crop"`) or
padded (`fit="pad"`) to a square, resized and scaled to [0, 1] (see survey.data.io).

Ids: 'folder/<path relative to the folder>' plus '#<slice>' for stacks. Volumes (the unit of
independence, `ImageId.volume`): a DICOM file's SeriesInstanceUID (its PatientID the subject), a NIfTI
file or any other stack the file itself, a single 2-D image its parent folder relative to the path (one at
the top level its own volume). Splits: every image is in
'test' by default (`split_mode="test"`: a researcher's own images are what a study tests on).
`split_mode="hash"` splits by sha256 of a group key mod 10 (0 test, 1 val, 2..9 train), the key being
the coarsest unit known: the subject (a DICOM PatientID) where there is one, else the volume (so the slices
of a stack, a DICOM series stored as one file per slice, and the 2-D images of one sub-folder stay together).
Files that cannot be used, whatever the reader raised, are listed in `ImageSet.skipped` as
(path relative to the folder, reason), and slices dropped from a stack as ('file#slice', reason) or
(file, 'k of n slices empty ...'); a folder with no usable image at all raises ValueError with the reasons.
"""

from __future__ import annotations

import fnmatch
from pathlib import Path

import numpy as np

from survey.data import io
from survey.data.base import ImageId, ImageSet

SPLIT_MODES = io.SPLIT_MODES
MAX_REASONS_SHOWN = 20


def list_files(root: Path, pattern: str | None) -> list[tuple[Path, str]]:
    """(file, relative posix path) in sorted order; hidden files and folders are ignored."""
    if root.is_file():
        files = [(root, root.name)]
    else:
        files = []
        for p in root.rglob("*"):
            rel = p.relative_to(root)
            if p.is_file() and not any(part.startswith(".") for part in rel.parts):
                files.append((p, rel.as_posix()))
        files.sort(key=lambda item: item[1])
    if pattern:
        files = [(p, rel) for p, rel in files if fnmatch.fnmatch(rel, pattern) or fnmatch.fnmatch(p.name, pattern)]
    return files


def non_empty(slices: list[np.ndarray], min_tissue: float) -> list[int]:
    """Indices of the 2-D slices with at least min_tissue of their pixels above 5% of the stack's
    range (its minimum to the 99.5th percentile of its finite values); complex -> magnitude."""
    slices = [np.abs(s) if np.iscomplexobj(s) else np.asarray(s, dtype=np.float64) for s in slices]
    values = np.concatenate([s.ravel() for s in slices])
    values = values[np.isfinite(values)]
    if values.size == 0:
        raise ValueError("no finite values")
    lo, hi = float(values.min()), float(np.percentile(values, io.DEFAULT_PERCENTILE))
    if hi <= lo:
        hi = float(values.max())
    if hi <= lo:
        return []
    level = lo + 0.05 * (hi - lo)
    with np.errstate(invalid="ignore"):
        return [i for i, s in enumerate(slices) if (s > level).mean() >= min_tissue]


def split_key(volume: str, subject: str | None) -> str:
    """The group a hash split keeps together: the coarsest unit known (the subject, else the volume), so no
    subject or volume has images in two splits. A file that is its own volume keys by its relative path."""
    if subject is not None:
        return subject
    return volume.removeprefix("folder/")


def volume_of(rel: str, kind: str, is_stack: bool, header: dict) -> tuple[str, str | None]:
    """(volume, subject or None) of the images of one file, `rel` its path relative to the dataset: a DICOM
    file's SeriesInstanceUID and PatientID; a NIfTI file or any stack is its own volume; a single 2-D image
    belongs to the volume of its parent folder (relative to the dataset path); one at the top level of the
    dataset is its own volume (the dataset folder itself is no volume)."""
    subject = f"patient:{header['patient']}" if header.get("patient") else None
    if header.get("series"):
        return f"series:{header['series']}", subject
    if kind == "nifti" or is_stack or "/" not in rel:
        return f"folder/{rel}", subject
    return f"folder/{rel.rsplit('/', 1)[0]}", subject


def read_file(path: Path, kind: str, *, axis: int, npy_axis: int) -> tuple[list[np.ndarray], bool, dict]:
    """(2-D arrays, is_stack, header facts: DICOM series and patient) of one file; ValueError if unusable."""
    if kind == "dicom":
        frames, info = io.read_dicom(path)
        return frames, len(frames) > 1, info
    slices, is_stack = _read_other(path, kind, axis=axis, npy_axis=npy_axis)
    return slices, is_stack, {}


def _read_other(path: Path, kind: str, *, axis: int, npy_axis: int) -> tuple[list[np.ndarray], bool]:
    if kind == "raster":
        pages = io.read_raster(path)
        return pages, len(pages) > 1
    if kind == "nifti":
        data = io.read_nifti(path)
        if data.ndim == 2:
            return [data], False
        if data.ndim != 3:
            raise ValueError(f"expected a 2-D image or 3-D volume, got shape {tuple(data.shape)}")
        return [io.display_slice(data, i, axis) for i in range(data.shape[axis])], True
    data = io.read_numpy(path)
    if data.dtype.kind not in "biufc":
        raise ValueError(f"unsupported array dtype {data.dtype}")
    if data.ndim == 2:
        return [data], False
    if data.ndim != 3:
        raise ValueError(f"expected a 2-D image or 3-D stack, got shape {tuple(data.shape)}")
    if not -3 <= npy_axis < 3:
        raise ValueError(f"npy_axis must be 0, 1 or 2, got {npy_axis}")
    return list(np.moveaxis(data, npy_axis, 0)), True


def scan(path, size: int, *, axis: int = 2, npy_axis: int = 0, pattern: str | None = None,
         split_mode: str = io.DEFAULT_SPLIT_MODE, fit: str = "crop", min_tissue: float = 0.01,
         percentile: float = io.DEFAULT_PERCENTILE) -> io.Scan:
    """Read every usable image under `path` (see the module docstring); raises if there is none."""
    root = io.require_path(path, "folder")
    if axis not in (0, 1, 2):
        raise ValueError(f"folder: axis must be 0, 1 or 2, got {axis}")
    io.check_split_mode("folder", split_mode)
    files = list_files(root, pattern)
    out = io.Scan([], [], [], [], f"user files (path={root})")
    for file, rel in files:
        kind = io.file_kind(file)
        if kind is None:
            out.skipped.append((rel, f"unsupported file type {''.join(file.suffixes) or '(no extension)'!r}"))
            continue
        try:
            slices, is_stack, header = read_file(file, kind, axis=axis, npy_axis=npy_axis)
            volume, subject = volume_of(rel, kind, is_stack, header)
            keep = range(len(slices))
            if is_stack:
                keep = non_empty(slices, min_tissue)
                if len(keep) < len(slices):
                    out.skipped.append((rel, f"{len(slices) - len(keep)} of {len(slices)} slices empty "
                                             f"(< {min_tissue:g} of pixels with signal), dropped"))
        except Exception as exc:  # one unreadable file among many is reported, never fatal
            out.skipped.append((rel, io.failure_reason(exc)))
            continue
        split = io.file_split(split_mode, split_key(volume, subject))
        for i in keep:
            image_id = ImageId(f"folder/{rel}#{i}" if is_stack else f"folder/{rel}", volume=volume, subject=subject)
            try:
                out.images.append(io.prepare_image(slices[i], size, fit=fit, percentile=percentile))
            except Exception as exc:
                out.skipped.append((f"{rel}#{i}" if is_stack else rel, io.failure_reason(exc)))
                continue
            out.ids.append(image_id)
            out.splits.append(split)
    if not out.ids:
        reasons = "\n".join(f"  {f}: {r}" for f, r in out.skipped[:MAX_REASONS_SHOWN])
        more = len(out.skipped) - MAX_REASONS_SHOWN
        raise ValueError(f"folder {str(root)!r}: no usable image among {len(files)} files"
                         + (f":\n{reasons}" if reasons else "")
                         + (f"\n  ... and {more} more" if more > 0 else ""))
    return out


def load(split: str = "test", size: int = 64, *, path=None, axis: int = 2, npy_axis: int = 0,
         pattern: str | None = None, split_mode: str = io.DEFAULT_SPLIT_MODE, fit: str = "crop",
         min_tissue: float = 0.01, percentile: float = io.DEFAULT_PERCENTILE) -> ImageSet:
    """The images of split `split` under `path` (all of them, in 'test', by default; see the module
    docstring); files that could not be used are in the result's `skipped`."""
    found = scan(path, size, axis=axis, npy_axis=npy_axis, pattern=pattern, split_mode=split_mode,
                 fit=fit, min_tissue=min_tissue, percentile=percentile)
    return found.select("folder", split, split_mode)
