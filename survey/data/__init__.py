"""Datasets: a registry of name -> loader returning an `ImageSet` for a split and size.

`load_dataset("brain", split="test", size=64)`; every loader is deterministic (same ids, same
pixels, same split on every machine) and reads only files on disk, never the network.
"""

from __future__ import annotations

from survey.data.base import SPLITS, ImageSet
from survey.registry import Registry

#: name -> loader(split=, size=, **params) -> ImageSet; built-in ones as "module:loader", imported lazily.
DATASETS: Registry = Registry("dataset", {
    "ellipses": "survey.data.ellipses:load",
    "shepp-logan": "survey.data.phantom:load",
    "brain": "survey.data.brain:load",
    "dicom-samples": "survey.data.dicom_samples:load",
    "folder": "survey.data.folder:load",
    "fastmri": "survey.data.fastmri:load",
}, sort=False)
#: Decorator registering a dataset loader under a name.
register = DATASETS.register


def dataset_names() -> list[str]:
    return DATASETS.names()


def load_dataset(name: str, *, split: str = "test", size: int = 64, count: int | None = None,
                 **params) -> ImageSet:
    """Load `count` images (all when None) of dataset `name`, split `split`, resized to size x size."""
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; choose one of {dataset_names()}")
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r} for dataset {name!r}; choose one of {list(SPLITS)}")
    images = DATASETS.get(name)(split=split, size=size, **params)
    if count is not None:
        if count > len(images):
            raise ValueError(f"dataset {name!r} split {split!r} has {len(images)} images, {count} requested")
        images = images.subset(range(count))
    return images


__all__ = ["DATASETS", "ImageSet", "SPLITS", "dataset_names", "load_dataset", "register"]
