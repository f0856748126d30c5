"""Evaluate a network against H and the reference on a dataset split (mean PSNR / SSIM).

Works on a built network: the zoo path builds its own; a network declared in a study is built by the
engine (`survey.engine.networks.evaluate_study_network`), which knows study files.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import torch


@dataclass
class Evaluation:
    network: str
    dataset: str
    count: int
    metrics: dict


def evaluate_network(name: str, net, physics, dataset: str, *, split: str = "test", count: int | None = None,
                     params: Mapping[str, Any] | None = None, base_dir: Path | str | None = None,
                     device: str = "cpu") -> Evaluation:
    """Mean PSNR/SSIM of `net` (on `device`, with its `physics`), of H and of the reference on `count` images
    of `dataset`/`split`; `params` are the dataset's keywords, a relative `path` taken from `base_dir`."""
    from survey.data import load_dataset
    from survey.data.catalog import resolve_dataset_params
    from survey.nets.train import evaluate
    from survey.solvers import make_reference

    params = resolve_dataset_params(params or {}, base_dir or Path.cwd())
    images = load_dataset(dataset, split=split, size=physics.size, count=count, **params)
    metrics = evaluate(net, physics, images.images.to(device), reference=make_reference(physics),
                       generator=torch.Generator().manual_seed(1))
    return Evaluation(name, dataset, len(images), metrics)


def evaluate_zoo_network(name: str, *, dataset: str | None = None, split: str = "test", count: int | None = None,
                         device: str = "cpu") -> Evaluation:
    """`evaluate_network` for zoo network `name`, on its own training dataset unless `dataset` is given."""
    from survey.nets.zoo import entry, load_network

    net, physics = load_network(name, device)
    return evaluate_network(name, net, physics, dataset or entry(name).dataset, split=split, count=count,
                            device=device)
