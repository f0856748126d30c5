"""`survey verify`: recompute every number a report's manifest records from a store, and say whether the
store is the one the report was made from.

Checks, in order: the folder is a report (it holds manifest.json) and the store is of the report's study
(a run of the same name and study sha256): else ValueError, before any work (bad input). Then the
store's fragments against the manifest's sha256 (an extract, survey.analysis.extract, is checked
against the fragments it was cut from and its own recorded ones), then each recorded number: its call
rerun on the store (each call once), the value printed as the report prints it and compared as text.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from survey.analysis.manifest import MANIFEST, fragments
from survey.analysis.recompute import printed_value, run_call

EXTRACT = "extract.json"


@dataclass
class Outcome:
    """What `verify` found: numbers checked, those that differ (entry + what the store gives), and lines
    naming fragments that differ from the manifest's."""

    checked: int = 0
    differ: list[dict[str, Any]] = field(default_factory=list)
    altered: list[str] = field(default_factory=list)
    extract: bool = False

    @property
    def ok(self) -> bool:
        return not self.differ and not self.altered


def load_manifest(report: Path | str) -> dict[str, Any]:
    """The manifest of the report folder `report`; ValueError (one line) when it is not a report."""
    folder = Path(report).expanduser()
    path = folder / MANIFEST if folder.is_dir() else folder
    if not folder.exists():
        raise ValueError(f"report {str(report)!r}: no such folder")
    if not path.is_file():
        raise ValueError(f"{str(report)!r} is not a report: it holds no {MANIFEST} (write one with `survey report`)")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise ValueError(f"{path}: not a report manifest (not JSON: {exc})") from None
    if not isinstance(manifest, dict) or "numbers" not in manifest or "fragments" not in manifest:
        raise ValueError(f"{path}: not a report manifest (no 'numbers' or 'fragments')")
    return manifest


def store_studies(store: Path) -> list[dict[str, Any]]:
    """(study, study_sha256) of each run recorded in the store ([] when it has no runs table)."""
    from survey.analysis.db import query, view_sources
    if "runs" not in view_sources(store):
        return []
    frame = query(store, "SELECT DISTINCT study, study_sha256 FROM runs ORDER BY ALL")
    return [{"study": r.study, "study_sha256": r.study_sha256} for r in frame.itertuples(index=False)]


def check_study(manifest: dict[str, Any], store: Path) -> None:
    """ValueError (one line) unless the store holds a run of the report's study (same name and sha256)."""
    want = manifest.get("study") or {}
    name = want.get("name")
    shas = {r.get("study_sha256") for r in want.get("runs") or []} - {None}
    found = store_studies(store)
    if not found:
        raise ValueError(f"store {str(store)!r} holds no runs table: cannot tell which study it is of")
    names = {r["study"] for r in found}
    have = {r["study_sha256"] for r in found}
    if name not in names or (shas and not shas & have):
        shown = ", ".join(f"{r['study']!r} (sha256 {str(r['study_sha256'])[:12]}…)" for r in found)
        wanted = f"{name!r}" + (f" (sha256 {sorted(shas)[0][:12]}…)" if shas else "")
        raise ValueError(f"store {str(store)!r} is of study {shown}, the report of study {wanted}: "
                         "not the report's store")


def fragment_diff(expected: dict[str, Any], found: dict[str, Any], what: str) -> list[str]:
    """One line per fragment that changed, went missing or appeared (`what`: against what)."""
    lines = []
    for rel in sorted(set(expected) | set(found)):
        old, new = expected.get(rel), found.get(rel)
        if old is None:
            lines.append(f"fragment {rel} is new ({new['rows']} rows), not in {what}")
        elif new is None:
            lines.append(f"fragment {rel} ({old['rows']} rows) in {what} is missing")
        elif old["sha256"] != new["sha256"]:
            lines.append(f"fragment {rel} changed (sha256 {old['sha256'][:12]}… -> {new['sha256'][:12]}…, "
                         f"rows {old['rows']} -> {new['rows']})")
    return lines


