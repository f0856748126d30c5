"""Units onto Ray actors: one pool of actors per network, a bounded number of calls in flight per actor,
outcomes collected in completion order.

An actor that dies mid-call (node lost, out of memory) sends its units back to the queue without
spending their retries; a unit whose calls kill `engine.max_crashes` actors is recorded as failed (it
may be what kills them). A unit that raises is retried `engine.retries` times, then recorded as failed;
one whose network turned non-finite (survey.engine.finite) is recorded as failed at once (its seeded
input would meet it again). A later `survey run` retries every failed unit.
"""

from __future__ import annotations

import time
from collections import defaultdict, deque
from dataclasses import dataclass, field, replace
from typing import Callable

import ray

from survey.engine.interrupts import Interrupts
from survey.engine.networks import NetworkHandle
from survey.engine.progress import RunProgress
from survey.engine.worker import SurveyWorker, UnitOutcome
from survey.engine.writer import StoreWriter
from survey.plan import Unit
from survey.spec import EngineSpec

#: Seconds to wait for a restarting actor when no other actor of its network is alive.
RECOVERY_TIMEOUT = 600.0

#: Seconds between looks at a noted Ctrl-C / SIGTERM while no call returns (survey.engine.interrupts).
SIGNAL_POLL = 0.5


@dataclass(frozen=True)
class InFlight:
    """A unit on its way through the engine: how often it has been tried and how many actors died under it."""

    unit: Unit
    attempt: int = 1
    crashes: int = 0


@dataclass
class Tally:
    """What the dispatch loop has recorded so far."""

    done: int = 0
    failed: int = 0
    rows: int = 0
    failures: list[tuple[str, str]] = field(default_factory=list)


def gpu_share(engine: EngineSpec) -> float:
    """GPUs per actor: the study's setting, else an even share of one GPU when the cluster has GPUs."""
    if engine.gpus_per_actor:
        return engine.gpus_per_actor
    if engine.device in ("auto", "cuda") and ray.cluster_resources().get("GPU", 0) > 0:
        return 1.0 / engine.actors_per_network
    return 0.0


def cpu_share(requested: float, actors: int) -> float:
    """CPUs per actor: as requested, scaled down (fractions allowed) so that every actor of every
    network fits on the cluster at once; otherwise an actor would wait forever for a free CPU."""
    total = ray.cluster_resources().get("CPU", 1.0)
    return min(requested, total / actors)


