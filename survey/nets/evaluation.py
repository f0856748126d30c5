"""Evaluate a zoo or bring-your-own network against H and the reference on a dataset split."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch


@dataclass
class Evaluation:
    network: str
    dataset: str
    count: int
    metrics: dict


def evaluate_network(name: str, *, study: Path | str | None = None, dataset: str | None = None,
                     split: str = "test", count: int | None = None, device: str = "cpu") -> Evaluation:
    """Mean PSNR/SSIM of network `name` (zoo, or declared in `study`), of H and of the reference."""
    from survey.data import load_dataset
    from survey.nets.train import evaluate
    from survey.solvers import make_reference

    params: dict = {}
    if study is not None:
        from survey.engine.networks import resolve_network
        from survey.spec import load_study

        spec = load_study(study)
        net_spec = next((n for n in spec.networks if n.name == name), None)
        if net_spec is None:
            raise ValueError(f"{study}: no network named {name!r} (declared: {[n.name for n in spec.networks]})")
        net, physics = resolve_network(net_spec, spec.base_dir).build(device)
        if dataset is None:
            ds = spec.datasets[0]
            dataset, params = ds.name, dict(ds.params)
            if "path" in params:
                params["path"] = str((spec.base_dir / params["path"]).resolve())
    else:
        from survey.nets.zoo import entry, load_network

        net, physics = load_network(name, device)
        dataset = dataset or entry(name).dataset
    images = load_dataset(dataset, split=split, size=physics.size, count=count, **params)
    metrics = evaluate(net, physics, images.images.to(device), reference=make_reference(physics),
                       generator=torch.Generator().manual_seed(1))
    return Evaluation(name, dataset, len(images), metrics)
