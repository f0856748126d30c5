"""The report's manifest (`manifest.json` beside index.html): what the report was made from and how to
recompute each number it prints.

    code       git commit of the code that wrote the report ("unknown" outside a checkout) and a dirty flag
    study      name, sha256 of the study the report used, the study sha256 of each run in the store
    networks   sha256 of each network's weights as recorded at run time (the zoo card's when not recorded)
    datasets   sha256 of each dataset@size's ids and pixels as recorded at run time
    fragments  every Parquet fragment of the store: store-relative path -> {sha256, rows}
    numbers    one entry per recorded number: a stable id, the value as printed, the call that recomputes it
               (survey.analysis.recompute) and the `survey estimate` command a reader types for it
    coverage   numeric table cells of the report, and how many sit in tables whose numbers are recorded

Numbers are recorded by `Numbers.rows` from the rows an analysis returned (every `ctx.computed` entry of the
report with a `survey estimate` command or a call, the acceptance criteria, the summary's row counts).
`survey verify` (survey.analysis.verify) reruns each call on a store and compares the printed values.
"""

from __future__ import annotations

import hashlib
import json
import shlex
import subprocess
from pathlib import Path
from typing import Any, Iterable, Sequence

from survey.analysis.recompute import call, call_from_command, call_key, printed_value
from survey.nets.zoo import file_sha256

MANIFEST = "manifest.json"
VERSION = 1
#: Fields of an estimate-like row that the report prints, in the order they are recorded.
FIELDS = ("n", "k", "clusters", "images", "point", "ci_low", "ci_high", "upper_bound", "lower_bound",
          "p_value", "p_adjusted", "verdict_raw", "verdict", "status",
          "network_median", "reference_median", "H_median", "ratio", "share_above_1", "p_holm", "direction",
          "dropped", "mean", "max", "above", "q0.5", "q0.9", "q0.99", "count")
#: Fields printed of a secondary (not primary) interval's row.
SECONDARY = ("ci_low", "ci_high")
#: Row fields that tell rows of one call apart beside the group columns, per function.
DISCRIMINATORS = {"estimate": ("method",), "per_image_distribution": ("level",), "rare_distribution": ("level",),
                  "sweep_slopes": (), "paired_gain_ratio": (), "criteria": ("method",), "sql": ()}


def fragments(store: Path | str) -> dict[str, dict[str, Any]]:
    """Every finished Parquet fragment under `store`: store-relative posix path -> {"sha256", "rows"}."""
    import pyarrow.parquet as pq

    from survey.layout import FRAGMENT_GLOB

    root = Path(store).expanduser().resolve()
    found = {}
    for path in sorted(root.rglob(FRAGMENT_GLOB)):
        rel = path.relative_to(root).as_posix()
        try:
            rows = pq.ParquetFile(path).metadata.num_rows
        except Exception:  # noqa: BLE001 - an unreadable fragment is still hashed, its rows unknown
            rows = None
        found[rel] = {"sha256": file_sha256(path), "rows": rows}
    return found


def code_state(where: Path | None = None) -> dict[str, Any]:
    """{"commit": HEAD or "unknown", "dirty": True / False / None} of the checkout holding the code."""
    where = where or Path(__file__).resolve().parent

    def git(*args: str) -> str | None:
        try:
            out = subprocess.run(["git", *args], capture_output=True, text=True, timeout=10, cwd=where)
        except (OSError, subprocess.SubprocessError):
            return None
        return out.stdout if out.returncode == 0 else None

    commit = (git("rev-parse", "HEAD") or "").strip()
    if not commit:
        return {"commit": "unknown", "dirty": None}
    status = git("status", "--porcelain", "--untracked-files=no")
    return {"commit": commit, "dirty": None if status is None else bool(status.strip())}