class ActorPool:
    """The actors of every network, their health, and the calls in flight."""

    def __init__(self, engine: EngineSpec, handles: dict[str, NetworkHandle], networks: list[str],
                 batches: dict[str, dict[str, int]] | None = None):
        gpus = gpu_share(engine)
        device = engine.device if engine.device != "auto" or gpus == 0 else "cuda"
        cpus = cpu_share(engine.cpus_per_actor, engine.actors_per_network * len(networks))
        # No Ray restarts: a dead actor is replaced by a fresh one (`ping_returned`). Ray would restart it from
        # constructor arguments kept in its object store (a network's weights), and says so at error level.
        self.remote = ray.remote(max_restarts=0, max_task_retries=0)(SurveyWorker)
        self.options = dict(num_cpus=cpus, num_gpus=gpus)
        batches = batches or {}
        self.args = {name: (handles[name], device, max(1, round(cpus)), batches.get(name, {})) for name in networks}
        self.actors = {name: [self._start(name) for _ in range(engine.actors_per_network)] for name in networks}
        self.healthy = {(name, i): True for name, pool in self.actors.items() for i in range(len(pool))}
        self.load: dict[tuple[str, int], int] = defaultdict(int)
        self.calls: dict[ray.ObjectRef, tuple[str, int, list[InFlight]]] = {}
        self.order: dict[ray.ObjectRef, int] = {}          # submission order of each call
        self.culprit: dict[tuple[str, int], int] = {}      # the call that was running when an actor died
        self.pings: dict[ray.ObjectRef, tuple[str, int]] = {}

    def _start(self, name: str):
        return self.remote.options(**self.options).remote(*self.args[name])

    def describe(self) -> dict[str, dict]:
        return dict(zip(self.actors, ray.get([pool[0].describe.remote() for pool in self.actors.values()])))

    def submit(self, queues: dict[str, deque], max_in_flight: int, units_per_call: int, refs: dict) -> None:
        for name, queue in queues.items():
            for i, actor in enumerate(self.actors[name]):
                while queue and self.healthy[(name, i)] and self.load[(name, i)] < max_in_flight:
                    batch = [queue.popleft() for _ in range(min(units_per_call, len(queue)))]
                    ref = actor.run.remote([f.unit for f in batch], *refs[name])
                    self.calls[ref] = (name, i, batch)
                    self.order[ref] = len(self.order)
                    self.load[(name, i)] += 1

    def returned(self, ref) -> tuple[str, int, list[InFlight]]:
        """Forget call `ref` (it finished or failed); its network, actor index and units."""
        name, i, batch = self.calls.pop(ref)
        self.load[(name, i)] -= 1
        return name, i, batch

    def died_running(self, ref, name: str, i: int) -> bool:
        """Call `ref` failed because its actor died. Take no work to that actor until a ping says it is
        back (a fresh actor in its place). True when `ref` was the call running at the time (calls to an actor run
        in submission order, so the oldest outstanding one); the others only waited behind it."""
        key = (name, i)
        if self.healthy[key]:
            self.healthy[key] = False
            self.pings[self.actors[name][i].describe.remote()] = key
            outstanding = [self.order[r] for r, (n, j, _) in self.calls.items() if (n, j) == key]
            self.culprit[key] = min([self.order[ref], *outstanding])
        return self.order.pop(ref) == self.culprit[key]

    def ping_returned(self, ref) -> None:
        name, i = self.pings.pop(ref)
        try:
            ray.get(ref)
        except ray.exceptions.RayError:  # it is dead: start a fresh actor in its place
            self.actors[name][i] = self._start(name)
            self.pings[self.actors[name][i].describe.remote()] = (name, i)
            return
        self.healthy[(name, i)] = True
        self.culprit.pop((name, i), None)


