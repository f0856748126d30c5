"""What a study will cost before it runs: units per (network, task), probed memory and batch sizes from the
memory budget, and (measured) seconds per unit from one image of each distinct task run in-process.

`estimate_study(study)` runs the same checks as `survey run` (networks build and answer a probe, every
(task, network) pair fits), then per network probes its memory (survey.engine.memory) and, unless
`measure=False`, times one image of the first unit of every distinct (task, parameters) on this machine
with the task's real code, reading its peak memory. Nothing is written to a store; Ray is not started.

`engine_batches(study, handles, units)` is what `survey run` calls on the driver before Ray starts: the same
probe per network, once, gives every unit of a task with its own `batch` the batch the budget allows (sent to
the actors, which build the task with it), and stops the run with one line when a unit cannot fit.
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import torch

from survey.engine import memory
from survey.spec import Study, StudyError


@dataclass(frozen=True)
class TaskCost:
    """One distinct (network, task, parameters) of the plan: its units and what one image costs."""

    network: str
    task: str
    params: str                      # the grid point's parameters as JSON
    units: int
    images: int                      # image slots over its units (images x repeats)
    batch: int                       # images (draws) per network call: what the budget allows, at most the
                                     # task's own `batch` (else the unit's images)
    probe_peak_bytes: int            # probed peak of one image (forward, or forward + backward)
    batch_peak_bytes: int            # planned peak of one call at `batch`: fixed + batch x per image x the
                                     # task's working set (memory.WORKING_SET), before the headroom
    seconds_per_image: float | None  # measured on one image (None: not measured)
    peak_bytes: int | None           # measured peak memory of that one-image run

    @property
    def seconds(self) -> float | None:
        """Expected serial seconds of all its units (measured per image x images)."""
        return None if self.seconds_per_image is None else self.seconds_per_image * self.images


@dataclass
class StudyCost:
    study: str
    device: str
    budget_bytes: int
    actors: int                      # actors per network: networks' units spread over them
    rows: list[TaskCost] = field(default_factory=list)

    def network_seconds(self, network: str) -> float | None:
        parts = [r.seconds for r in self.rows if r.network == network]
        return None if not parts or any(p is None for p in parts) else sum(parts) / self.actors

    def total_seconds(self) -> float | None:
        """Expected wall time: networks' pools run side by side, so the slowest network sets it."""
        per = [self.network_seconds(n) for n in dict.fromkeys(r.network for r in self.rows)]
        return None if not per or any(p is None for p in per) else max(per)

    def peak_bytes(self) -> int:
        """Largest planned peak of one call at its batch over every task (at most the budget by construction)."""
        return max((r.batch_peak_bytes for r in self.rows), default=0)


def task_params(unit) -> dict:
    """The unit's task parameters with their defaults filled in (what memory.working_set reads)."""
    from survey.tasks import make_task

    return make_task(unit.task, **unit.params).params()


def own_batch(unit) -> int | None:
    """The task's own `batch` (samples per network call) where it has one, else None (the unit's images
    are one call)."""
    from survey.tasks import make_task

    cap = getattr(make_task(unit.task, **unit.params), "batch", None)
    if isinstance(cap, int) and not isinstance(cap, bool) and cap >= 1:
        return cap
    return None


def _batch_cap(unit) -> int:
    """The most images (or draws) a task puts in one network call: its own `batch` where it has one,
    else the unit's images."""
    cap = own_batch(unit)
    return cap if cap is not None else max(unit.image_count, 1)


def _group_key(unit) -> tuple:
    return unit.network, unit.task_index, json.dumps(unit.params, sort_keys=True, default=str)


def probe_network(study: Study, name: str, net, physics, device: str) -> dict[bool, memory.MemoryProbe]:
    """Forward-only (False) and forward + backward (True) probes of one network at its image size;
    StudyError (one line) naming the network when the probe fails."""
    probes = {}
    for backward in (False, True):
        try:
            probes[backward] = memory.probe_memory(net, physics, network=name, backward=backward, device=device)
        except Exception as err:  # noqa: BLE001 - a network that cannot be probed is bad input
            raise StudyError(f"{study.path}: network {name!r}: memory probe at {physics.size} x {physics.size} "
                             f"failed: {type(err).__name__}: {' '.join(str(err).split())}") from None
    return probes


def backprops_reference(unit) -> bool:
    """Whether the unit's search backpropagates through the unrolled reference solver (its task says so)."""
    from survey.tasks import make_task

    return bool(getattr(make_task(unit.task, **unit.params), "backprops_reference", False))


