"""The results store: hive-partitioned Parquet fragments written atomically, plus a ledger of units.

Layout under the store root:
    <table>/network=<name>/part-<uuid>.parquet   rows of one flush (tables: attacks, ball, ...)
    _ledger/part-<uuid>.parquet                   one row per finished or failed unit, naming its fragments
    tensors/<unit_id>.safetensors                 tensors kept by a unit (perturbations, outputs)

Every file is written under a temporary name and renamed. A unit's ledger row is written after its
rows, so a crash leaves at worst row fragments no ledger row names; `Store.open` removes those
orphans, and rerunning the study redoes exactly the units the ledger lacks: no loss, no duplicates.
One writer at a time: `Store.open` takes an exclusive lock on `<root>/.lock` (released when the store
is closed or its process dies, even by SIGKILL), because removing orphans under a running survey would
delete the fragments it is writing. Readers (queries, reports, status) need no lock.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import re
import uuid
from pathlib import Path
from typing import Any, Iterable

import pyarrow as pa
import pyarrow.parquet as pq
import torch
from safetensors.torch import save_file

LEDGER = "_ledger"
TENSORS = "tensors"
LOCK = ".lock"
_SAFE = re.compile(r"[^A-Za-z0-9_.+-]")


def _partition_value(value: str) -> str:
    return _SAFE.sub("_", str(value))


def _atomic_write_table(table: pa.Table, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".tmp-{path.name}.partial")  # matches no reader's *.parquet glob
    pq.write_table(table, tmp, compression="zstd")
    os.replace(tmp, path)


def _table_from_rows(rows: list[dict[str, Any]]) -> pa.Table:
    columns: dict[str, list] = {}
    for i, row in enumerate(rows):
        for key in row:
            if key not in columns:
                columns[key] = [None] * i
        for key, col in columns.items():
            col.append(row.get(key))
    return pa.table(columns)


class StoreBusy(ValueError):
    """Another process is writing to this store."""


class Store:
    """A results directory: append rows per (table, network), record units in the ledger."""

    def __init__(self, root: Path | str):
        self.root = Path(root)
        self._lock: int | None = None

    @classmethod
    def open(cls, root: Path | str) -> "Store":
        """The store for writing: locked against a second writer, orphans of a crashed run removed."""
        store = cls(root)
        store.root.mkdir(parents=True, exist_ok=True)
        store._acquire_lock()
        store.remove_orphans()
        return store

    def _acquire_lock(self) -> None:
        fd = os.open(self.root / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise StoreBusy(f"store {str(self.root)!r} is being written by another survey run (pid {holder}); "
                            "wait for it to finish or stop it, or pass another --store") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        self._lock = fd

    def close(self) -> None:
        """Release the writer's lock (also released if the process dies)."""
        if self._lock is not None:
            os.close(self._lock)
            self._lock = None

    # -- ledger -----------------------------------------------------------------------------
    def ledger(self) -> pa.Table | None:
        files = sorted((self.root / LEDGER).glob("part-*.parquet"))
        if not files:
            return None
        return pa.concat_tables([pq.read_table(f) for f in files], promote_options="default")

    def finished_units(self) -> set[str]:
        """Units whose rows are safely stored (status ok); failed units are tried again on a rerun."""
        table = self.ledger()
        if table is None:
            return set()
        return {u for u, s in zip(table.column("unit_id").to_pylist(), table.column("status").to_pylist())
                if s == "ok"}

    def fragment_names(self) -> set[str]:
        table = self.ledger()
        if table is None:
            return set()
        names: set[str] = set()
        for entry in table.column("fragments").to_pylist():
            names.update(entry or [])
        return names

    def remove_orphans(self) -> list[Path]:
        """Delete row fragments and temporary files that no ledger row names (left by a crash)."""
        known = self.fragment_names()
        removed = []
        for path in self.root.rglob("*.parquet"):
            rel = path.relative_to(self.root).as_posix()
            if path.name.startswith(".tmp-") or ("/network=" in rel and rel not in known):
                path.unlink()
                removed.append(path)
        for path in self.root.rglob(".tmp-*"):
            path.unlink()
            removed.append(path)
        return removed

    # -- writing ------------------------------------------------------------------------------
    def write_rows(self, table: str, network: str, rows: list[dict[str, Any]]) -> str | None:
        """Write rows as one fragment of `table` partitioned by network; returns its store-relative path."""
        if not rows:
            return None
        rel = f"{_partition_value(table)}/network={_partition_value(network)}/part-{uuid.uuid4().hex}.parquet"
        _atomic_write_table(_table_from_rows(rows), self.root / rel)
        return rel

    def write_tensors(self, unit_id: str, tensors: dict[str, torch.Tensor]) -> tuple[str, str] | None:
        """Save a unit's kept tensors; returns (store-relative path, sha256)."""
        if not tensors:
            return None
        rel = f"{TENSORS}/{unit_id}.safetensors"
        path = self.root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".tmp-{path.name}")
        save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(tmp))
        digest = hashlib.sha256(tmp.read_bytes()).hexdigest()
        os.replace(tmp, path)
        return rel, digest

    def record_units(self, entries: Iterable[dict[str, Any]]) -> None:
        """Append ledger rows: unit_id, status ('ok' or 'failed'), fragments (list of paths), error..."""
        entries = list(entries)
        if entries:
            _atomic_write_table(_table_from_rows(entries), self.root / LEDGER / f"part-{uuid.uuid4().hex}.parquet")

    def write_run(self, row: dict[str, Any]) -> str:
        """Append one provenance row to the `runs` table."""
        rel = f"runs/part-{uuid.uuid4().hex}.parquet"
        _atomic_write_table(_table_from_rows([row]), self.root / rel)
        return rel

    def tables(self) -> list[str]:
        return sorted(p.name for p in self.root.iterdir()
                      if p.is_dir() and not p.name.startswith(("_", ".")) and p.name != TENSORS)
