"""Run a study: resolve and probe its networks, plan, skip what the ledger holds, dispatch the rest to
Ray actors and stream outcomes into the store (see preflight, planning, dispatch, provenance)."""

from __future__ import annotations

import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import ray

from survey.engine.cluster import connect
from survey.engine.dispatch import run_units
from survey.engine.planning import plan_work
from survey.engine.preflight import check_tasks, checked_networks
from survey.engine.provenance import run_record
from survey.engine.writer import StoreWriter
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


def run_study(study: Study, store_dir: Path | str | None = None, address: str | None = None,
              on_progress: Callable[[dict], None] | None = None, units_per_call: int = 1) -> RunSummary:
    """Run every unit of `study` that the store's ledger does not hold yet; returns a summary.

    Raises StudyError (nothing written, Ray not started) when a network fails its probe or a task can
    never run; KeyboardInterrupt (also on SIGTERM) after flushing every finished unit."""
    started = time.perf_counter()
    handles = checked_networks(study)          # every network builds and answers a probe
    work = plan_work(study, handles)
    check_tasks(study, work.units, handles)    # every (task, network) pair can run
    store = Store.open(store_dir or study.store)   # only once the study is known to be runnable
    try:
        done = store.finished_units()
        todo = [u for u in work.units if u.unit_id not in done]
        summary = RunSummary(store.root, len(work.units), len(work.units) - len(todo))
        if not todo:
            return summary
        run_id = f"{time.strftime('%Y%m%dT%H%M%S')}-{study.digest()[:8]}"
        writer = StoreWriter(store, run_id, flush_seconds=study.engine.flush_seconds)

        def provenance(worker_info: dict[str, dict]) -> None:
            store.write_run(run_record(study, handles, work.hashes, run_id, worker_info))

        started_ray = connect(address)
        previous = _terminate_as_interrupt()
        try:
            tally = run_units(study.engine, handles, work.images, work.ids, todo, writer, provenance,
                              units_per_call, on_progress)
        finally:
            if previous is not None:
                signal.signal(signal.SIGTERM, previous)
            if started_ray:
                ray.shutdown()
        summary.done, summary.failed, summary.rows, summary.failures = (tally.done, tally.failed, tally.rows,
                                                                         tally.failures)
    finally:
        store.close()
    summary.seconds = time.perf_counter() - started
    return summary


def _terminate_as_interrupt():
    """Let SIGTERM stop a survey like Ctrl-C (flush finished units, shut Ray down); returns the old handler."""
    if threading.current_thread() is not threading.main_thread():
        return None

    def interrupt(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")

    return signal.signal(signal.SIGTERM, interrupt)
