"""Real CT and MR images that ship inside pydicom's wheel (pydicom/data/test_files).

A fixed list of single-frame greyscale images with distinct content (pydicom also ships the
same MR slice in many encodings; one copy is enough). Two are JPEG 2000, which pydicom decodes
through Pillow (a dependency of ours); a file that fails to decode on some machine is left out
and listed in `skipped`. RescaleSlope/Intercept are applied (CT in Hounsfield units), CT is
first clipped below at -1024 HU (air; the scanner's padding outside the field of view falls below
it), then every image is scaled from its minimum to its 99.5th percentile. Non-square images are padded (not cropped)
to a square with their background. Few images, so all are in 'test'; 'train' and 'val' raise.
Ids 'dicom-samples/<file stem>'; each image's volume is its SeriesInstanceUID and its subject its PatientID.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import torch

from survey.data import io
from survey.data.base import ImageId, ImageSet

# file name -> what it shows (documentation only)
SAMPLES = {
    "CT_small.dcm": "CT, chest at a thoracic vertebra, 128 x 128",
    "693_J2KI.dcm": "CT, head, 512 x 512, JPEG 2000",
    "J2K_pixelrep_mismatch.dcm": "CT, head at the skull base, 512 x 512, JPEG 2000 lossless",
    "MR_small.dcm": "MR, 64 x 64",
    "examples_overlay.dcm": "MR, abdomen at the liver and kidneys, 300 x 484",
}
AIR_HU = -1024.0


def test_files_dir() -> Path:
    spec = importlib.util.find_spec("pydicom")
    if spec is None or not spec.submodule_search_locations:
        raise ValueError("dataset 'dicom-samples' needs the pydicom package installed")
    return Path(list(spec.submodule_search_locations)[0]) / "data" / "test_files"


def load(split: str = "test", size: int = 64, *, percentile: float = io.DEFAULT_PERCENTILE) -> ImageSet:
    if split != "test":
        raise ValueError(f"dicom-samples has only a 'test' split ({len(SAMPLES)} images from pydicom); "
                         f"split {split!r} is empty")
    folder = test_files_dir()
    ids, images, skipped = [], [], []
    for name in SAMPLES:
        path = folder / name
        try:
            if not path.is_file():
                raise ValueError("file not present in this pydicom installation")
            frames, info = io.read_dicom(path)
            pixels = frames[0].clip(min=AIR_HU) if info["modality"] == "CT" else frames[0]
            images.append(io.prepare_image(pixels, size, fit="pad", percentile=percentile))
            ids.append(ImageId(f"dicom-samples/{path.stem}", volume=f"series:{info['series']}" if info["series"] else None,
                               subject=f"patient:{info['patient']}" if info["patient"] else None))
        except ValueError as exc:
            skipped.append((str(path), str(exc)))
    if not images:
        raise ValueError(f"dicom-samples: no image could be read from {folder}: {skipped}")
    source = f"CT and MR test images shipped with pydicom ({folder})"
    return ImageSet("dicom-samples", "test", ids, torch.stack(images), source, skipped)
