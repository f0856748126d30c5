"""Run a study: plan, skip what the ledger holds, feed Ray actors with a bounded number of calls in
flight, and stream outcomes into the store in completion order."""

from __future__ import annotations

import getpass
import json
import platform
import socket
import subprocess
import time
from collections import defaultdict, deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import ray
import torch

from survey.engine.cluster import connect
from survey.engine.networks import NetworkHandle, resolve_network
from survey.engine.worker import SurveyWorker, UnitOutcome, pick_device
from survey.plan import Unit, plan
from survey.spec import Study
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
    from tasks import TASKS, load_tasks
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
    store = Store.open(store_dir or study.store)
    handles = {spec.name: resolve_network(spec, study.base_dir) for spec in study.networks}
    sizes = {h.physics["size"] for h in handles.values()}
    images, ids, hashes = load_images(study, sizes)
    units = plan(study, {name: len(v) for name, v in ids.items()})
    done = store.finished_units()
    todo = [u for u in units if u.unit_id not in done]
    summary = RunSummary(store.root, len(units), len(units) - len(todo))
    if not todo:
        return summary
    run_id = f"{time.strftime('%Y%m%dT%H%M%S')}-{study.digest()[:8]}"
    started_ray = connect(address)
    try:
        _run_units(study, store, handles, images, ids, hashes, todo, run_id, summary, on_progress, units_per_call)
    finally:
        if started_ray:
            ray.shutdown()
    summary.seconds = time.perf_counter() - started
    return summary


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


def _run_units(study, store, handles, images, ids, hashes, todo: list[Unit], run_id, summary, on_progress,
               units_per_call) -> None:
    eng = study.engine
    device = eng.device if eng.device != "auto" else None
    gpus = eng.gpus_per_actor if eng.gpus_per_actor else (
        1.0 / eng.actors_per_network if ray.cluster_resources().get("GPU", 0) > 0 and device in (None, "cuda")
        else 0.0)
    remote_worker = ray.remote(max_restarts=3, max_task_retries=0)(SurveyWorker)
    by_network: dict[str, deque] = defaultdict(deque)
    for unit in todo:
        by_network[unit.network].append(unit.to_dict() | {"params": unit.params, "attempt": 1})
    image_refs = {size: ray.put(imgs) for size, imgs in images.items()}
    ids_ref = ray.put(ids)
    actors: dict[str, list] = {}
    for name in by_network:
        actors[name] = [remote_worker.options(num_cpus=eng.cpus_per_actor, num_gpus=gpus).remote(
            handles[name], eng.device if gpus == 0 or eng.device != "auto" else "cuda",
            max(1, int(eng.cpus_per_actor))) for _ in range(eng.actors_per_network)]
    worker_info = dict(zip(actors, ray.get([pool[0].describe.remote() for pool in actors.values()])))
    store.write_run(_provenance(study, handles, hashes, run_id, worker_info))
    writer = _Writer(store)
    in_flight: dict[ray.ObjectRef, tuple[str, int, list[dict]]] = {}
    load: dict[tuple[str, int], int] = defaultdict(int)

    def submit() -> None:
        for name, queue in by_network.items():
            size = handles[name].physics["size"]
            for i, actor in enumerate(actors[name]):
                while queue and load[(name, i)] < eng.max_in_flight:
                    batch = [queue.popleft() for _ in range(min(units_per_call, len(queue)))]
                    ref = actor.run.remote(batch, image_refs[size], ids_ref)
                    in_flight[ref] = (name, i, batch)
                    load[(name, i)] += 1

    total = len(todo)
    submit()
    try:
        while in_flight:
            ready, _ = ray.wait(list(in_flight), num_returns=1)
            ref = ready[0]
            name, i, batch = in_flight.pop(ref)
            load[(name, i)] -= 1
            try:
                outcomes = ray.get(ref)
            except (ray.exceptions.RayActorError, ray.exceptions.WorkerCrashedError) as err:
                outcomes = [UnitOutcome(u, error=f"actor died: {err}") for u in batch]
            for outcome in outcomes:
                unit = outcome.unit
                if outcome.error is None:
                    writer.add_ok(outcome, run_id)
                    summary.done += 1
                    summary.rows += len(outcome.rows)
                elif unit["attempt"] <= eng.retries:
                    by_network[name].append({**unit, "attempt": unit["attempt"] + 1})
                else:
                    writer.add_failed(outcome, run_id)
                    summary.failed += 1
                    summary.failures.append((unit["unit_id"], outcome.error.strip().splitlines()[-1]))
            writer.maybe_flush()
            submit()
            if on_progress is not None:
                on_progress({"done": summary.done + summary.failed, "total": total, "rows": summary.rows,
                             "failed": summary.failed})
    finally:
        writer.flush()
