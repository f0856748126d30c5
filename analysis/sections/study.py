"""The study around the tables: its recorded provenance, the ground truths, the device under test, the
study's acceptance criteria and their verdicts (judged on the Clopper-Pearson upper bound).

The ground truth x is not stored by the tasks: worst-case figures reload it from the study's dataset
declaration (deterministic loaders) and use it only when its content hash equals the one recorded in
the `runs` table.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from survey.analysis.db import connect, execute, sql_identifier, tables as view_names
from survey.analysis.estimate import estimate
from survey.analysis.sections.base import (CONFIDENCE, N_BOOT, SEED, Context, Doc, as_json, estimate_command,
                                           format_number, p, percent, records)

#: The interval an acceptance criterion is judged on (exact; one-sided at k = 0, else two-sided, so conservative).
CRITERION_METHOD = "clopper-pearson"


# -- the study and its provenance -----------------------------------------------------------------

def runs(con) -> list[dict[str, Any]]:
    if "runs" not in view_names(con):
        return []
    return records(execute(con, "SELECT * FROM runs ORDER BY started_at"))


def study_info(study, recorded: list[dict[str, Any]]) -> dict[str, Any]:
    """The study as a plain dict: the given Study, else the newest run's recorded study."""
    if study is not None:
        return study.model_dump()
    for run in reversed(recorded):
        info = as_json(run.get("study_json"))
        if isinstance(info, dict):
            return info
    return {}


def recorded_hashes(recorded: list[dict[str, Any]], key: str) -> dict[str, Any]:
    merged: dict[str, Any] = {}
    for run in recorded:
        merged.update(as_json(run.get(key)) or {})
    return merged


class Truths:
    """Ground truths reloaded from the study's dataset declarations, checked against recorded hashes."""

    def __init__(self, info: dict[str, Any], recorded: list[dict[str, Any]]):
        self.datasets = {d["name"]: d for d in info.get("datasets", []) if isinstance(d, dict)}
        self.base = Path(info["path"]).parent if info.get("path") else Path.cwd()
        self.hashes = recorded_hashes(recorded, "datasets_sha256")
        self.cache: dict[tuple[str, int], dict[str, Any] | None] = {}
        self.notes: list[str] = []

    def get(self, dataset: str, image_id: str, size: int):
        key = (dataset, size)
        if key not in self.cache:
            self.cache[key] = self._load(dataset, size)
        images = self.cache[key]
        return None if images is None else images.get(image_id)

    def _load(self, dataset: str, size: int):
        from survey.data import load_dataset

        spec = self.datasets.get(dataset)
        if spec is None:
            self.notes.append(f"dataset {dataset!r} is not declared in the study: x is not shown")
            return None
        params = dict(spec.get("params") or {})
        if "path" in params:
            params["path"] = str((self.base / params["path"]).resolve())
        try:
            images = load_dataset(dataset, split=spec.get("split", "test"), size=size, count=spec.get("count"),
                                  **params)
        except (ValueError, OSError, ImportError) as exc:
            self.notes.append(f"dataset {dataset!r} could not be reloaded ({exc}): x is not shown")
            return None
        recorded = self.hashes.get(f"{dataset}@{size}")
        if recorded is not None and recorded != images.content_hash:
            self.notes.append(f"dataset {dataset!r} at {size} px no longer matches the hash recorded at run "
                              "time: x is not shown")
            return None
        return {i: images.images[k, 0] for k, i in enumerate(images.ids)}


# -- device under test ----------------------------------------------------------------------------

def physics_text(physics: dict[str, Any] | None) -> tuple[str, str]:
    if not physics:
        return "–", "–"
    kind = str(physics.get("kind", "?"))
    if kind in ("mri", "pmri"):
        sampling = f"{physics.get('ratio')} of k-space, {physics.get('mask', '?')} mask"
        if kind == "pmri":
            sampling += f", {physics.get('coils', '?')} coils"
    elif kind == "radon":
        sampling = f"{physics.get('views')} views" + (f" over {physics.get('angular_range')}°"
                                                       if physics.get("angular_range") else "")
    elif kind == "denoise":
        sampling = f"noise σ = {format_number(physics.get('sigma'))}"
    else:
        sampling = ", ".join(f"{k}={v}" for k, v in physics.items() if k not in ("kind", "size"))
    return f"{kind}, {physics.get('size', '?')} × {physics.get('size', '?')}", sampling


