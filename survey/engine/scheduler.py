"""Run a study: resolve and probe its networks, plan, skip what the ledger holds, dispatch the rest to
Ray actors and stream outcomes into the store (see preflight, planning, dispatch, provenance)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import ray

from survey.engine.cluster import connect
from survey.engine.cost import engine_batches
from survey.engine.dispatch import run_units
from survey.engine.interrupts import Interrupts
from survey.engine.networks import NetworkHandle
from survey.engine.planning import plan_work
from survey.engine.preflight import check_tasks, checked_networks
from survey.engine.provenance import run_record
from survey.engine.writer import StoreWriter
from survey.layout import RUN_COLUMNS
from survey.spec import Study
from survey.store import Store, quarantine_name


@dataclass
class RunSummary:
    """What a run did. `notes`: one line each about the inputs (checkpoint weights unwrapped, dataset
    files skipped); `unreached`: (network, level) -> (attack rows that never reached that snapshot level,
    rows at that level), for the levels some search never crossed (those rows report the last iterate)."""

    store: Path
    planned: int
    skipped: int
    done: int = 0
    failed: int = 0
    rows: int = 0
    seconds: float = 0.0
    failures: list[tuple[str, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    unreached: dict[tuple[str, float], tuple[int, int]] = field(default_factory=dict)
    #: one line per (network, task, reason) of rows written without a measurement (a sweep level skipped, ...)
    skips: list[str] = field(default_factory=list)


def input_notes(handles: dict[str, NetworkHandle], skipped: dict[str, list[tuple[str, str]]]) -> list[str]:
    """One line per thing about the inputs a user should know: checkpoint weights that were unwrapped,
    dataset files that were skipped (`skipped N files: ...`)."""
    from survey.data.base import skipped_message
    from survey.nets.byo import weights_notes

    notes = [note for handle in handles.values() if handle.factory is not None
             for note in weights_notes(handle.factory)]
    notes += [f"dataset {name!r}: {skipped_message(items)}" for name, items in skipped.items() if items]
    return notes


def unreached_message(unreached: dict[tuple[str, float], tuple[int, int]]) -> str:
    """'N (network, level) snapshot(s) never reached by some attacks: net at level 0.05 (3 of 8 rows); ...'."""
    if not unreached:
        return ""
    shown = "; ".join(f"{net} at level {level:g} ({miss} of {total} rows)"
                      for (net, level), (miss, total) in unreached.items())
    return (f"{len(unreached)} (network, level) snapshot{'s' if len(unreached) != 1 else ''} never reached by "
            f"some attacks (those rows keep the last iterate, reached = false): {shown}")


def run_study(study: Study, store_dir: Path | str | None = None, address: str | None = None,
              on_progress: Callable[[dict], None] | None = None, units_per_call: int = 1,
              on_note: Callable[[str], None] | None = None) -> RunSummary:
    """Run every unit of `study` that the store's ledger does not hold yet; returns a summary.

    `on_note` hears each line of `input_notes` (weights unwrapped, files skipped) once the images are
    loaded, before any work; the summary keeps them, and the run's `runs` row records them.

    Raises StudyError (nothing written, Ray not started) when a network fails its probe or a task can
    never run; KeyboardInterrupt on Ctrl-C or SIGTERM, at the dispatcher's next wait, after flushing every
    finished unit (survey.engine.interrupts)."""
    started = time.perf_counter()
    network_notes: list[str] = []
    handles = checked_networks(study, network_notes)   # every network builds and answers a probe
    work = plan_work(study, handles)
    check_tasks(study, work.units, handles, network_notes)   # every (task, network) pair can run
    notes = network_notes + input_notes(handles, work.skipped)
    for note in notes if on_note is not None else ():
        on_note(note)
    root = Path(store_dir or study.store)
    reader = Store(root)   # read only: a store with nothing left to do needs no write access and no lock
    done = reader.finished_units() if root.is_dir() else set()
    todo = [u for u in work.units if u.unit_id not in done]
    if not todo and not reader.unreadable_fragments():
        return RunSummary(root, len(work.units), len(work.units), notes=notes)
    # every network probed at its size: each unit's batch within the memory budget, or a unit that cannot fit
    batches, batch_notes = engine_batches(study, handles, work.units)
    for note in batch_notes if on_note is not None else ():
        on_note(note)
    notes += batch_notes
    store = Store.open(root)   # only once the study is known to be runnable and has work left
    try:
        repaired = [f"store: fragment {rel} could not be read (truncated?); moved aside as "
                    f"{quarantine_name(Path(rel)).as_posix()}, its units run again" for rel in store.quarantined]
        lost = store.missing_rows()
        if lost:
            repaired.append(f"store: {len(lost)} finished unit(s) name row fragments that are missing "
                            f"(e.g. {next(iter(lost.values()))[0]}); they run again")
        for note in repaired if on_note is not None else ():
            on_note(note)
        notes += repaired
        done = store.finished_units()
        todo = [u for u in work.units if u.unit_id not in done]
        summary = RunSummary(store.root, len(work.units), len(work.units) - len(todo), notes=notes)
        if not todo:
            return summary
        run_id = f"{time.strftime('%Y%m%dT%H%M%S')}-{study.digest()[:8]}"
        writer = StoreWriter(store, run_id, flush_seconds=study.engine.flush_seconds)

        def provenance(worker_info: dict[str, dict]) -> None:
            store.write_run(run_record(study, handles, work.hashes, run_id, worker_info, notes, work.skipped),
                            RUN_COLUMNS)

        started_ray = connect(address)
        try:
            with Interrupts() as interrupts:   # after ray.init, which sets a SIGTERM handler of its own
                tally = run_units(study.engine, handles, work.images, work.ids, todo, writer, provenance,
                                  units_per_call, on_progress, batches, interrupts)
        finally:
            if started_ray:
                ray.shutdown()
        summary.done, summary.failed, summary.rows, summary.failures = (tally.done, tally.failed, tally.rows,
                                                                         tally.failures)
        summary.unreached = writer.unreached()
        summary.skips = writer.skipped()
    finally:
        store.close()
    summary.seconds = time.perf_counter() - started
    return summary
