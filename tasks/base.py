"""The task interface: a registry of instability tests, the call-time context, seeded generators.

A task is a keyword-only dataclass holding only hyper-parameters. Called as
`task(ctx, generator)`, it returns a `TaskResult`: rows (list of dicts of plain Python scalars and
strings) plus tensors worth keeping. Tasks never print and draw randomness only from `generator`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import inspect
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Callable, Iterator, NamedTuple

import torch
from torch import nn

#: task name -> task class; filled by `@register(name)` when a task module is imported.
TASKS: dict[str, type] = {}


def register(name: str) -> Callable[[type], type]:
    """Class decorator adding a task under `name` (sets `cls.task_name`)."""

    def decorate(cls: type) -> type:
        if name in TASKS and TASKS[name] is not cls:
            raise ValueError(f"task name {name!r} is already registered by {TASKS[name].__qualname__}")
        cls.task_name = name
        TASKS[name] = cls
        return cls

    return decorate


def _task_parameters(cls: type) -> list[str]:
    if dataclasses.is_dataclass(cls):
        return [f.name for f in dataclasses.fields(cls) if f.init]
    return [p for p in inspect.signature(cls).parameters if p not in ("self", "args", "kwargs")]


def task_names() -> list[str]:
    return sorted(TASKS)


def make_task(name: str, **params: Any):
    """Build the task `name` from keyword hyper-parameters (as written in a study file).

    A `preset` key is handed to the class's `preset(name, **overrides)` when it has one
    (e.g. the attack's parameter sets from the paper's Table 1).
    """
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; choose one of {task_names()}")
    cls = TASKS[name]
    params = dict(params)
    preset = params.pop("preset", None)
    if preset is not None and not hasattr(cls, "preset"):
        raise ValueError(f"task {name!r} has no presets, but preset={preset!r} was given")
    known = _task_parameters(cls)
    unknown = sorted(set(params) - set(known))
    if unknown:
        raise ValueError(f"task {name!r}: unknown parameter(s) {unknown}; known parameters are {sorted(known)}")
    if preset is not None:
        return cls.preset(preset, **params)
    return cls(**params)


@dataclass
class TaskContext:
    """Everything a task needs at call time; built by the engine (or a test, or a notebook).

    net: called as `net(y, physics) -> (B, 1, n, n)` real image.
    physics: the `LinearPhysics` the network was trained for.
    reference: the stable reference solver, `reference(y, physics) -> image`, or None.
    images: (B, 1, n, n) ground truths in [0, 1]; image_ids: their B stable ids.
    network / dataset: names recorded in every row; unit_id: the work unit's id (seeds the generator).
    """

    net: Callable[..., torch.Tensor]
    physics: Any
    images: torch.Tensor
    image_ids: list[str]
    reference: Callable[..., torch.Tensor] | None = None
    network: str = "network"
    dataset: str = "dataset"
    unit_id: str | None = None

    def __post_init__(self):
        if self.images.ndim != 4 or self.images.shape[1] != 1:
            raise ValueError(f"TaskContext.images must be (B, 1, n, n), got {tuple(self.images.shape)}")
        if len(self.image_ids) != self.images.shape[0]:
            raise ValueError(f"TaskContext: {len(self.image_ids)} image_ids for {self.images.shape[0]} images")

    def labels(self) -> dict[str, Any]:
        """Columns every row of this context carries."""
        out: dict[str, Any] = {"network": self.network, "dataset": self.dataset}
        if self.unit_id is not None:
            out["unit_id"] = self.unit_id
        return out


class TaskResult(NamedTuple):
    """rows: one dict of plain scalars/strings per measurement; tensors: name -> tensor whose
    first axis is aligned with `rows` (tensors[name][k] belongs to rows[k], stored as the row's
    `tensor_index`), except names starting with "per_image/", indexed by the rows' `image_index`
    (one tensor per image, e.g. the ball's centre r shared by thousands of draws)."""

    rows: list[dict[str, Any]]
    tensors: dict[str, torch.Tensor]


@contextmanager
def eval_mode(module: Any) -> Iterator[None]:
    """Run `module` in eval mode (no dropout, BatchNorm statistics frozen, so samples do not depend on
    their batch), then restore its mode; anything that is not an nn.Module passes through."""
    if not isinstance(module, nn.Module):
        yield
        return
    was_training = module.training
    module.eval()
    try:
        yield
    finally:
        module.train(was_training)


def seed_from_id(unit_id: str) -> int:
    """A 63-bit seed from the sha256 of a unit id (stable across processes and machines)."""
    digest = hashlib.sha256(unit_id.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") & ((1 << 63) - 1)


def generator_for(unit_id: str, device: torch.device | str = "cpu") -> torch.Generator:
    """A `torch.Generator` on `device` seeded from `unit_id`, so any unit can be replayed alone."""
    if not isinstance(unit_id, str) or not unit_id:
        raise ValueError(f"generator_for: unit_id must be a non-empty string, got {unit_id!r}")
    gen = torch.Generator(device=torch.device(device))
    gen.manual_seed(seed_from_id(unit_id))
    return gen


__all__ = ["TASKS", "register", "make_task", "task_names", "TaskContext", "TaskResult",
           "seed_from_id", "generator_for", "eval_mode"]