def device_section(ctx: Context, recorded: list[dict[str, Any]], tables: Sequence[str]) -> None:
    doc, info = ctx.doc, ctx.info
    blocks = doc.section("device", "Device under test")
    weights = recorded_hashes(recorded, "weights_sha256")
    present = distinct_networks(ctx, tables)
    networks = info.get("networks") or [{"name": n} for n in present]
    rows, cards = [], []
    for net in networks:
        name = net.get("name")
        physics, source, card = net.get("physics"), "own network", None
        if not net.get("factory"):
            try:
                from survey.nets.zoo import entry, load_card

                physics, card = dict(entry(name).physics), load_card(name)
                source = f"zoo: {entry(name).summary}"
            except ValueError:
                source = "unknown"
        else:
            source = f"own network: {net.get('factory')}"
        operator, sampling = physics_text(physics)
        digest = weights.get(name) or (card or {}).get("weights_sha256")
        rows.append([str(name), source, operator, sampling, (digest or "–")[:16] + ("…" if digest else "")])
        if card:
            metrics = card.get("test_metrics") or {}
            shown = ", ".join(f"{k} {format_number(v)}" for k, v in metrics.items()
                              if isinstance(v, (int, float)))[:160]
            cards.append([str(name), str(card.get("architecture", "–")), format_number(card.get("parameters")),
                          str(card.get("dataset", "–")),
                          f"{(card.get('recipe') or {}).get('steps', '–')} steps, {card.get('device', '?')}",
                          shown or "–"])
    blocks.append(doc.table("Networks under test: operator, sampling and weights (sha256, first 16 hex digits; the "
                            "full digests are in the provenance section).",
                            ["network", "source", "operator", "sampling", "weights sha256"], rows))
    failed: dict[str, int] = {}
    for (_, network), c in ctx.units.items():
        if network not in present and c["failed"]:
            failed[network] = failed.get(network, 0) + c["failed"]
    for network, n in sorted(failed.items()):
        blocks.append(p(f"Network {network}: failed, no data. Every one of its {n} work units failed at its latest "
                        "attempt, so the store holds no rows of it and it is absent from every estimate (the "
                        "ledger in the provenance section lists the units).", "not-run"))
    if cards:
        blocks.append(doc.table("Model cards of the zoo networks.",
                                ["network", "architecture", "parameters", "training data", "training", "test metrics"],
                                cards))
    datasets = info.get("datasets") or []
    hashes = recorded_hashes(recorded, "datasets_sha256")
    if datasets:
        drows = []
        for d in datasets:
            shown = [f"{k.split('@')[1]} px: {v[:12]}…" for k, v in hashes.items() if k.split("@")[0] == d["name"]]
            drows.append([d["name"], d.get("split", "test"), format_number(d.get("count")) if d.get("count") else "all",
                          "; ".join(shown) or "–"])
        blocks.append(doc.table("Test images: datasets, splits, counts and content hashes recorded at run time.",
                                ["dataset", "split", "images", "content sha256"], drows))


def distinct_networks(ctx: Context, tables: Sequence[str]) -> list[str]:
    names: set[str] = set()
    for table in tables:
        if table in ctx.known:
            names |= set(execute(ctx.con, f"SELECT DISTINCT network FROM {sql_identifier(table)}")["network"])
    return sorted(names)


# -- acceptance criteria --------------------------------------------------------------------------

@dataclass
class CriterionResult:
    """The verdict on one acceptance criterion: status "pass", "fail", "not run", "no data" or "error"."""

    name: str
    table: str
    bad: str
    where: str | None
    by: list[str]
    max_upper: float
    confidence: float
    status: str
    groups: list[dict[str, Any]] = field(default_factory=list)   # estimate rows of CRITERION_METHOD + passed
    message: str = ""
    command: str = ""


