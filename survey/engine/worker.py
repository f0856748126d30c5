"""The Ray actor: holds one network, its companions, its operator and the reference solver on its device,
runs units."""

from __future__ import annotations

import time
import traceback
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from survey.engine.finite import BadOutputError, FiniteGuard, check_rows
from survey.engine.networks import NetworkHandle
from survey.plan import Unit


@dataclass
class UnitOutcome:
    """What a unit sends back: rows and kept tensors, or the error it raised."""

    unit: Unit
    rows: list[dict[str, Any]] = field(default_factory=list)
    tensors: dict[str, torch.Tensor] = field(default_factory=dict)
    error: str | None = None
    seconds: float = 0.0
    #: False for an error that a retry would meet again (a network that turned non-finite on its seeded input)
    retry: bool = True
    #: samples per network call the task ran with when the memory budget made it smaller than its own `batch`
    batch: int | None = None


def pick_device(requested: str = "auto") -> str:
    if requested == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return requested


class SurveyWorker:
    """One copy of a network on one device. Created as a Ray actor by the scheduler (or used in-process)."""

    def __init__(self, handle: NetworkHandle, device: str = "auto", threads: int = 1,
                 batches: dict[str, int] | None = None):
        torch.set_flush_denormal(True)
        torch.set_num_threads(max(1, int(threads)))

        self.device = pick_device(device)
        self.handle = handle
        #: unit_id -> `batch` from the memory budget (survey.engine.cost.engine_batches), where smaller than the task's
        self.batches = dict(batches or {})
        self.net = None  # built on the first units, after their plugins are imported (`_build`)

    def _build(self, units: list[Unit]) -> None:
        """Import the units' plugins (a plugin may register the network's operator), then build the network,
        its companions and the reference once."""
        from survey import plugins
        from survey.solvers import make_reference

        for unit in units[:1]:  # the study's folder on the path (a factory's siblings), then its plugins
            plugins.load(unit.plugins, unit.study_dir or None)
        if self.net is not None:
            return
        self.net, self.physics = self.handle.build(self.device)
        for p in self.net.parameters():
            p.requires_grad_(False)
        self.companions = self.handle.build_companions(self.net, self.device)
        self.guarded = FiniteGuard(self.net, self.handle.name)
        self.reference = make_reference(self.physics)

    def describe(self) -> dict[str, Any]:
        import platform
        import socket
        name = torch.cuda.get_device_name() if self.device.startswith("cuda") else platform.processor() or "cpu"
        return {"device": self.device, "device_name": name, "host": socket.gethostname(),
                "torch": torch.__version__}

    def run(self, units: list[Unit], images: dict[str, np.ndarray],
            ids: dict[str, list[str]]) -> list[UnitOutcome]:
        """Run each unit; one outcome per unit, in order; a unit that raises yields an outcome with its
        error, the others go on."""
        from survey.data.base import attach_units
        from survey.tasks import TaskContext, generator_for, make_task

        try:
            self._build(units)
        except Exception:  # noqa: BLE001 - a plugin or network this machine cannot load: every unit says why
            return [UnitOutcome(unit, error=traceback.format_exc(limit=8)) for unit in units]
        outcomes = []
        for unit in units:
            start = time.perf_counter()
            try:
                lo, hi = unit.image_start, unit.image_stop
                x = torch.from_numpy(np.array(images[unit.dataset][lo:hi])).to(self.device)
                self.guarded.start(unit.unit_id)
                ctx = TaskContext(net=self.guarded, physics=self.physics, images=x,
                                  image_ids=ids[unit.dataset][lo:hi], reference=self.reference,
                                  network=unit.network, dataset=unit.dataset, unit_id=unit.unit_id,
                                  companions=self.companions)
                batch = self.batches.get(unit.unit_id)
                task = make_task(unit.task, **(unit.params if batch is None else {**unit.params, "batch": batch}))
                result = task(ctx, generator_for(unit.unit_id, self.device))
                check_rows(unit.network, unit.unit_id, unit.task, result.rows)
                tensors = {k: v.detach().cpu() for k, v in result.tensors.items()}
                rows = attach_units(result.rows, ctx.image_ids)   # volume_id / subject_id where the data says
                outcomes.append(UnitOutcome(unit, rows, tensors, None, time.perf_counter() - start, batch=batch))
            except BadOutputError as err:  # one line; the same seeded unit would meet it again
                outcomes.append(UnitOutcome(unit, error=str(err), seconds=time.perf_counter() - start, retry=False))
            except Exception:  # noqa: BLE001 - recorded in the ledger, the survey goes on
                outcomes.append(UnitOutcome(unit, error=traceback.format_exc(limit=8),
                                            seconds=time.perf_counter() - start))
        return outcomes