def probe_reference(study: Study, name: str, physics, device: str) -> memory.MemoryProbe:
    """Forward + backward probe of the unrolled reference solver a worker builds for network `name`
    (`make_reference` at its physics, made differentiable as the attack does); StudyError when it fails."""
    from survey.numerics import differentiable
    from survey.solvers.cs import make_reference

    label = f"{name} (its unrolled reference)"
    try:
        return memory.probe_memory(differentiable(make_reference(physics)), physics, network=label,
                                   backward=True, device=device)
    except Exception as err:  # noqa: BLE001 - reported like a network's probe
        raise StudyError(f"{study.path}: network {name!r}: memory probe of its reference at {physics.size} x "
                         f"{physics.size} failed: {type(err).__name__}: {' '.join(str(err).split())}") from None


def search_probe(probes: dict[bool, memory.MemoryProbe], reference: memory.MemoryProbe | None
                 ) -> memory.MemoryProbe:
    """The probe a gradient search is sized by: the network's forward + backward, or with the unrolled reference
    the larger of the two in each part (targets are searched one after the other: the peak is the larger one),
    named after the one with the larger one-image peak."""
    network = probes[True]
    if reference is None:
        return network
    larger = reference if reference.peak(1) > network.peak(1) else network
    return dataclasses.replace(larger, fixed=max(network.fixed, reference.fixed),
                               per_image=max(network.per_image, reference.per_image))


def unit_batch(study: Study, unit, probes: dict[bool, memory.MemoryProbe], budget: float,
               reference: memory.MemoryProbe | None = None) -> int:
    """Images (or draws) per network call of `unit` within `budget` bytes; StudyError naming network (or its
    reference, `reference`: its probe, for a unit whose search backpropagates through it), task and the memory
    one image needs when not even one fits, or, for a task whose unit's images are one call (no `batch` of its
    own; the ball's centre search), when the unit's images do not fit together (the images per unit are part
    of a unit's identity, so the engine does not split them: the error says how many fit)."""
    images = max(unit.image_count, 1)
    searched = search_probe(probes, reference)
    inner = searched if memory.needs_backward(unit.task) else probes[False]
    try:
        if memory.search_first(unit.task):   # its worst-case search: the unit's images forward + backward
            _whole_unit(study, unit, memory.batch_size(searched, budget, task=unit.task, cap=images, search=True),
                        searched, budget, search=True)
        batch = memory.batch_size(inner, budget, task=unit.task, cap=_batch_cap(unit), params=task_params(unit))
    except memory.MemoryBudgetError as err:
        raise StudyError(f"{study.path}: {err}") from None
    if own_batch(unit) is None:
        _whole_unit(study, unit, batch, inner, budget)
    return batch


def _whole_unit(study: Study, unit, fits: int, probe: memory.MemoryProbe, budget: float, search: bool = False) -> None:
    if fits < unit.image_count:
        need = (probe.fixed + unit.image_count * memory.per_image_need(probe, unit.task, search,
                                                                       task_params(unit))) / memory.GB
        raise StudyError(
            f"{study.path}: [[tasks]] #{unit.task_index + 1} ({unit.task}) on network {unit.network!r}: a unit's "
            f"{unit.image_count} {probe.size} x {probe.size} images are one network call and need {need:.2f} GB "
            f"(probed), the memory budget of {budget / memory.GB:.2f} GB holds {fits}: set images_per_unit = {fits} "
            f"in that entry, or raise [engine] memory_gb")


def budget_batches(study: Study, handles: dict, units: list, device: str | None = None) -> dict[str, int]:
    """unit_id -> batch for every unit, from each network's probe on `device` (default: the study's) and the
    budget `[engine] memory_gb` (default: the actor's share of free memory). For the engine to call after
    preflight, before Ray starts: a unit that cannot fit one image stops the run there (StudyError)."""
    from survey.engine.worker import pick_device

    device = pick_device(device or study.engine.device)
    budget = memory.budget_bytes(study.engine.memory_gb, device, actor_count(study, units))
    batches: dict[str, int] = {}
    for name, handle in handles.items():
        mine = [u for u in units if u.network == name]
        if not mine:
            continue
        from survey import plugins
        plugins.load(mine[0].plugins, mine[0].study_dir or None)  # a plugin may register the operator
        net, physics = handle.build(device)
        probes = probe_network(study, name, net, physics, device)
        firsts: dict[tuple, Any] = {}   # one unit per distinct (task entry, parameters): they share a batch
        for unit in mine:
            firsts.setdefault(_group_key(unit), unit)
        unrolls = {key: backprops_reference(unit) for key, unit in firsts.items()}
        reference = probe_reference(study, name, physics, device) if any(unrolls.values()) else None
        per_group = {key: unit_batch(study, unit, probes, budget, reference if unrolls[key] else None)
                     for key, unit in firsts.items()}
        for unit in mine:
            batches[unit.unit_id] = per_group[_group_key(unit)]
    return batches


def actor_count(study: Study, units: list) -> int:
    """Actors that run side by side (every network with units has its own pool): the default budget's share."""
    return study.engine.actors_per_network * max(len({u.network for u in units}), 1)