def check_fragments(manifest: dict[str, Any], store: Path) -> tuple[list[str], bool]:
    """(lines naming the fragments that differ, whether the store is an extract)."""
    now = fragments(store)
    marker = store / EXTRACT
    if not marker.is_file():
        return fragment_diff(manifest["fragments"], now, "the report's store"), False
    extract = json.loads(marker.read_text(encoding="utf-8"))
    lines = [f"the extract was cut from another state of the store: {line}"
             for line in fragment_diff(manifest["fragments"], extract.get("source_fragments") or {},
                                       "the report's store")]
    lines += fragment_diff(extract.get("fragments") or {}, now, "the extract as written")
    return lines, True


def _plain(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))


def find_row(rows: list[dict[str, Any]], key: dict[str, Any], field_name: str) -> dict[str, Any] | None:
    """The first row whose key columns equal `key` (compared as JSON) and that has `field_name`."""
    for r in rows:
        if field_name in r and all(_plain(r.get(c)) == v for c, v in key.items()):
            return r
    return None


def recompute(manifest: dict[str, Any], store: Path) -> tuple[int, list[dict[str, Any]]]:
    """(numbers checked, entries whose recomputed text differs, each with "found" and "command")."""
    from survey.analysis.db import connect

    calls = manifest.get("calls") or {}
    results: dict[str, Any] = {}
    con = connect(store)
    try:
        for cid, spec in calls.items():
            try:
                results[cid] = run_call(con, {"function": spec["function"], "kwargs": spec.get("kwargs") or {}},
                                        root=store)
            except Exception as exc:  # noqa: BLE001 - a call that fails on this store is a difference, named
                results[cid] = f"could not be recomputed ({type(exc).__name__}: {' '.join(str(exc).split())[:200]})"
    finally:
        con.close()
    differ = []
    for entry in manifest["numbers"]:
        spec = calls.get(entry["call"])
        rows = results.get(entry["call"], "its call is missing from the manifest")
        command = (spec or {}).get("command")
        if isinstance(rows, str):
            differ.append({**entry, "found": rows, "command": command})
            continue
        key = spec["rows"][entry["row"]]
        row = find_row(rows, key, entry["field"])
        found = "no such row on this store" if row is None else printed_value(row[entry["field"]])
        if found != entry["value"]:
            differ.append({**entry, "found": found, "command": command})
    return len(manifest["numbers"]), differ


def verify(report: Path | str, store: Path | str) -> Outcome:
    """Check report `report` against `store` (a store or an extract). ValueError before any work when the
    folder is not a report or the store is not of the report's study."""
    manifest = load_manifest(report)
    root = Path(store).expanduser()
    if not root.is_dir():
        raise ValueError(f"store {str(store)!r}: no such directory")
    check_study(manifest, root)
    altered, is_extract = check_fragments(manifest, root)
    checked, differ = recompute(manifest, root)
    return Outcome(checked=checked, differ=differ, altered=altered, extract=is_extract)


def lines(outcome: Outcome, store: Path | str) -> list[str]:
    """The report `survey verify` prints: each differing number, each changed fragment, a summary line."""
    out = []
    for d in outcome.differ:
        how = f" ({d['command']})" if d.get("command") else ""
        out.append(f"DIFFERS {d['id']}: report {d['value']}, store {d['found']}{how}")
    if outcome.altered:
        what = "extract" if outcome.extract else "store"
        out.append(f"ALTERED: the {what} {str(store)!r} is not what the report was made from "
                   f"({len(outcome.altered)} fragment(s)):")
        out += [f"  {line}" for line in outcome.altered]
    same = outcome.checked - len(outcome.differ)
    verdict = "OK" if outcome.ok else "FAILED"
    out.append(f"{verdict}: {same} of {outcome.checked} numbers match"
               + (f", {len(outcome.differ)} differ" if outcome.differ else "")
               + ("; fragments as recorded" if not outcome.altered else "; fragments differ"))
    return out