class Numbers:
    """The registry of printed numbers: `record` one, or `rows` every printed field of an analysis's rows.

    entries: {"id", "value" (as printed), "call" (key into `calls`), "row" (index into that call's "rows",
    the key columns of the row), "field"}; calls: call key -> {"function", "kwargs", "command", "rows"}."""

    def __init__(self) -> None:
        self.entries: list[dict[str, Any]] = []
        self.calls: dict[str, dict[str, Any]] = {}
        self._ids: set[str] = set()
        self._rows: dict[tuple[str, str], int] = {}
        self.commands: set[str] = set()

    def _call_id(self, spec: dict[str, Any], command: str | None) -> str:
        cid = "c" + hashlib.sha256(call_key(spec).encode()).hexdigest()[:12]
        entry = self.calls.setdefault(cid, {**spec, "command": command, "rows": []})
        entry["command"] = entry["command"] or command
        return cid

    def _row_index(self, cid: str, row: dict[str, Any]) -> int:
        key = (cid, json.dumps(row, sort_keys=True, default=str))
        if key not in self._rows:
            self._rows[key] = len(self.calls[cid]["rows"])
            self.calls[cid]["rows"].append(_jsonable(row))
        return self._rows[key]

    def record(self, number_id: str, value: Any, spec: dict[str, Any], row: dict[str, Any], field: str,
               command: str | None = None) -> None:
        """One number: `value` as the report prints it, found in the rows of `spec` at `row` (key columns), `field`."""
        if number_id in self._ids:
            return
        self._ids.add(number_id)
        if command:
            self.commands.add(command)
        cid = self._call_id(spec, command)
        self.entries.append({"id": number_id, "value": printed_value(value), "call": cid,
                             "row": self._row_index(cid, row), "field": field})

    def rows(self, prefix: str, spec: dict[str, Any], rows: Iterable[dict[str, Any]], by: Sequence[str],
             command: str | None = None, fields: Sequence[str] = FIELDS,
             discriminators: Sequence[str] | None = None) -> int:
        """Record every printed field of every row; ids `prefix/col=value,.../discriminators/field`. Returns
        how many numbers were recorded. discriminators: row fields beside `by` that tell rows apart (default:
        by the call's function, DISCRIMINATORS)."""
        before = len(self.entries)
        extra_keys = list(DISCRIMINATORS.get(spec["function"], ()) if discriminators is None else discriminators)
        for r in rows:
            key = {c: r.get(c) for c in by if c in r}
            label = ",".join(f"{c}={_text(v)}" for c, v in key.items()) or "all"
            extra = {c: r.get(c) for c in extra_keys if c in r}
            tail = "/".join(_text(v) for v in extra.values())
            shown = SECONDARY if r.get("primary") is False else fields   # secondary intervals: their bounds only
            for f in shown:
                if f in r and not isinstance(r[f], (list, dict)):
                    number_id = "/".join(x for x in (prefix, label, tail, f) if x)
                    self.record(number_id, r[f], spec, {**key, **extra}, f, command)
        return len(self.entries) - before


def _text(value: Any) -> str:
    return printed_value(value) if not isinstance(value, str) else value


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))


# -- what the report computed -----------------------------------------------------------------------

def record_computed(numbers: Numbers, computed: dict[str, Any]) -> list[str]:
    """Numbers of every `ctx.computed` entry (solver -> rows, with a `survey estimate` command or a call);
    returns the keys left out (no command, or one that is not `survey estimate`)."""
    left = []
    for key, entry in computed.items():
        by = list(entry.get("by") or [])
        calls = entry.get("calls") or {}
        commands = entry.get("commands") or {}
        for solver in ("network", "reference"):
            rows = entry.get(solver) or []
            if not rows:
                continue
            command = commands.get(solver)
            spec = calls.get(solver) or (call_from_command(command) if command else None)
            if spec is None:
                left.append(f"{key} ({solver})")
                continue
            numbers.rows(f"{key}/{solver}", spec, rows, by, command)
    return left


def record_criteria(numbers: Numbers, results: Sequence[Any], criteria: Sequence[Any], *, n_boot: int, seed: int,
                    correction: str, cluster: str | None) -> None:
    """The verdict table: each criterion's status and each group's decision (bounds, p-values, verdicts)."""
    if not results:
        return
    plain = [c.model_dump() if hasattr(c, "model_dump") else dict(c) for c in criteria]
    spec = call("criteria", criteria=plain, n_boot=n_boot, seed=seed, correction=correction, cluster=cluster)
    for i, r in enumerate(results):
        prefix = f"criteria/{i}"
        numbers.record(f"{prefix}/status", r.status, spec, {"criterion": i}, "status", r.command)
        numbers.rows("criteria", spec, [{"criterion": i, **{c: g.get(c) for c in r.by}, **g} for g in r.groups],
                     ["criterion", *r.by], r.command, fields=("n", "k", "point", "lower_bound", "upper_bound",
                                                              "p_value", "p_adjusted", "verdict_raw", "verdict"))


def record_counts(numbers: Numbers, con, tables: Sequence[str], store: str | Path) -> None:
    """The summary's row count of each table the store holds (its command names the store as given)."""
    from survey.analysis.db import execute, sql_identifier
    for table in tables:
        sql = f"SELECT count(*) AS count FROM {sql_identifier(table)}"
        n = int(execute(con, sql)["count"].iloc[0])
        command = shlex.join(["survey", "query", sql, "--store", str(store)])
        numbers.record(f"rows/{table}", n, call("sql", sql=sql), {}, "count", command)


def coverage(sections: Sequence[dict[str, Any]], commands: set[str]) -> dict[str, Any]:
    """Numeric cells of the report's tables, and those in tables whose every command is recorded."""
    total = covered = 0
    tables = covered_tables = 0
    for section in sections:
        for block in section.get("blocks") or []:
            if block.get("kind") != "table":
                continue
            cells = sum(1 for row in block["rows"] for i in block.get("numeric") or [] if i < len(row)
                        and row[i] not in ("–", ""))
            tables += 1
            total += cells
            if block.get("commands") and all(c in commands for c in block["commands"]):
                covered += cells
                covered_tables += 1
    return {"numeric_cells": total, "numeric_cells_recorded": covered, "tables": tables,
            "tables_recorded": covered_tables,
            "fraction": round(covered / total, 4) if total else None}


# -- the manifest -----------------------------------------------------------------------------------

