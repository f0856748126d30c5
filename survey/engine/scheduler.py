"""Run a study: plan, skip what the ledger holds, feed Ray actors with a bounded number of calls in
flight, and stream outcomes into the store in completion order."""

from __future__ import annotations

import getpass
import json
import platform
import signal
import socket
import subprocess
import threading
import time
from collections import defaultdict, deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import ray

from survey.engine.cluster import connect
from survey.engine.networks import NetworkHandle, resolve_network
from survey.engine.worker import SurveyWorker, UnitOutcome
from survey.plan import Unit, plan
from survey.spec import Study, StudyError
from survey.store import Store


@dataclass
class RunSummary:
    store: Path
    planned: int
    skipped: int
    done: int = 0
    failed: int = 0
    rows: int = 0
    seconds: float = 0.0
    failures: list[tuple[str, str]] = field(default_factory=list)


def table_for(task: str) -> str:
    from survey.tasks import TASKS, load_tasks
    load_tasks()
    return getattr(TASKS[task], "table", task)


def _git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                             cwd=Path(__file__).parent)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def _package_versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version
    out = {}
    for name in ("stability-survey", "torch", "ray", "numpy", "pyarrow", "duckdb", "PyWavelets"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            pass
    return out


def load_images(study: Study, sizes: set[int]) -> tuple[dict[int, dict[str, np.ndarray]], dict[str, list[str]],
                                                          dict[str, str]]:
    """Images per (size, dataset) as float32 numpy, ids per dataset, content hash per dataset@size."""
    from survey.data import load_dataset

    images: dict[int, dict[str, np.ndarray]] = defaultdict(dict)
    ids: dict[str, list[str]] = {}
    hashes: dict[str, str] = {}
    for ds in study.datasets:
        params = dict(ds.params)
        if "path" in params:
            params["path"] = str((study.base_dir / params["path"]).resolve())
        for size in sorted({ds.size} if ds.size else sizes):
            imgs = load_dataset(ds.name, split=ds.split, size=size, count=ds.count, **params)
            images[size][ds.name] = imgs.images.numpy()
            if ds.name in ids and ids[ds.name] != imgs.ids:
                raise ValueError(f"dataset {ds.name!r} yields different images at different sizes")
            ids[ds.name] = imgs.ids
            hashes[f"{ds.name}@{size}"] = imgs.content_hash
    return images, ids, hashes


class _Writer:
    """Buffers outcomes and flushes rows, then ledger entries, every few seconds (and at the end)."""

    def __init__(self, store: Store, flush_seconds: float = 5.0, flush_rows: int = 20000):
        self.store, self.flush_seconds, self.flush_rows = store, flush_seconds, flush_rows
        self.rows: dict[tuple[str, str], list[dict]] = defaultdict(list)
        self.ledger: list[dict] = []
        self.pending_units: list[tuple[dict, tuple[str, str]]] = []
        self.last = time.monotonic()
        self.count = 0

    def add_ok(self, outcome: UnitOutcome, run_id: str) -> None:
        unit = outcome.unit
        key = (table_for(unit["task"]), unit["network"])
        tensor_ref = self.store.write_tensors(unit["unit_id"], outcome.tensors)
        for k, row in enumerate(outcome.rows):
            row = {**row, "unit_id": unit["unit_id"], "network": unit["network"], "dataset": unit["dataset"],
                   "task": unit["task"], "repeat": unit["repeat"], "run_id": run_id}
            if tensor_ref is not None:
                row.update(tensor_file=tensor_ref[0], tensor_sha256=tensor_ref[1], tensor_index=k)
            self.rows[key].append(row)
        self.count += len(outcome.rows)
        self.pending_units.append(({"unit_id": unit["unit_id"], "status": "ok", "network": unit["network"],
                                    "dataset": unit["dataset"], "task": unit["task"], "rows": len(outcome.rows),
                                    "seconds": outcome.seconds, "error": None, "attempts": unit.get("attempt", 1),
                                    "run_id": run_id, "finished_at": time.time()}, key))

    def add_failed(self, outcome: UnitOutcome, run_id: str) -> None:
        unit = outcome.unit
        self.ledger.append({"unit_id": unit["unit_id"], "status": "failed", "network": unit["network"],
                            "dataset": unit["dataset"], "task": unit["task"], "rows": 0,
                            "seconds": outcome.seconds, "error": outcome.error, "attempts": unit.get("attempt", 1),
                            "run_id": run_id, "finished_at": time.time(), "fragments": []})

    def maybe_flush(self) -> None:
        if self.count >= self.flush_rows or time.monotonic() - self.last >= self.flush_seconds:
            self.flush()

    def flush(self) -> None:
        fragments = {key: self.store.write_rows(key[0], key[1], rows) for key, rows in self.rows.items()}
        for entry, key in self.pending_units:
            self.ledger.append({**entry, "fragments": [fragments[key]] if fragments.get(key) else []})
        self.store.record_units(self.ledger)
        self.rows.clear()
        self.ledger.clear()
        self.pending_units.clear()
        self.count = 0
        self.last = time.monotonic()


def run_study(study: Study, store_dir: Path | str | None = None, address: str | None = None,
              on_progress: Callable[[dict], None] | None = None, units_per_call: int = 1) -> RunSummary:
    """Run every unit of `study` that the store's ledger does not hold yet; returns a summary."""
    started = time.perf_counter()
    handles = {spec.name: resolve_network(spec, study.base_dir) for spec in study.networks}
    sizes = {h.physics["size"] for h in handles.values()}
    images, ids, hashes = load_images(study, sizes)
    units = plan(study, {name: len(v) for name, v in ids.items()})
    preflight(study, units, handles)
    store = Store.open(store_dir or study.store)   # only once the study is known to be runnable
    try:
        done = store.finished_units()
        todo = [u for u in units if u.unit_id not in done]
        summary = RunSummary(store.root, len(units), len(units) - len(todo))
        if not todo:
            return summary
        run_id = f"{time.strftime('%Y%m%dT%H%M%S')}-{study.digest()[:8]}"
        started_ray = connect(address)
        previous = _terminate_as_interrupt()
        try:
            _run_units(study, store, handles, images, ids, hashes, todo, run_id, summary, on_progress,
                       units_per_call)
        finally:
            if previous is not None:
                signal.signal(signal.SIGTERM, previous)
            if started_ray:
                ray.shutdown()
    finally:
        store.close()
    summary.seconds = time.perf_counter() - started
    return summary


def preflight(study: Study, units: list[Unit], handles: dict[str, NetworkHandle]) -> None:
    """Build each distinct (task, parameters, network) of the plan once and ask the task whether it fits
    the network's images (`check_image_size`, where a task has one); raises StudyError listing every
    pair that can never run, before anything is scheduled or written."""
    from survey.tasks.base import make_task

    problems: list[str] = []
    seen: set[tuple] = set()
    for unit in units:
        key = (unit.task_index, unit.network, json.dumps(unit.params, sort_keys=True, default=str))
        if key in seen:
            continue
        seen.add(key)
        try:
            check = getattr(make_task(unit.task, **unit.params), "check_image_size", None)
            if check is not None:
                size = int(handles[unit.network].physics["size"])
                check(size, size)
        except ValueError as exc:
            problems.append(f"[[tasks]] #{unit.task_index + 1} ({unit.task}) on network {unit.network!r}: {exc}")
    if problems:
        shown = "\n  ".join(dict.fromkeys(problems))
        raise StudyError(f"{study.path}: {len(problems)} task / network pair(s) can never run (restrict the "
                         f"task's `networks`, or change its parameters):\n  {shown}")


def _terminate_as_interrupt():
    """Let SIGTERM stop a survey like Ctrl-C (flush finished units, shut Ray down); returns the old handler."""
    if threading.current_thread() is not threading.main_thread():
        return None

    def interrupt(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")

    return signal.signal(signal.SIGTERM, interrupt)


def _provenance(study: Study, handles: dict[str, NetworkHandle], hashes: dict[str, str], run_id: str,
                worker_info: dict[str, dict]) -> dict[str, Any]:
    import survey
    return {"run_id": run_id, "study": study.name, "study_sha256": study.digest(), "study_path": study.path,
            "seed": study.seed, "code_version": survey.__version__, "git_commit": _git_commit(),
            "packages": json.dumps(_package_versions()), "host": socket.gethostname(),
            "user": getpass.getuser(), "python": platform.python_version(), "started_at": time.time(),
            "devices": json.dumps(worker_info),
            "weights_sha256": json.dumps({n: h.weights_sha256() for n, h in handles.items()}),
            "datasets_sha256": json.dumps(hashes), "study_json": json.dumps(study.model_dump(), default=str)}


def _gpu_share(study: Study) -> float:
    """GPUs per actor: the study's setting, else an even share of one GPU when the cluster has GPUs."""
    eng = study.engine
    if eng.gpus_per_actor:
        return eng.gpus_per_actor
    if eng.device in ("auto", "cuda") and ray.cluster_resources().get("GPU", 0) > 0:
        return 1.0 / eng.actors_per_network
    return 0.0


# An actor that dies mid-call (node lost, out of memory) sends its units back to the queue without
# spending their retries; a unit whose calls kill `engine.max_crashes` actors is recorded as failed
# (it may be what kills them).
def _cpu_share(requested: float, actors: int) -> float:
    """CPUs per actor: as requested, scaled down (fractions allowed) so that every actor of every
    network fits on the cluster at once; otherwise an actor would wait forever for a free CPU."""
    total = ray.cluster_resources().get("CPU", 1.0)
    return min(requested, total / actors)


#: Seconds to wait for a restarting actor when no other actor of its network is alive.
RECOVERY_TIMEOUT = 600.0


class _Pool:
    """The actors of every network, their health, and the calls in flight."""

    def __init__(self, study: Study, handles: dict[str, NetworkHandle], networks):
        eng = study.engine
        gpus = _gpu_share(study)
        device = eng.device if eng.device != "auto" or gpus == 0 else "cuda"
        cpus = _cpu_share(eng.cpus_per_actor, eng.actors_per_network * len(networks))
        self.remote = ray.remote(max_restarts=3, max_task_retries=0)(SurveyWorker)
        self.options = dict(num_cpus=cpus, num_gpus=gpus)
        self.args = {name: (handles[name], device, max(1, round(cpus))) for name in networks}
        self.actors = {name: [self._start(name) for _ in range(eng.actors_per_network)] for name in networks}
        self.healthy = {(name, i): True for name, pool in self.actors.items() for i in range(len(pool))}
        self.load: dict[tuple[str, int], int] = defaultdict(int)
        self.calls: dict[ray.ObjectRef, tuple[str, int, list[dict]]] = {}
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
                    ref = actor.run.remote(batch, *refs[name])
                    self.calls[ref] = (name, i, batch)
                    self.order[ref] = len(self.order)
                    self.load[(name, i)] += 1

    def died_running(self, ref, name: str, i: int) -> bool:
        """Call `ref` failed because its actor died. Take no work to that actor until a ping says it is
        back (Ray restarts it). True when `ref` was the call running at the time (calls to an actor run
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
        except ray.exceptions.RayError:  # out of restarts: start a fresh actor in its place
            self.actors[name][i] = self._start(name)
            self.pings[self.actors[name][i].describe.remote()] = (name, i)
            return
        self.healthy[(name, i)] = True
        self.culprit.pop((name, i), None)


def _run_units(study, store, handles, images, ids, hashes, todo: list[Unit], run_id, summary, on_progress,
               units_per_call) -> None:
    eng = study.engine
    queues: dict[str, deque] = defaultdict(deque)
    for unit in todo:
        queues[unit.network].append(unit.to_dict() | {"params": unit.params, "attempt": 1, "crashes": 0})
    image_refs = {size: ray.put(imgs) for size, imgs in images.items()}
    ids_ref = ray.put(ids)
    refs = {name: (image_refs[handles[name].physics["size"]], ids_ref) for name in queues}
    pool = _Pool(study, handles, list(queues))
    store.write_run(_provenance(study, handles, hashes, run_id, pool.describe()))
    writer = _Writer(store, flush_seconds=eng.flush_seconds)
    total = len(todo)

    def fail(unit: dict, error: str, seconds: float = 0.0) -> None:
        writer.add_failed(UnitOutcome(unit, error=error, seconds=seconds), run_id)
        summary.failed += 1
        summary.failures.append((unit["unit_id"], error.strip().splitlines()[-1]))

    pool.submit(queues, eng.max_in_flight, units_per_call, refs)
    try:
        while pool.calls or any(queues.values()):
            stalled = not pool.calls
            ready, _ = ray.wait(list(pool.calls) + list(pool.pings), num_returns=1,
                                timeout=RECOVERY_TIMEOUT if stalled else None)
            if not ready:  # every actor with work left is down and none came back
                for name, queue in queues.items():
                    while queue:
                        fail(queue.popleft(), f"no live actor for network {name!r} within {RECOVERY_TIMEOUT:.0f} s")
                break
            ref = ready[0]
            if ref in pool.pings:
                pool.ping_returned(ref)
            else:
                name, i, batch = pool.calls.pop(ref)
                pool.load[(name, i)] -= 1
                try:
                    outcomes = ray.get(ref)
                    pool.order.pop(ref, None)
                except ray.exceptions.RayError as err:  # the actor died or is restarting
                    running = pool.died_running(ref, name, i)
                    for unit in batch:
                        unit = {**unit, "crashes": unit["crashes"] + int(running)}
                        if unit["crashes"] >= eng.max_crashes:
                            fail(unit, f"the actor running this unit died {eng.max_crashes} times: {err}")
                        else:
                            queues[name].appendleft(unit)
                    outcomes = []
                for outcome in outcomes:
                    unit = outcome.unit
                    if outcome.error is None:
                        writer.add_ok(outcome, run_id)
                        summary.done += 1
                        summary.rows += len(outcome.rows)
                    elif unit["attempt"] <= eng.retries:
                        queues[name].append({**unit, "attempt": unit["attempt"] + 1})
                    else:
                        fail(unit, outcome.error, outcome.seconds)
                writer.maybe_flush()
                if on_progress is not None:
                    on_progress({"done": summary.done + summary.failed, "total": total, "rows": summary.rows,
                                 "failed": summary.failed})
            pool.submit(queues, eng.max_in_flight, units_per_call, refs)
    finally:
        writer.flush()