def evaluate_criteria(store: Path | str, criteria: Sequence[Any], con=None, *, n_boot: int = N_BOOT,
                      seed: int = SEED) -> list[CriterionResult]:
    """Judge each criterion (CriterionSpec or dict): pass when every group's Clopper-Pearson upper bound
    of P(bad) is <= max_upper; computed by `estimate` with the criterion's `per`, as `survey estimate` does."""
    from survey.spec import CriterionSpec

    own = con is None
    con = connect(store) if own else con
    try:
        known = view_names(con)
        results = []
        for raw in criteria:
            c = raw if isinstance(raw, CriterionSpec) else CriterionSpec(**raw)
            result = CriterionResult(c.name, c.table, c.bad, c.where, list(c.by), c.max_upper, c.confidence,
                                     "not run", command=estimate_command(c.table, c.bad, where=c.where, by=c.by,
                                                                         per=c.per, store=Path(store),
                                                                         confidence=c.confidence))
            results.append(result)
            if c.table not in known:
                result.message = f"the store holds no {c.table!r} table"
                continue
            try:
                rows = estimate(con, c.table, c.bad, where=c.where, by=c.by, per=c.per, confidence=c.confidence,
                                n_boot=n_boot, seed=seed)
            except ValueError as exc:
                result.status, result.message = "error", str(exc)
                continue
            chosen = [dict(r, passed=r["ci_high"] is not None and r["ci_high"] <= c.max_upper)
                      for r in rows if r["method"] == CRITERION_METHOD]
            result.groups = chosen
            if not chosen:
                result.status, result.message = "no data", "no rows matched"
            else:
                result.status = "pass" if all(g["passed"] for g in chosen) else "fail"
        return results
    finally:
        if own:
            con.close()


def overall_verdict(results: Sequence[CriterionResult]) -> str:
    """"pass", "fail", "incomplete" (some criterion not judged) or "no criteria"."""
    if not results:
        return "no criteria"
    if any(r.status == "fail" for r in results):
        return "fail"
    return "pass" if all(r.status == "pass" for r in results) else "incomplete"


def mark_missing_networks(results: Sequence[CriterionResult], ctx: Context, tasks: dict[str, Sequence[str]]) -> None:
    """A criterion that passed without data from a network whose every unit of the table failed is not a pass:
    "no data" (so the verdict is incomplete), naming the networks. tasks: table -> tasks writing it."""
    for r in results:
        missing = sorted(ctx.failed_networks(r.table, tasks.get(r.table, ())))
        if not missing:
            continue
        note = f"no data from network(s) {', '.join(missing)}: every unit failed"
        r.message = f"{r.message}; {note}" if r.message else note
        if r.status == "pass":
            r.status = "no data"


def criteria_section(doc: Doc, results: list[CriterionResult]) -> None:
    blocks = doc.section("criteria", "Acceptance criteria")
    if not results:
        blocks.append(p("The study file states no acceptance criteria ([[criteria]] tables); the results below are "
                        "reported without a verdict.", "not-run"))
        return
    levels = sorted({r.confidence for r in results}) or [CONFIDENCE]
    blocks.append(p(f"A criterion passes when, for every group, the upper bound of the "
                    f"{' / '.join(percent(c) for c in levels)} "
                    "Clopper–Pearson interval for P(bad) is at most the stated limit. The bound is exact: "
                    "one-sided when no bad outcome was seen (then 1 − α^(1/n)), otherwise the upper end of the "
                    "two-sided interval, which is conservative. Trials are counted per the criterion's `per` (row, "
                    "image or sweep curve), as in `survey estimate`."))
    rows = []
    for r in results:
        if not r.groups:
            rows.append([r.name, r.table, r.bad, r.where or "–", "–", "–", "–", "–", "–",
                         format_number(r.max_upper), r.status.upper()])
        for g in r.groups:
            group = ", ".join(f"{c}={g.get(c)}" for c in r.by) or "all"
            rows.append([r.name, r.table, r.bad, r.where or "–", group, g["n"], g["k"], g["p"], g["ci_high"],
                         format_number(r.max_upper), "PASS" if g["passed"] else "FAIL"])
    blocks.append(doc.table("Acceptance criteria from the study file, judged per group.",
                            ["criterion", "table", "bad", "where", "group", "n", "k", "p", "upper bound", "limit",
                             "verdict"], rows, status_column=10, numeric=range(5, 10),
                            commands=[r.command for r in results]))
    for r in results:
        if r.message:
            blocks.append(p(f"{r.name}: {r.status} — {r.message}", "not-run"))
