"""Outcomes into the store: rows per (table, network) and ledger entries, flushed every few seconds."""

from __future__ import annotations

import time
from collections import defaultdict

from survey.engine.worker import UnitOutcome
from survey.plan import Unit
from survey.layout import ROW_COLUMNS
from survey.store import Store


def table_for(task: str) -> str:
    """The store table a task's rows go to (its declared `table`, else its name)."""
    from survey.tasks import TASKS, load_tasks
    load_tasks()
    return getattr(TASKS[task], "table", task)


def columns_for(table: str) -> dict[str, tuple[str, str]]:
    """Meaning and unit of every column of `table`: the tasks' declarations plus the engine's columns."""
    from survey.tasks import table_columns
    try:
        declared = table_columns(table)
    except ValueError:
        declared = {}
    return {**ROW_COLUMNS, **{name: (c.meaning, c.unit) for name, c in declared.items()}}


def _entry(unit: Unit, status: str, rows: int, seconds: float, error: str | None, attempts: int,
           run_id: str) -> dict:
    return {"unit_id": unit.unit_id, "status": status, "network": unit.network, "dataset": unit.dataset,
            "task": unit.task, "rows": rows, "seconds": seconds, "error": error, "attempts": attempts,
            "run_id": run_id, "finished_at": time.time()}


def skip_reason(row: dict) -> str:
    """Why a row holds no measurement (its `skipped` or `error` column, first line), or ""."""
    for column in ("skipped", "error"):
        value = row.get(column)
        if isinstance(value, str) and value.strip():
            return value.strip().splitlines()[0][:200]
    return ""


class StoreWriter:
    """Buffers outcomes and flushes rows, then ledger entries, every few seconds (and at the end), so a
    ledger entry never names a fragment that is not on disk."""

    def __init__(self, store: Store, run_id: str, flush_seconds: float = 5.0, flush_rows: int = 20000):
        self.store, self.run_id = store, run_id
        self.flush_seconds, self.flush_rows = flush_seconds, flush_rows
        self.rows: dict[tuple[str, str], list[dict]] = defaultdict(list)
        self.ledger: list[dict] = []
        self.pending_units: list[tuple[dict, tuple[str, str]]] = []
        self.last = time.monotonic()
        self.count = 0
        #: (network, level) -> [searches that never reached the level, searches]: rows of level snapshots
        self.levels: dict[tuple[str, float], list[int]] = defaultdict(lambda: [0, 0])
        #: (network, task) -> rows written; (network, task, reason) -> rows a task left unmeasured (`skipped` or
        #: `error` column, e.g. a sweep level a network cannot take)
        self.row_counts: dict[tuple[str, str], int] = defaultdict(int)
        self.skips: dict[tuple[str, str, str], int] = defaultdict(int)

    def add_ok(self, outcome: UnitOutcome, attempts: int) -> None:
        unit = outcome.unit
        key = (table_for(unit.task), unit.network)
        tensor_ref = self.store.write_tensors(unit.unit_id, outcome.tensors)
        self.row_counts[(unit.network, unit.task)] += len(outcome.rows)
        for k, row in enumerate(outcome.rows):
            reason = skip_reason(row)
            if reason:
                self.skips[(unit.network, unit.task, reason)] += 1
            if row.get("snapshot") == "level" and row.get("reached") is not None:
                tally = self.levels[(unit.network, float(row.get("snapshot_target") or 0.0))]
                tally[0] += not row["reached"]
                tally[1] += 1
            row = {**row, "unit_id": unit.unit_id, "network": unit.network, "dataset": unit.dataset,
                   "task": unit.task, "repeat": unit.repeat, "run_id": self.run_id}
            if tensor_ref is not None:
                row.update(tensor_file=tensor_ref[0], tensor_sha256=tensor_ref[1], tensor_index=k)
            self.rows[key].append(row)
        self.count += len(outcome.rows)
        entry = _entry(unit, "ok", len(outcome.rows), outcome.seconds, None, attempts, self.run_id)
        self.pending_units.append((entry, key))

    def skipped(self) -> list[str]:
        """One line per (network, task, reason) whose rows were written but not measured (NaN, said why)."""
        return [f"network {net!r}, task {task}: {n} of {self.row_counts[(net, task)]} rows not measured: {reason}"
                for (net, task, reason), n in sorted(self.skips.items())]

    def unreached(self) -> dict[tuple[str, float], tuple[int, int]]:
        """(network, level) -> (rows that never reached the level, rows at that level), where any did not."""
        return {key: (miss, total) for key, (miss, total) in sorted(self.levels.items()) if miss}

    def add_failed(self, unit: Unit, error: str, seconds: float, attempts: int) -> None:
        self.ledger.append({**_entry(unit, "failed", 0, seconds, error, attempts, self.run_id), "fragments": []})

    def maybe_flush(self) -> None:
        if self.count >= self.flush_rows or time.monotonic() - self.last >= self.flush_seconds:
            self.flush()

    def flush(self) -> None:
        fragments = {key: self.store.write_rows(key[0], key[1], rows, columns_for(key[0]))
                     for key, rows in self.rows.items()}
        for entry, key in self.pending_units:
            self.ledger.append({**entry, "fragments": [fragments[key]] if fragments.get(key) else []})
        self.store.record_units(self.ledger)
        self.rows.clear()
        self.ledger.clear()
        self.pending_units.clear()
        self.count = 0
        self.last = time.monotonic()
