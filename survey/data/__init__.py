"""Datasets: a registry of name -> loader returning an `ImageSet` for a split and size.

`load_dataset("brain", split="test", size=64)`; every loader is deterministic (same ids, same
pixels, same split on every machine) and reads only files on disk, never the network.
"""

from __future__ import annotations

from importlib import import_module

from survey.data.base import SPLITS, ImageSet

_REGISTRY: dict[str, str] = {
    "ellipses": "survey.data.ellipses:load",
    "shepp-logan": "survey.data.phantom:load",
    "brain": "survey.data.brain:load",
    "dicom-samples": "survey.data.dicom_samples:load",
    "folder": "survey.data.folder:load",
    "fastmri": "survey.data.fastmri:load",
}


def dataset_names() -> list[str]:
    return list(_REGISTRY)


def load_dataset(name: str, *, split: str = "test", size: int = 64, count: int | None = None,
                 **params) -> ImageSet:
    """Load `count` images (all when None) of dataset `name`, split `split`, resized to size x size."""
    if name not in _REGISTRY:
        raise ValueError(f"unknown dataset {name!r}; choose one of {dataset_names()}")
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r} for dataset {name!r}; choose one of {list(SPLITS)}")
    module, fn = _REGISTRY[name].split(":")
    images = getattr(import_module(module), fn)(split=split, size=size, **params)
    if count is not None:
        if count > len(images):
            raise ValueError(f"dataset {name!r} split {split!r} has {len(images)} images, {count} requested")
        images = images.subset(range(count))
    return images


__all__ = ["ImageSet", "SPLITS", "load_dataset", "dataset_names"]