class Dispatcher:
    """The loop: submit, wait for the next finished call, record its outcomes, submit again."""

    def __init__(self, engine: EngineSpec, pool: ActorPool, refs: dict, writer: StoreWriter, units: list[Unit],
                 units_per_call: int = 1, on_progress: Callable[[dict], None] | None = None,
                 interrupts: Interrupts | None = None):
        self.engine, self.pool, self.refs, self.writer = engine, pool, refs, writer
        self.interrupts = interrupts if interrupts is not None else Interrupts()   # unopened: notes nothing
        self.units_per_call, self.on_progress = units_per_call, on_progress
        self.queues: dict[str, deque[InFlight]] = defaultdict(deque)
        for unit in units:
            self.queues[unit.network].append(InFlight(unit))
        self.total = len(units)
        self.tally = Tally()
        self.progress = RunProgress(units, engine.actors_per_network)

    def run(self) -> Tally:
        if self.on_progress is not None:
            self.on_progress(self.progress.snapshot())
        self._submit()
        try:
            while self.pool.calls or any(self.queues.values()):
                ref = self._next_ready()
                if ref is None:  # every actor with work left is down and none came back
                    self._fail_queued()
                    break
                if ref in self.pool.pings:
                    self.pool.ping_returned(ref)
                else:
                    self._collect(ref)
                self._submit()
        finally:
            self.writer.flush()
        return self.tally

    def _submit(self) -> None:
        self.pool.submit(self.queues, self.engine.max_in_flight, self.units_per_call, self.refs)

    def _next_ready(self):
        """The next call or ping that returned; None when every actor is down and none came back in time.
        Raises KeyboardInterrupt here, between calls, when a signal was noted."""
        deadline = time.monotonic() + RECOVERY_TIMEOUT if not self.pool.calls else None
        while True:
            self.interrupts.check()
            wait = SIGNAL_POLL if deadline is None else min(SIGNAL_POLL, max(deadline - time.monotonic(), 0.0))
            ready, _ = ray.wait(list(self.pool.calls) + list(self.pool.pings), num_returns=1, timeout=wait)
            if ready:
                return ready[0]
            if deadline is not None and time.monotonic() >= deadline:
                return None

    def _collect(self, ref) -> None:
        name, i, batch = self.pool.returned(ref)
        try:
            outcomes = ray.get(ref)
        except ray.exceptions.RayError as err:  # the actor died or is restarting
            self._requeue_crashed(batch, self.pool.died_running(ref, name, i), err)
        else:
            self.pool.order.pop(ref, None)
            for flight, outcome in zip(batch, outcomes, strict=True):
                self._record(flight, outcome)
        self.writer.maybe_flush()
        if self.on_progress is not None:
            self.on_progress(self.progress.snapshot())

    def _requeue_crashed(self, batch: list[InFlight], running: bool, err: Exception) -> None:
        for flight in batch:
            flight = replace(flight, crashes=flight.crashes + int(running))
            if flight.crashes >= self.engine.max_crashes:
                self._fail(flight, f"the actor running this unit died {self.engine.max_crashes} times: {err}")
            else:
                self.queues[flight.unit.network].appendleft(flight)

    def _record(self, flight: InFlight, outcome: UnitOutcome) -> None:
        if outcome.error is None:
            self.writer.add_ok(outcome, flight.attempt)
            self.tally.done += 1
            self.tally.rows += len(outcome.rows)
            self.progress.record(flight.unit.network, len(outcome.rows), outcome.seconds)
        elif outcome.retry and flight.attempt <= self.engine.retries:
            self.queues[flight.unit.network].append(replace(flight, attempt=flight.attempt + 1))
        else:
            self._fail(flight, outcome.error, outcome.seconds)

    def _fail(self, flight: InFlight, error: str, seconds: float = 0.0) -> None:
        self.writer.add_failed(flight.unit, error, seconds, flight.attempt)
        self.tally.failed += 1
        self.progress.record(flight.unit.network, 0, seconds, ok=False)
        self.tally.failures.append((flight.unit.unit_id, error.strip().splitlines()[-1]))

    def _fail_queued(self) -> None:
        for name, queue in self.queues.items():
            while queue:
                self._fail(queue.popleft(), f"no live actor for network {name!r} within {RECOVERY_TIMEOUT:.0f} s")


def run_units(engine: EngineSpec, handles: dict[str, NetworkHandle], images: dict, ids: dict, units: list[Unit],
              writer: StoreWriter, provenance: Callable[[dict[str, dict]], None], units_per_call: int = 1,
              on_progress: Callable[[dict], None] | None = None, batches: dict[str, int] | None = None,
              interrupts: Interrupts | None = None) -> Tally:
    """Start the actors, share the images once, call `provenance(worker_info)`, then dispatch every unit.
    `batches`: unit_id -> the task's `batch` where the memory budget makes it smaller (each actor gets its own);
    `interrupts`: an open Interrupts whose noted signal stops the dispatch between calls."""
    networks = list(dict.fromkeys(u.network for u in units))
    image_refs = {size: ray.put(imgs) for size, imgs in images.items()}
    ids_ref = ray.put(ids)
    refs = {name: (image_refs[handles[name].size], ids_ref) for name in networks}
    per_network: dict[str, dict[str, int]] = defaultdict(dict)
    for unit in units:
        if batches and unit.unit_id in batches:
            per_network[unit.network][unit.unit_id] = batches[unit.unit_id]
    pool = ActorPool(engine, handles, networks, per_network)
    provenance(pool.describe())
    return Dispatcher(engine, pool, refs, writer, units, units_per_call, on_progress, interrupts).run()
