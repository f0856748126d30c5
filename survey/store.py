"""The results store: hive-partitioned Parquet fragments written atomically, plus a ledger of units.

The layout under the store root (directory and file names) is defined in `survey.layout`: row
fragments per (table, network), a ledger naming each unit's fragments, provenance rows, kept tensors.

Every fragment of a directory (a table, `runs`, the ledger) is written with that directory's one
schema: a column that is all None in one fragment gets the type it has in the others, a column that
first appears later is added (as nulls) to the earlier fragments, and the partition column `network`
is not stored in the files (its directory says it). So `pd.read_parquet("results/attacks")`,
`pl.read_parquet(..., hive_partitioning=True)` and pyarrow read every table as a plain dataset;
fragments of stores written before are brought to that schema the first time their table is written.
Each column carries its meaning and unit as Parquet field metadata (`layout.MEANING_KEY`, `UNIT_KEY`).

Every file is written under a temporary name and renamed. A unit's ledger row is written after its
rows, so a crash leaves at worst row fragments no ledger row names; `Store.open` removes those
orphans, and rerunning the study redoes exactly the units the ledger lacks: no loss, no duplicates.
One writer at a time: `Store.open` takes an exclusive lock on `<root>/.lock` (`layout.LOCK_FILE`) (released when the store
is closed or its process dies, even by SIGKILL), because removing orphans under a running survey would
delete the fragments it is writing. Readers (queries, reports, status, a run with nothing left to do) need
no lock and no write access.

A store damaged from outside is repaired without loss when it is next opened for writing: a row fragment
that cannot be read (truncated) is moved aside (`.<name>.unreadable`, kept for inspection), and a unit whose
ledger entry names a fragment that is not on disk counts as not finished, so the next run redoes it.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import re
import time
from pathlib import Path
from typing import Any, Iterable

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import torch
from safetensors.torch import save_file

from survey.layout import (FRAGMENT_GLOB, LEDGER_DIR, LOCK_FILE, MEANING_KEY, PARTITION_KEY, RUNS_DIR, TEMP_PREFIX,
                           TENSORS_DIR, UNIT_KEY, check_partition_value, fragment_name, temp_name, tensor_file)

_SAFE = re.compile(r"[^A-Za-z0-9_.+-]")

#: column -> (meaning, unit), as `survey.tasks.Column` tuples
ColumnInfo = dict[str, tuple[str, str]]


def _partition_value(value: str) -> str:
    return _SAFE.sub("_", str(value))


def _plain(schema: pa.Schema, partitioned: bool) -> pa.Schema:
    """`schema` without metadata, and without the partition column for a partitioned table (what
    fragments must agree on)."""
    return pa.schema([pa.field(f.name, f.type) for f in schema if not (partitioned and f.name == PARTITION_KEY)])


def _file_schema(path: Path) -> pa.Schema:
    return pq.read_schema(path)


def _unified(schemas: list[pa.Schema], partitioned: bool) -> pa.Schema | None:
    """One schema for all (nulls take the others' type, int widens to float); None when they conflict."""
    try:
        return pa.unify_schemas([_plain(s, partitioned) for s in schemas], promote_options="permissive")
    except (pa.ArrowTypeError, pa.ArrowInvalid):
        return None


def _annotated(schema: pa.Schema, columns: ColumnInfo, known: pa.Schema | None) -> pa.Schema:
    """`schema` with each field's meaning and unit: from `columns`, else as `known` had them."""
    fields = []
    for field in schema:
        meta = None
        if field.name in columns:
            meaning, unit = columns[field.name][:2]
            meta = {MEANING_KEY: str(meaning).encode(), UNIT_KEY: str(unit).encode()}
        elif known is not None and field.name in known.names:
            meta = known.field(field.name).metadata
        fields.append(field.with_metadata(meta) if meta else field)
    return pa.schema(fields)


def _conform(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """`table` with exactly `schema`'s columns, order and types (absent columns as nulls)."""
    arrays = []
    for field in schema:
        if field.name in table.column_names:
            arrays.append(table.column(field.name).cast(field.type))
        else:
            arrays.append(pa.nulls(table.num_rows, field.type))
    return pa.Table.from_arrays(arrays, schema=schema)


def _atomic_write_table(table: pa.Table, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(temp_name(path.name))  # matches no reader's glob
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


def quarantine_name(path: Path) -> Path:
    """Where an unreadable fragment is kept: `.<name>.unreadable` beside it (matched by no reader's glob)."""
    return path.with_name(f".{path.name}.unreadable")


class StoreBusy(ValueError):
    """Another process is writing to this store."""


class Store:
    """A results directory: append rows per (table, network), record units in the ledger."""

    def __init__(self, root: Path | str):
        self.root = Path(root)
        self._lock: int | None = None
        #: fragments `open` moved aside because they could not be read
        self.quarantined: list[str] = []
        self._schemas: dict[str, pa.Schema | None] = {}   # directory -> the schema its fragments share

    @classmethod
    def open(cls, root: Path | str) -> "Store":
        """The store for writing: locked against a second writer, orphans of a crashed run removed."""
        store = cls(root)
        try:
            store.root.mkdir(parents=True, exist_ok=True)
            store._acquire_lock()
        except PermissionError as err:
            raise PermissionError(f"store {str(store.root)!r} cannot be written ({err.strerror}); it has units left "
                                  "to run: pass a writable --store") from None
        except OSError as err:
            if err.errno not in (30,):  # EROFS
                raise
            raise OSError(f"store {str(store.root)!r} is on a read-only file system; it has units left to run: "
                          "pass a writable --store") from None
        store.quarantined = store.quarantine_unreadable()
        store.remove_orphans()
        return store

    def _acquire_lock(self) -> None:
        fd = os.open(self.root / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
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
        """Every ledger row; ValueError naming a ledger fragment that cannot be read."""
        files = sorted((self.root / LEDGER_DIR).glob(FRAGMENT_GLOB))
        if not files:
            return None
        parts = []
        for f in files:
            try:
                parts.append(pq.read_table(f))
            except (pa.ArrowException, OSError) as err:
                raise ValueError(f"store {str(self.root)!r}: ledger fragment {f.relative_to(self.root)} cannot be "
                                 f"read ({' '.join(str(err).split())[:160]}); move it out of the store (its units "
                                 "then run again)") from None
        try:
            return pa.concat_tables(parts, promote_options="default")
        except (pa.ArrowInvalid, pa.ArrowTypeError) as err:
            raise ValueError(f"store {str(self.root)!r}: the ledger's fragments do not share a schema "
                             f"({' '.join(str(err).split())[:160]})") from None

    def latest_entries(self) -> dict[str, dict[str, Any]]:
        """unit_id -> its latest ledger entry (by finished_at): a later entry supersedes an earlier one
        (a retry after a failure, a unit forgotten, fragments rewritten by `forget`)."""
        table = self.ledger()
        if table is None:
            return {}
        entries = sorted(enumerate(table.to_pylist()), key=lambda e: (e[1].get("finished_at") or 0.0, e[0]))
        return {entry["unit_id"]: entry for _, entry in entries}

    def finished_units(self) -> set[str]:
        """Units whose rows are safely stored (latest status ok, every fragment it names on disk); failed and
        forgotten units, and units whose rows went missing, are run again."""
        return {u for u, entry in self.latest_entries().items()
                if entry["status"] == "ok" and all((self.root / f).is_file() for f in entry.get("fragments") or [])}

    def missing_rows(self) -> dict[str, list[str]]:
        """unit_id -> fragments its latest (ok) ledger entry names that are not on disk."""
        out = {}
        for unit, entry in self.latest_entries().items():
            gone = [f for f in entry.get("fragments") or [] if not (self.root / f).is_file()]
            if entry["status"] == "ok" and gone:
                out[unit] = gone
        return out

    def quarantine_unreadable(self) -> list[str]:
        """Move row fragments whose Parquet footer cannot be read to `.<name>.unreadable` (kept; no reader,
        pyarrow's included, reads a name starting with a dot);
        returns their store-relative paths. Their units then count as not finished."""
        moved = []
        for path in self.unreadable_fragments():
            os.replace(path, quarantine_name(path))
            moved.append(path.relative_to(self.root).as_posix())
        return moved

    def unreadable_fragments(self) -> list[Path]:
        """Row fragments whose Parquet footer cannot be read (truncated, overwritten)."""
        bad = []
        for path in sorted(self.root.glob(f"*/{PARTITION_KEY}=*/{FRAGMENT_GLOB}")):
            try:
                pq.read_schema(path)
            except (pa.ArrowException, OSError):
                bad.append(path)
        return bad

    def fragment_names(self) -> set[str]:
        """Fragments named by the latest ledger entries: the rows a reader should see."""
        names: set[str] = set()
        for entry in self.latest_entries().values():
            names.update(entry.get("fragments") or [])
        return names

    def remove_orphans(self) -> list[Path]:
        """Delete row fragments and temporary files that no ledger row names (left by a crash)."""
        known = self.fragment_names()
        removed = []
        for path in self.root.rglob("*.parquet"):
            rel = path.relative_to(self.root).as_posix()
            if path.name.startswith(TEMP_PREFIX) or (f"/{PARTITION_KEY}=" in rel and rel not in known):
                path.unlink()
                removed.append(path)
        for path in self.root.rglob(f"{TEMP_PREFIX}*"):
            path.unlink()
            removed.append(path)
        return removed

    # -- writing ------------------------------------------------------------------------------
    def _fragments(self, directory: str) -> list[Path]:
        return sorted((self.root / directory).glob(f"**/{FRAGMENT_GLOB}"))

    def _write_fragment(self, directory: str, rel: str, table: pa.Table, columns: ColumnInfo | None = None) -> None:
        """Write `table` at `rel` with the schema every fragment of `directory` shares, bringing the earlier
        fragments to it first when it grows (a new column, a type for a column that was all None).
        Rewritten fragments keep their names, so the ledger still names them."""
        partitioned = directory not in (LEDGER_DIR, RUNS_DIR)
        known = self._schemas.get(directory)
        first = directory not in self._schemas
        if first:  # first write here in this session: learn the schema from the fragments on disk
            schemas = [_file_schema(f) for f in self._fragments(directory)]
            known = _unified(schemas, partitioned) if schemas else None
            if known is not None:  # keep the meanings and units the fragments carry
                meta = {f.name: f.metadata for s in reversed(schemas) for f in s if f.metadata}
                known = pa.schema([f.with_metadata(meta[f.name]) if f.name in meta else f for f in known])
        unified = _unified([known, table.schema] if known is not None else [table.schema], partitioned)
        if unified is None:  # types that cannot be reconciled (a task bug): keep the rows as they are
            _atomic_write_table(table, self.root / rel)
            self._schemas.pop(directory, None)
            return
        unified = _annotated(unified, columns or {}, known)
        if known is not None and (first or not unified.equals(known, check_metadata=True)):
            for path in self._fragments(directory):
                schema = _file_schema(path)
                if not schema.equals(unified, check_metadata=True):
                    _atomic_write_table(_conform(pq.read_table(path, partitioning=None), unified), path)
        _atomic_write_table(_conform(table, unified), self.root / rel)
        self._schemas[directory] = unified

    def write_rows(self, table: str, network: str, rows: list[dict[str, Any]],
                   columns: ColumnInfo | None = None) -> str | None:
        """Write rows as one fragment of `table` partitioned by network; returns its store-relative path.

        `network` must be a safe partition value (`layout.check_partition_value`); the rows' own `network`
        column is not stored (the directory holds it). `columns`: column -> (meaning, unit), stored as
        field metadata."""
        if not rows:
            return None
        check_partition_value(network)
        directory = _partition_value(table)
        rel = f"{directory}/{PARTITION_KEY}={network}/{fragment_name()}"
        data = _table_from_rows(rows)
        if PARTITION_KEY in data.column_names:
            data = data.drop_columns([PARTITION_KEY])
        self._write_fragment(directory, rel, data, columns)
        return rel

    def write_tensors(self, unit_id: str, tensors: dict[str, torch.Tensor]) -> tuple[str, str] | None:
        """Save a unit's kept tensors; returns (store-relative path, sha256)."""
        if not tensors:
            return None
        rel = tensor_file(unit_id)
        path = self.root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(temp_name(path.name))
        save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(tmp))
        digest = hashlib.sha256(tmp.read_bytes()).hexdigest()
        os.replace(tmp, path)
        return rel, digest

    def record_units(self, entries: Iterable[dict[str, Any]]) -> None:
        """Append ledger rows: unit_id, status ('ok' or 'failed'), fragments (list of paths), error..."""
        entries = list(entries)
        if entries:
            self._write_fragment(LEDGER_DIR, f"{LEDGER_DIR}/{fragment_name()}", _table_from_rows(entries))

    def forget(self, unit_ids: Iterable[str], reason: str) -> int:
        """Retract finished units so that the next run redoes them; returns how many were forgotten.

        Their rows leave every fragment (fragments they share with other units are rewritten under new
        names), their tensors are deleted, and the ledger records them as "forgotten" with `reason`.
        Crash-safe in this order: new fragments (orphans until named), one ledger write naming them,
        then deletion of the old files, which no latest entry names any more (`remove_orphans` would).
        """
        latest = self.latest_entries()
        targets = sorted({u for u in unit_ids if u in latest and latest[u]["status"] == "ok"})
        if not targets:
            return 0
        gone = set(targets)
        affected = sorted({f for u in targets for f in latest[u].get("fragments") or []})
        renamed: dict[str, str | None] = {}
        for rel in affected:
            path = self.root / rel
            if not path.exists():
                renamed[rel] = None
                continue
            table = pq.read_table(path, partitioning=None)
            kept = table.filter(pc.invert(pc.is_in(table["unit_id"], value_set=pa.array(targets))))
            renamed[rel] = None
            if kept.num_rows:
                renamed[rel] = f"{Path(rel).parent.as_posix()}/{fragment_name()}"
                if PARTITION_KEY in kept.column_names and f"/{PARTITION_KEY}=" in rel:
                    kept = kept.drop_columns([PARTITION_KEY])
                self._write_fragment(rel.split("/", 1)[0], renamed[rel], kept)
        now = time.time()
        entries = [{**latest[u], "status": "forgotten", "fragments": [], "error": reason, "finished_at": now}
                   for u in targets]
        for unit_id, entry in latest.items():
            fragments = entry.get("fragments") or []
            if unit_id not in gone and entry["status"] == "ok" and any(f in renamed for f in fragments):
                moved = [renamed.get(f, f) for f in fragments]
                entries.append({**entry, "fragments": [f for f in moved if f is not None], "finished_at": now})
        self.record_units(entries)
        for rel in affected:
            (self.root / rel).unlink(missing_ok=True)
        for unit_id in gone:
            (self.root / tensor_file(unit_id)).unlink(missing_ok=True)
        return len(targets)

    def write_run(self, row: dict[str, Any], columns: ColumnInfo | None = None) -> str:
        """Append one provenance row to the `runs` table (`columns`: meaning and unit of its fields)."""
        rel = f"{RUNS_DIR}/{fragment_name()}"
        self._write_fragment(RUNS_DIR, rel, _table_from_rows([row]), columns)
        return rel

    def tables(self) -> list[str]:
        return sorted(p.name for p in self.root.iterdir()
                      if p.is_dir() and not p.name.startswith(("_", ".")) and p.name != TENSORS_DIR)
