"""What each dataset holds: images per split, size and source (for `survey datasets list`)."""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any, Mapping

from survey.data import dataset_names
from survey.data.base import SPLITS

USER_FILE_DATASETS = ("folder", "fastmri")
TEST_ONLY_DATASETS = ("shepp-logan", "dicom-samples")


def resolve_dataset_params(params: Mapping[str, Any], base_dir: Path | str) -> dict[str, Any]:
    """A dataset declaration's `params` with `path` made absolute against `base_dir` (the study file's
    folder), so the same study loads the same files from any working directory or Ray worker."""
    resolved = dict(params)
    if "path" in resolved:
        resolved["path"] = str((Path(base_dir) / resolved["path"]).resolve())
    return resolved


def load_declared(spec, size: int, base_dir: Path | str):
    """The images of a study's dataset declaration (`survey.spec.DatasetSpec` or its dict) at `size`: loaded
    as its `kind` (default: its name), with `path` resolved against `base_dir`."""
    from survey.data import load_dataset

    get = spec.get if isinstance(spec, Mapping) else lambda key, default=None: getattr(spec, key, default)
    name = get("name")
    kind = get("kind") or name
    params = resolve_dataset_params(get("params") or {}, base_dir)
    try:
        return load_dataset(kind, split=get("split") or "test", size=size, count=get("count"), **params)
    except ValueError as exc:
        if kind == name:
            raise
        raise ValueError(f"dataset {name!r} (kind {kind!r}): {exc}") from None


def describe(name: str, size: int = 64, **params) -> dict:
    """{"name", "counts": {"train", "val", "test"} or None, "size", "source"} of dataset `name`.

    Built-in datasets are loaded (a second or so each); 'folder' and 'fastmri' are scanned once when
    `path` is given and report counts None without it.
    """
    if name not in dataset_names():
        raise ValueError(f"unknown dataset {name!r}; choose one of {dataset_names()}")
    if name in USER_FILE_DATASETS:
        return _describe_user_files(name, size, params)
    if name == "ellipses":
        from survey.data import ellipses

        defaults = {k: v.default for k, v in inspect.signature(ellipses.load).parameters.items()}
        counts = {s: int(params.get(f"n_{s}", defaults[f"n_{s}"])) for s in SPLITS}
        source = ellipses.load("test", size, **{**params, "n_test": 0}).source
        return {"name": name, "counts": counts, "size": size, "source": source}
    from survey.data import load_dataset

    counts, source = {}, None
    for split in SPLITS:
        if name in TEST_ONLY_DATASETS and split != "test":
            counts[split] = 0
            continue
        images = load_dataset(name, split=split, size=size, **params)
        counts[split], source = len(images), images.source
    return {"name": name, "counts": counts, "size": size, "source": source}


def _describe_user_files(name: str, size: int, params: dict) -> dict:
    path = params.get("path")
    if path is None:
        return {"name": name, "counts": None, "size": size, "source": "user files (path=...)"}
    if name == "folder":
        from survey.data.folder import scan
    else:
        from survey.data.fastmri import scan
    found = scan(path, size, **{k: v for k, v in params.items() if k != "path"})
    return {"name": name, "counts": found.counts(), "size": size, "source": found.source,
            "skipped": len(found.skipped)}