def hashes(runs: Sequence[dict[str, Any]], info: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(network -> weights sha256, dataset@size -> content sha256), as recorded by the store's runs; a zoo
    network the runs do not name gets its model card's digest."""
    from survey.analysis.sections.study import recorded_hashes
    weights = dict(recorded_hashes(list(runs), "weights_sha256"))
    for net in info.get("networks") or []:
        name = net.get("name") if isinstance(net, dict) else None
        if name and not weights.get(name) and not net.get("factory"):
            try:
                from survey.nets.zoo import load_card
                weights[name] = (load_card(name) or {}).get("weights_sha256")
            except (ImportError, OSError, ValueError):
                pass
    return weights, dict(recorded_hashes(list(runs), "datasets_sha256"))


def build_manifest(store: Path, given: Path, info: dict[str, Any], study_sha: str | None,
                   runs: Sequence[dict[str, Any]], numbers: Numbers, left_out: Sequence[str],
                   sections: Sequence[dict[str, Any]]) -> dict[str, Any]:
    weights, datasets = hashes(runs, info)
    return {
        "kind": "stability-survey report manifest", "version": VERSION,
        "code": code_state(),
        "study": {"name": info.get("name") or (runs[-1].get("study") if runs else None), "sha256": study_sha,
                  "runs": [{"run_id": r.get("run_id"), "study": r.get("study"), "study_sha256": r.get("study_sha256"),
                            "git_commit": r.get("git_commit")} for r in runs]},
        "store": str(given),
        "networks": weights, "datasets": datasets,
        "fragments": fragments(store),
        "calls": numbers.calls,
        "numbers": numbers.entries,
        "not_recorded": list(left_out),
        "coverage": coverage(sections, numbers.commands),
    }


def manifest_block(doc, manifest: dict[str, Any], report_dir: Path) -> dict[str, Any]:
    """The visible part of the manifest: a compact table for the provenance section."""
    code = manifest["code"]
    cov = manifest["coverage"]
    dirty = {True: " (uncommitted changes)", False: "", None: ""}[code["dirty"]]
    rows_total = sum(f["rows"] or 0 for f in manifest["fragments"].values())
    digest = hashlib.sha256(json.dumps(manifest["fragments"], sort_keys=True).encode()).hexdigest()
    shown = (f"{cov['numeric_cells_recorded']} of {cov['numeric_cells']} numeric table cells "
             f"({100 * cov['fraction']:.0f}%)" if cov["fraction"] is not None else "no numeric table cells")
    rows = [["code commit", code["commit"] + dirty],
            ["study", f"{manifest['study']['name']} (sha256 {str(manifest['study']['sha256'] or '–')[:16]}…)"],
            ["networks", "; ".join(f"{k} {str(v or '–')[:12]}…" for k, v in sorted(manifest["networks"].items()))
             or "–"],
            ["datasets", "; ".join(f"{k} {str(v or '–')[:12]}…" for k, v in sorted(manifest["datasets"].items()))
             or "–"],
            ["store fragments", f"{len(manifest['fragments'])} Parquet fragments, {rows_total:,} rows "
                                f"(sha256 of their list {digest[:16]}…)"],
            ["numbers with a recomputation", f"{len(manifest['numbers'])}, covering {shown}"]]
    return doc.table(f"Manifest ({MANIFEST} beside this page): every recorded number with the call that recomputes "
                     "it, and the sha256 of every fragment of the store. Check them against a store with the "
                     "command below: it names every number that differs and every fragment that changed.",
                     ["", "value"], rows, wrap=True,
                     commands=[f"survey verify {report_dir} --store {manifest['store']}"])


def write_manifest(out: Path, manifest: dict[str, Any] | None) -> Path:
    """out/manifest.json; with None, removes an older one (its numbers would not be this report's)."""
    path = Path(out) / MANIFEST
    if manifest is None:
        path.unlink(missing_ok=True)
        return path
    path.write_text(json.dumps(manifest, indent=1, sort_keys=True, default=str) + "\n", encoding="utf-8")
    return path


def record_report(ctx, results: Sequence[Any], summary_tables: Sequence[str], study, runs: Sequence[dict[str, Any]],
                  ) -> dict[str, Any]:
    """The manifest of the report being built in `ctx` (its numbers recorded), with its visible table appended
    to the provenance section. summary_tables: the tables whose row counts the summary prints."""
    numbers = Numbers()
    info = ctx.info
    record_criteria(numbers, results, info.get("criteria") or [], n_boot=ctx.n_boot, seed=ctx.seed,
                    correction=info.get("correction") or "holm", cluster=(info.get("analysis") or {}).get("cluster"))
    left = record_computed(numbers, ctx.computed)
    record_counts(numbers, ctx.con, [t for t in summary_tables if t in ctx.known], ctx.given)
    study_sha = (study.digest() if study is not None else None) or (runs[-1].get("study_sha256") if runs else None)
    manifest = build_manifest(ctx.store, ctx.given, info, study_sha, runs, numbers, left, ctx.doc.sections)
    for section in ctx.doc.sections:
        if section["anchor"] == "provenance":
            section["blocks"].append(manifest_block(ctx.doc, manifest, ctx.doc.out))
            break
    return manifest
