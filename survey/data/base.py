"""The dataset interface: images in [0, 1] with stable ids, a content hash and fixed splits."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import torch

SPLITS = ("train", "val", "test")
#: the units of independence a row can carry, finest first (columns image_id, volume_id, subject_id).
UNITS = ("image", "volume", "subject")


class ImageId(str):
    """An image's stable id (a plain string everywhere) that also knows the volume and the subject the image
    belongs to, where the data says: slices of one volume (a NIfTI or fastMRI file, a DICOM series, a folder
    of slices) share `volume`; the volumes of one patient share `subject`. None where unknown. Survives
    pickling (Ray), so the engine can stamp `volume_id` / `subject_id` on every row (`unit_columns`)."""

    volume: str | None
    subject: str | None

    def __new__(cls, value: str, volume: str | None = None, subject: str | None = None):
        self = super().__new__(cls, value)
        self.volume = None if volume is None else str(volume)
        self.subject = None if subject is None else str(subject)
        return self

    def __reduce__(self):
        return (ImageId, (str(self), self.volume, self.subject))


def unit_columns(image_id: str) -> dict[str, str]:
    """{"volume_id": ..., "subject_id": ...} for the units `image_id` knows (empty for a plain string)."""
    out = {}
    if getattr(image_id, "volume", None) is not None:
        out["volume_id"] = image_id.volume
    if getattr(image_id, "subject", None) is not None:
        out["subject_id"] = image_id.subject
    return out


def attach_units(rows: list[dict], image_ids) -> list[dict]:
    """`rows` with volume_id / subject_id added from the `ImageId` each row's image_id names (rows without
    an image_id, or whose id knows no volume, are left as they are). Returns new dicts."""
    known = {str(i): unit_columns(i) for i in image_ids}
    return [{**row, **known.get(str(row.get("image_id")), {})} if "image_id" in row else row for row in rows]


@dataclass(frozen=True)
class ImageSet:
    """A batch of images (K, 1, n, n) float32 in [0, 1], each with a stable id like 'brain/z083'
    (or complex64 with |x| <= 1: raw fastMRI k-space, `survey.data.fastmri` with source="kspace").

    Ids may be `ImageId`s naming each image's volume and subject (the units of independence: slices of one
    volume are correlated). `content_hash` is the sha256 of the ids and the float32 bytes, so a row can name exactly
    the data it was measured on. `skipped` lists (item, reason) for inputs that were not loaded:
    item is a file path relative to the dataset's path ('scans/IM0001'), or 'file#slice' for one
    slice of a stack; `skipped_message()` says it in one line for a log.
    """

    name: str
    split: str
    ids: list[str]
    images: torch.Tensor
    source: str
    skipped: list[tuple[str, str]] = field(default_factory=list)

    def __post_init__(self):
        if self.images.ndim != 4 or self.images.shape[1] != 1:
            raise ValueError(f"{self.name}: images must be (K, 1, n, n), got {tuple(self.images.shape)}")
        if len(self.ids) != self.images.shape[0]:
            raise ValueError(f"{self.name}: {len(self.ids)} ids for {self.images.shape[0]} images")

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def size(self) -> int:
        return int(self.images.shape[-1])

    @property
    def content_hash(self) -> str:
        h = hashlib.sha256()
        for image_id, img in zip(self.ids, self.images):
            h.update(image_id.encode())
            img = img.detach().cpu()
            # complex images (raw fastMRI k-space) hash their real and imaginary parts
            img = torch.view_as_real(img.to(torch.complex64)) if torch.is_complex(img) else img.to(torch.float32)
            h.update(img.contiguous().numpy().tobytes())
        return h.hexdigest()

    @property
    def volumes(self) -> list[str | None]:
        """Each image's volume (None where the data does not say)."""
        return [getattr(i, "volume", None) for i in self.ids]

    @property
    def subjects(self) -> list[str | None]:
        """Each image's subject (None where the data does not say)."""
        return [getattr(i, "subject", None) for i in self.ids]

    def skipped_message(self, limit: int = 10) -> str:
        """'skipped N files: a.png (reason); b.npy (reason); ... and K more', or '' if none was."""
        return skipped_message(self.skipped, limit)

    def subset(self, indices) -> "ImageSet":
        indices = list(indices)
        return ImageSet(self.name, self.split, [self.ids[i] for i in indices],
                        self.images[indices], self.source, list(self.skipped))


def skipped_message(skipped: list[tuple[str, str]], limit: int = 10) -> str:
    """One line naming the first `limit` skipped (item, reason) pairs and how many there are; '' if none."""
    if not skipped:
        return ""
    shown = "; ".join(f"{item} ({reason})" for item, reason in skipped[:limit])
    more = len(skipped) - limit
    return f"skipped {len(skipped)} file{'s' if len(skipped) != 1 else ''}: {shown}" + \
        (f"; ... and {more} more" if more > 0 else "")
