"""What a run needs before it starts: the images of every dataset at every network's size, and the units."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np

from survey.engine.networks import NetworkHandle
from survey.plan import Unit, plan
from survey.spec import Study


@dataclass
class Work:
    """Images per (size, dataset) as float32 numpy, ids per dataset, content hash per dataset@size, units,
    and per dataset the (item, reason) of every input file its loader skipped."""

    images: dict[int, dict[str, np.ndarray]]
    ids: dict[str, list[str]]
    hashes: dict[str, str]
    units: list[Unit]
    skipped: dict[str, list[tuple[str, str]]] = field(default_factory=dict)


def load_images(study: Study, sizes: set[int], skipped: dict[str, list[tuple[str, str]]] | None = None
                ) -> tuple[dict[int, dict[str, np.ndarray]], dict[str, list[str]], dict[str, str]]:
    """Images per (size, dataset) as float32 numpy, ids per dataset, content hash per dataset@size; fills
    `skipped` (when given) with dataset -> (item, reason) of the files its loader could not use."""
    from survey.data.catalog import load_declared

    images: dict[int, dict[str, np.ndarray]] = defaultdict(dict)
    ids: dict[str, list[str]] = {}
    hashes: dict[str, str] = {}
    for ds in study.datasets:   # keyed by the study's name; loaded as its kind
        for size in sorted({ds.size} if ds.size else sizes):
            imgs = load_declared(ds, size, study.base_dir)
            images[size][ds.name] = imgs.images.numpy()
            if skipped is not None and imgs.skipped:
                skipped.setdefault(ds.name, [tuple(s) for s in imgs.skipped])
            if ds.name in ids and ids[ds.name] != imgs.ids:
                raise ValueError(f"dataset {ds.name!r} yields different images at different sizes")
            ids[ds.name] = imgs.ids
            hashes[f"{ds.name}@{size}"] = imgs.content_hash
    return images, ids, hashes


def plan_work(study: Study, handles: dict[str, NetworkHandle]) -> Work:
    """Load the images the networks need and expand the study into units."""
    skipped: dict[str, list[tuple[str, str]]] = {}
    images, ids, hashes = load_images(study, {h.size for h in handles.values()}, skipped)
    return Work(images, ids, hashes, plan(study, {name: len(v) for name, v in ids.items()}), skipped)