def engine_batches(study: Study, handles: dict, units: list, device: str | None = None
                   ) -> tuple[dict[str, int], list[str]]:
    """What the actors need from the budget: unit_id -> `batch` for every unit of a task with its own `batch`
    that the budget makes smaller (the others run as written), and one note per (network, task entry) so
    shrunk. StudyError (one line) as `budget_batches`."""
    batches = budget_batches(study, handles, units, device)
    smaller: dict[str, int] = {}
    shrunk: dict[tuple, tuple[int, int]] = {}
    for unit in units:
        own = own_batch(unit)
        if own is not None and batches[unit.unit_id] < own:
            smaller[unit.unit_id] = batches[unit.unit_id]
            shrunk[(unit.network, unit.task_index, unit.task)] = (batches[unit.unit_id], own)
    budget = memory.budget_bytes(study.engine.memory_gb, pick_device_of(study, device), actor_count(study, units))
    notes = [f"network {net!r}, [[tasks]] #{index + 1} ({task}): {batch} samples per network call, not its batch "
             f"= {own} (memory budget {budget / memory.GB:.2f} GB per actor)"
             for (net, index, task), (batch, own) in shrunk.items()]
    return smaller, notes


def pick_device_of(study: Study, device: str | None = None) -> str:
    from survey.engine.worker import pick_device
    return pick_device(device or study.engine.device)


def estimate_study(study: Study, *, measure: bool = True, device: str | None = None,
                   on_step: Callable[[str], None] | None = None) -> StudyCost:
    """The plan's cost on this machine (see the module docstring); StudyError (one line) when a network's
    probe fails or the memory budget cannot hold one image of a task. on_step(text) hears, when measuring, each
    network's probe and each timed image as it starts (`survey plan` prints them: a large study's plan takes
    minutes)."""
    from survey.engine.planning import plan_work
    from survey.engine.preflight import check_tasks, checked_networks
    from survey.engine.worker import SurveyWorker, pick_device

    handles = checked_networks(study)
    work = plan_work(study, handles)
    check_tasks(study, work.units, handles)
    device = pick_device(device or study.engine.device)
    actors = study.engine.actors_per_network
    budget = memory.budget_bytes(study.engine.memory_gb, device, actor_count(study, work.units))
    cost = StudyCost(study.name, device, budget, actors)
    groups: dict[tuple, list] = {}
    for unit in work.units:
        groups.setdefault(_group_key(unit), []).append(unit)
    say = on_step or (lambda text: None)
    steps, total = 0, len(groups) if measure else 0
    for name, handle in handles.items():
        keys = [k for k in groups if k[0] == name]
        if not keys:
            continue
        if measure:   # without timing the plan is the probes alone: quick, and an error there stays one line
            say(f"network {name!r}: building and probing memory")
        worker = SurveyWorker(handle, device, threads=torch.get_num_threads())
        worker._build(groups[keys[0]][:1])  # the units' plugins, then the network, as on an actor
        probes = probe_network(study, name, worker.net, worker.physics, device)
        reference = None
        for key in keys:
            units = groups[key]
            first = units[0]
            own = backprops_reference(first)
            if own and reference is None:
                reference = probe_reference(study, name, worker.physics, device)
            batch = unit_batch(study, first, probes, budget, reference if own else None)
            probe = search_probe(probes, reference if own else None) if memory.needs_backward(first.task) \
                else probes[False]
            seconds = peak = None
            if measure:
                steps += 1
                say(f"network {name!r}, task {first.task!r}: timing one image ({steps} of {total})")
                seconds, peak = measure_one_image(worker, first, work)
            planned = probe.fixed + batch * probe.per_image * memory.working_set(first.task, params=task_params(first))
            cost.rows.append(TaskCost(name, first.task, key[2], len(units), sum(u.image_count for u in units),
                                      batch, probe.peak(1), int(planned), seconds, peak))
    return cost


def measure_one_image(worker, unit, work) -> tuple[float, int]:
    """Seconds and peak memory (bytes above the start) of `unit` cut to its first image, run in-process."""
    one = dataclasses.replace(unit, image_stop=unit.image_start + 1)
    size = worker.handle.size
    meter = memory.PeakMeter(torch.device(worker.device))
    meter.start()
    t0 = time.perf_counter()
    (outcome,) = worker.run([one], work.images.get(size, {}), work.ids)
    seconds = time.perf_counter() - t0
    if outcome.error is not None:
        last = [line for line in outcome.error.strip().splitlines() if line.strip()][-1]
        raise StudyError(f"network {unit.network!r}, task {unit.task!r}: one image failed while timing: {last}")
    return seconds, meter.peak()


__all__ = ["StudyCost", "TaskCost", "actor_count", "budget_batches", "engine_batches", "estimate_study", "own_batch",
           "measure_one_image", "probe_network", "task_params", "unit_batch"]
