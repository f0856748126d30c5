"""The context a section works in: the store's connection, the tables it knows, the live units."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from survey.analysis.db import execute, sql_identifier
from survey.analysis.sections.text import N_BOOT, SEED, count
from survey.analysis.sections.doc import Doc  # noqa: F401


#: Units whose latest ledger entry is 'ok': rows of others (failed, or retracted by `survey forget`) and
#: their tensors are never shown. Bound to the `ledger` view; tie on finished_at: `forget` writes later.
LIVE_UNITS = ("SELECT unit_id FROM (SELECT unit_id, arg_max(status, finished_at) AS status FROM ledger "
              "GROUP BY unit_id) WHERE status = 'ok'")


@dataclass
class Context:
    """What a section sees: the document, the DuckDB connection over the store, the store's tables, the
    store (resolved, for tensor files; `given`: as typed, for printed commands), the study (a dict), the
    ground truths (`truths.get(dataset, image_id, size)`), the bootstrap's settings and a ledger summary."""

    doc: Doc
    con: Any
    known: list[str]
    store: Path
    given: Path
    info: dict[str, Any] = field(default_factory=dict)
    truths: Any = None
    n_boot: int = N_BOOT
    seed: int = SEED
    computed: dict[str, Any] = field(default_factory=dict)
    #: (task, network) -> {"ok": units, "failed": units, "error": a failure message}, latest entries only
    units: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)

    def columns(self, table: str) -> set[str]:
        return set(execute(self.con, f"DESCRIBE {sql_identifier(table)}")["column_name"])

    def figure_path(self, name: str) -> Path:
        return self.doc.figure_path(name)

    def live(self, alias: str = "") -> str:
        """An SQL condition keeping rows of live units (true when the store has no ledger)."""
        if "ledger" not in self.known:
            return "TRUE"
        return f"{alias + '.' if alias else ''}unit_id IN ({LIVE_UNITS})"

    def failed_networks(self, table: str, tasks: Sequence[str]) -> dict[str, dict[str, Any]]:
        """Networks whose units of `tasks` (writing `table`) all failed, so that `table` has no rows of them:
        network -> {"failed": units, "error": one message}."""
        present: set[str] = set()
        if table in self.known:
            present = set(execute(self.con, f"SELECT DISTINCT network FROM {sql_identifier(table)}")["network"])
        found: dict[str, dict[str, Any]] = {}
        for (task, network), c in sorted(self.units.items()):
            if task in tasks and c["failed"] and not c["ok"] and network not in present:
                entry = found.setdefault(network, {"failed": 0, "error": c.get("error")})
                entry["failed"] += c["failed"]
        return found


def ledger_units(con, known: Sequence[str]) -> dict[tuple[str, str], dict[str, Any]]:
    """(task, network) -> {"ok", "failed", "error"} counted over each unit's latest ledger entry."""
    if "ledger" not in known:
        return {}
    frame = execute(con, "WITH latest AS (SELECT unit_id, arg_max(task, finished_at) AS task, "
                         "arg_max(network, finished_at) AS network, arg_max(status, finished_at) AS status, "
                         "arg_max(error, finished_at) AS error FROM ledger GROUP BY unit_id) "
                         "SELECT task, network, count(*) FILTER (WHERE status = 'ok') AS ok, "
                         "count(*) FILTER (WHERE status = 'failed') AS failed, "
                         "min(error) FILTER (WHERE status = 'failed') AS error FROM latest GROUP BY ALL")
    return {(r.task, r.network): {"ok": count(r.ok), "failed": count(r.failed),
                                  "error": r.error if isinstance(r.error, str) else None}
            for r in frame.itertuples(index=False)}
