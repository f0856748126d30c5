"""The results store's on-disk layout, named once: the writer (survey.store) and every reader
(survey.analysis.db, survey.analysis.figures) import these names instead of spelling paths.

    <table>/network=<name>/part-<uuid>.parquet   rows of one flush (tables: attacks, ball, ...); the
                                                  `network` column lives in the directory name only
    _ledger/part-<uuid>.parquet                   one row per finished, failed or forgotten unit
    runs/part-<uuid>.parquet                      provenance, one row per run
    tensors/<unit_id>.safetensors                 tensors kept by a unit
    .lock                                         the single writer's lock (holds its pid)

Files are written as `.tmp-<name>.partial` and renamed, so a reader globbing FRAGMENT_GLOB never sees
a half-written file. Every fragment of one directory (a table, runs, the ledger) has the same schema,
so each is a plain Parquet dataset for pandas, polars and pyarrow (hive partitioning for the tables).
"""

from __future__ import annotations

import re
import uuid

LEDGER_DIR = "_ledger"
RUNS_DIR = "runs"
TENSORS_DIR = "tensors"
LOCK_FILE = ".lock"
#: Hive partition key of row fragments: <table>/network=<name>/...
PARTITION_KEY = "network"
#: What a partition value (a network name) may look like: it names a directory, and hive readers
#: (pyarrow, polars, DuckDB) would read a value of digits only as a number.
PARTITION_VALUE = re.compile(r"[A-Za-z][A-Za-z0-9_.-]*")
#: Parquet field metadata keys of a column's meaning and unit.
MEANING_KEY, UNIT_KEY = b"meaning", b"unit"
#: Finished fragments only (temporary files never match).
FRAGMENT_GLOB = "part-*.parquet"
TEMP_PREFIX = ".tmp-"
TEMP_SUFFIX = ".partial"
TENSOR_SUFFIX = ".safetensors"
#: Tensor keys starting with this hold one entry per image (indexed by the rows' `image_index`),
#: not one per row (indexed by `tensor_index`).
PER_IMAGE = "per_image/"

#: Columns the engine adds to every row of a task table (name -> (meaning, unit)), beside the columns
#: the tasks declare (`survey.tasks.table_columns`).
ROW_COLUMNS: dict[str, tuple[str, str]] = {
    "repeat": ("repeat index of the work unit (0 unless the task asks for repeats)", ""),
    "run_id": ("id of the `survey run` that wrote the row (its row in `runs`)", ""),
    "tensor_file": ("store-relative safetensors file of the tensors the unit kept", ""),
    "tensor_sha256": ("sha256 of tensor_file when it was written", ""),
    "tensor_index": ("index of the row's tensors in tensor_file (per-row tensors)", ""),
}

#: Columns of the `runs` table (provenance, one row per `survey run`; JSON columns hold text).
RUN_COLUMNS: dict[str, tuple[str, str]] = {
    "run_id": ("id of the run (start time and study digest)", ""),
    "study": ("study name", ""),
    "study_sha256": ("sha256 of the study's content", ""),
    "study_path": ("path of the study file", ""),
    "seed": ("the study's seed", ""),
    "code_version": ("stability-survey version", ""),
    "git_commit": ("commit of the code, when run from a git checkout", ""),
    "packages": ("JSON: versions of the packages that matter", ""),
    "host": ("host name of the driver", ""),
    "user": ("user who ran it", ""),
    "python": ("Python version", ""),
    "started_at": ("when the run started (Unix time)", "s"),
    "devices": ("JSON: per network, the device and threads of its actors", ""),
    "weights_sha256": ("JSON: per network, sha256 of its weights (or archive / factory source)", ""),
    "datasets_sha256": ("JSON: per dataset@size, sha256 of its image ids and pixels", ""),
    "study_json": ("JSON: the validated study", ""),
    "notes": ("JSON: list of notes of the run (checkpoint weights unwrapped, files skipped, ...)", ""),
    "datasets_skipped": ("JSON: per dataset, the [item, reason] of every input file that was not loaded", ""),
}


def check_partition_value(value: str, what: str = "network name") -> str:
    """`value` if it is a safe partition value (PARTITION_VALUE), else ValueError saying what is allowed."""
    if not isinstance(value, str) or not PARTITION_VALUE.fullmatch(value) or len(value) > 128:
        raise ValueError(f"{what} {value!r}: use letters, digits, '_', '-' and '.', starting with a letter "
                         "(it names a directory of the results store)")
    return value


def fragment_name() -> str:
    """A fresh, unique fragment file name matching FRAGMENT_GLOB."""
    return f"part-{uuid.uuid4().hex}.parquet"


def temp_name(name: str) -> str:
    """The temporary name a file is written under before it is renamed to `name`."""
    return f"{TEMP_PREFIX}{name}{TEMP_SUFFIX}"


def tensor_file(unit_id: str) -> str:
    """Store-relative path of a unit's kept tensors."""
    return f"{TENSORS_DIR}/{unit_id}{TENSOR_SUFFIX}"


def is_reserved(directory: str) -> bool:
    """True for store directories that are not row tables (ledger, runs, tensors, hidden ones)."""
    return directory.startswith(("_", ".")) or directory in (TENSORS_DIR, RUNS_DIR)
