"""Expand a validated study into work units with stable ids (pure and deterministic).

A unit is (network, dataset, image shard, task, one grid point of parameters, repeat). Its id is a
sha256 of those facts and the study seed, so the same study always yields the same ids: the
ledger can tell what is done, and any unit can be replayed alone with the same random stream.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from survey.grid import expand_grid
from survey.spec import Study


@dataclass(frozen=True)
class Unit:
    unit_id: str
    network: str
    dataset: str
    task: str
    params: dict[str, Any] = field(hash=False)
    image_start: int = 0
    image_stop: int = 0
    repeat: int = 0
    task_index: int = 0        # position of the task in the study; tasks run in this order per stage
    # the study's plugins (resolved) and folder: a worker imports them before running the unit (survey.plugins)
    plugins: tuple[str, ...] = field(default=(), compare=False)
    study_dir: str = field(default="", compare=False)

    @property
    def image_count(self) -> int:
        return self.image_stop - self.image_start


def unit_id(study: Study, network: str, dataset: str, task: str, params: dict, start: int, stop: int,
            repeat: int) -> str:
    spec = next(d for d in study.datasets if d.name == dataset)
    declared = spec.model_dump()
    if declared.get("kind") in (None, spec.name):   # kind left at its default: the ids of older studies stay
        declared.pop("kind", None)
    key = json.dumps({"study": study.name, "seed": study.seed, "network": network,
                      "dataset": declared, "task": task, "params": params,
                      "images": [start, stop], "repeat": repeat}, sort_keys=True, default=str)
    return hashlib.sha256(key.encode()).hexdigest()[:24]


def plan(study: Study, dataset_sizes: dict[str, int]) -> list[Unit]:
    """All units of `study`; `dataset_sizes[name]` is the number of images the dataset spec yields (keyed
    by the study's dataset name, not its kind: two datasets of one kind are two datasets here)."""
    from survey import plugins

    units: list[Unit] = []
    extra = dict(plugins=tuple(plugins.resolve(p, study.base_dir) for p in study.plugins),
                 study_dir=str(study.base_dir))
    for t_index, task in enumerate(study.tasks):
        grid = expand_grid(task)
        for net in study.networks:
            if task.networks and net.name not in task.networks:
                continue
            for ds in study.datasets:
                if task.datasets and ds.name not in task.datasets:
                    continue
                total = dataset_sizes[ds.name]
                if task.max_images is not None:
                    total = min(total, task.max_images)
                for params in grid:
                    for start in range(0, total, task.images_per_unit):
                        stop = min(start + task.images_per_unit, total)
                        for repeat in range(task.repeats):
                            uid = unit_id(study, net.name, ds.name, task.name, params, start, stop, repeat)
                            units.append(Unit(uid, net.name, ds.name, task.name, params, start, stop,
                                              repeat, t_index, **extra))
    ids = [u.unit_id for u in units]
    if len(set(ids)) != len(ids):
        raise ValueError("study expands to duplicate units (identical grid points or datasets?)")
    return units
