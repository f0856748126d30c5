"""The study around the tables: its recorded provenance, the ground truths, the device under test, the
study's acceptance criteria and their verdicts (`survey.analysis.decisions.decide`: the primary interval's
one-sided upper bound, with a family-wise correction across every criterion x group decision).

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
from survey.analysis.sections.doc import cell
from survey.analysis.sections.base import (CONFIDENCE, N_BOOT, SEED, Context, Doc, as_json, estimate_command,
                                           format_number, p, percent, records, training_data)

#: What an acceptance criterion is judged on: each group's primary interval (its one-sided upper bound).
CRITERION_METHOD = "primary"


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
        from survey.data.catalog import load_declared

        spec = self.datasets.get(dataset)
        if spec is None:
            self.notes.append(f"dataset {dataset!r} is not declared in the study: x is not shown")
            return None
        try:   # loaded as its kind (default: its name), under the study's name
            images = load_declared(spec, size, self.base)
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
        trained = training_data(info, str(name))
        rows.append([str(name), source, operator, sampling, ", ".join(trained) if trained else "not declared",
                     (digest or "–")[:16] + ("…" if digest else "")])
        if card:
            metrics = card.get("test_metrics") or {}
            shown = ", ".join(f"{k} {format_number(v)}" for k, v in metrics.items()
                              if isinstance(v, (int, float)))[:160]
            cards.append([str(name), str(card.get("architecture", "–")), format_number(card.get("parameters")),
                          str(card.get("dataset", "–")),
                          f"{(card.get('recipe') or {}).get('steps', '–')} steps, {card.get('device', '?')}",
                          shown or "–"])
    blocks.append(doc.table("Networks under test: operator, sampling, the data each was trained on (zoo model cards, "
                            "or `trained_on` in the study file; results on other data are marked out-of-distribution) "
                            "and weights (sha256, first 16 hex digits; the full digests are in the provenance "
                            "section).",
                            ["network", "source", "operator", "sampling", "trained on", "weights sha256"], rows))
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
            drows.append([d["name"], d.get("kind") or d["name"], d.get("split", "test"),
                          format_number(d.get("count")) if d.get("count") else "all", "; ".join(shown) or "–"])
        blocks.append(doc.table("Test images: datasets (the study's names; kind: how each is loaded), splits, counts "
                                "and content hashes recorded at run time.",
                                ["dataset", "kind", "split", "images", "content sha256"], drows))


def distinct_networks(ctx: Context, tables: Sequence[str]) -> list[str]:
    names: set[str] = set()
    for table in tables:
        if table in ctx.known:
            names |= set(execute(ctx.con, f"SELECT DISTINCT network FROM {sql_identifier(table)}")["network"])
    return sorted(names)


# -- acceptance criteria --------------------------------------------------------------------------

@dataclass
class CriterionResult:
    """The verdict on one acceptance criterion: status "pass", "fail", "inconclusive", "not run", "no data" or
    "error".

    status follows the corrected decisions (`verdict`: fail when some group is FAIL, pass when every group is
    PASS, else inconclusive), status_raw each decision alone (`verdict_raw`)."""

    name: str
    table: str
    bad: str
    where: str | None
    by: list[str]
    max_upper: float
    confidence: float
    status: str
    groups: list[dict[str, Any]] = field(default_factory=list)   # primary estimate rows + their decision
    message: str = ""
    command: str = ""
    status_raw: str = ""
    correction: str = "holm"


def evaluate_criteria(store: Path | str, criteria: Sequence[Any], con=None, *, n_boot: int = N_BOOT,
                      seed: int = SEED, correction: str = "holm", cluster: str | None = None) -> list[CriterionResult]:
    """Judge each criterion (CriterionSpec or dict) with `survey.analysis.decisions.decide`: a group passes
    when the one-sided upper bound of its PRIMARY interval (cluster-exact where rows share an image) is at
    most max_upper; every criterion x group decision is one member of a family corrected by `correction`
    ("holm" or "none"). The family is judged at the highest confidence the criteria state. Estimates come
    from `estimate` with the criterion's `per` and `by`, as `survey estimate` prints them; `cluster` is the
    unit of independence (the study's [analysis] cluster; None: the coarsest the rows carry with >= 2)."""
    from survey.analysis.decisions import CORRECTIONS, decide
    from survey.spec import CriterionSpec

    if correction not in CORRECTIONS:
        raise ValueError(f"correction must be one of {CORRECTIONS}, got {correction!r}")
    own = con is None
    con = connect(store) if own else con
    try:
        known = view_names(con)
        results, family = [], []
        for raw in criteria:
            c = raw if isinstance(raw, CriterionSpec) else CriterionSpec(**raw)
            by = list(c.by)
            if c.table in known and "dataset" in by:   # the default keeps datasets apart where rows name them
                cols = set(execute(con, f"DESCRIBE {sql_identifier(c.table)}")["column_name"])
                by = [b for b in by if b != "dataset" or b in cols]
            result = CriterionResult(c.name, c.table, c.bad, c.where, by, c.max_upper, c.confidence,
                                     "not run", correction=correction,
                                     command=estimate_command(c.table, c.bad, where=c.where, by=by,
                                                              per=c.per, store=Path(store),
                                                              confidence=c.confidence)
                                     + (f" --cluster {cluster}" if cluster else ""))
            results.append(result)
            if c.table not in known:
                result.message = f"the store holds no {c.table!r} table"
                continue
            try:
                rows = estimate(con, c.table, c.bad, where=c.where, by=by, per=c.per, confidence=c.confidence,
                                n_boot=n_boot, seed=seed, unit=cluster)
            except ValueError as exc:
                result.status, result.message = "error", str(exc)
                continue
            if not rows:
                result.status, result.message = "no data", "no rows matched"
                continue
            family.append({"name": len(results) - 1, "limit": c.max_upper, "rows": rows,
                           "confidence": c.confidence})
        if family:
            level = max(f["confidence"] for f in family)
            primary = {f["name"]: [r for r in f["rows"] if r["primary"]] for f in family}
            for d in decide(family, correction=correction, confidence=level):
                result = results[d["criterion"]]
                row = primary[d["criterion"]][len(result.groups)]
                result.groups.append({**row, **{k: v for k, v in d.items() if k not in ("criterion", "group")}})
            for f in family:
                result = results[f["name"]]
                result.status = criterion_status([g["verdict"] for g in result.groups])
                result.status_raw = criterion_status([g["verdict_raw"] for g in result.groups])
        return results
    finally:
        if own:
            con.close()


def criterion_status(verdicts: Sequence[str]) -> str:
    """A criterion over its groups' verdicts: "fail" when some group is FAIL (evidence of harm), "pass" when
    every group is PASS, else "inconclusive" (too few clusters to tell for some group)."""
    if any(v == "FAIL" for v in verdicts):
        return "fail"
    return "pass" if all(v == "PASS" for v in verdicts) else "inconclusive"


def overall_verdict(results: Sequence[CriterionResult]) -> str:
    """"pass", "fail", "inconclusive" (judged, but some criterion cannot be decided with these clusters),
    "incomplete" (some criterion not judged) or "no criteria"; on the corrected decisions."""
    if not results:
        return "no criteria"
    if any(r.status == "fail" for r in results):
        return "fail"
    if all(r.status == "pass" for r in results):
        return "pass"
    return "inconclusive" if all(r.status in ("pass", "inconclusive") for r in results) else "incomplete"


def decide_text(group: dict[str, Any]) -> str:
    """What would decide an undecided group (or why none would), in words: "INCONCLUSIVE: about 59 images
    (55 more) would decide it at the observed rate"."""
    unit = group.get("unit") or "image"
    if group.get("verdict") != "INCONCLUSIVE":
        return str(group.get("verdict"))
    need = group.get("decide_clusters")
    if need is None:
        return (f"INCONCLUSIVE: at the observed rate ({format_number(group['point'])}, at the limit) no number of "
                f"{unit}s decides it")
    side = "pass" if group["point"] < group["limit"] else "fail"
    return (f"INCONCLUSIVE: about {need:,} {unit}s ({group.get('decide_more', 0):,} more) would make it {side} at "
            f"the observed rate {format_number(group['point'])}")


def criterion_detail(r: CriterionResult) -> str:
    """One line for the summary: the worst bounds against the limit and, for each undecided group, the sample
    that would decide it."""
    if not r.groups:
        return r.message or r.status
    worst = max((g["upper_bound"] for g in r.groups if g["upper_bound"] is not None), default=None)
    low = max((g["lower_bound"] for g in r.groups if g.get("lower_bound") is not None), default=None)
    detail = (f"one-sided bounds: largest upper {format_number(worst)}, largest lower {format_number(low)} vs limit "
              f"{format_number(r.max_upper)}; raw verdict {r.status_raw}, adjusted ({r.correction}) {r.status}")
    undecided = [g for g in r.groups if g.get("verdict") == "INCONCLUSIVE"]
    if undecided:
        needs = [g["decide_clusters"] for g in undecided if g.get("decide_clusters") is not None]
        unit = undecided[0].get("unit") or "image"
        detail += (f"; {len(undecided)} of {len(r.groups)} group(s) inconclusive"
                   + (f", up to {max(needs):,} {unit}s each would decide them at the observed rates" if needs else ""))
    if r.message:
        detail += f"; {r.message}"
    return detail


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


def correction_text(results: Sequence[CriterionResult], correction: str) -> tuple[str, str | None]:
    """(the sentence saying which family-wise correction judged the criteria, its paragraph class)."""
    size = sum(len(r.groups) for r in results)
    levels = sorted({g["confidence"] for r in results for g in r.groups})
    level = percent(levels[0]) if levels else percent(CONFIDENCE)
    if correction == "none":
        return (f"NO FAMILY-WISE CORRECTION (correction = \"none\" in the study file): each of the {size} "
                f"criterion × group decisions is judged alone at {level}, so the chance that at least one of them "
                f"passes wrongly can be up to {size} times 1 − {level}; the adjusted verdict equals the raw one.",
                "warning")
    return (f"Family-wise correction: Holm's step-down over all {size} criterion × group decisions, so that the "
            f"chance that any of them passes wrongly is at most 1 − {level} (correction = \"holm\"). The "
            "adjusted verdict decides; the raw verdict (each decision alone) is shown beside it.", None)


def criteria_section(doc: Doc, results: list[CriterionResult], correction: str = "holm") -> None:
    blocks = doc.section("criteria", "Acceptance criteria")
    if not results:
        blocks.append(p("The study file states no acceptance criteria ([[criteria]] tables); the results below are "
                        "reported without a verdict.", "not-run"))
        return
    stated = sorted({r.confidence for r in results}) or [CONFIDENCE]
    family = sorted({g["confidence"] for r in results for g in r.groups})
    blocks.append(p("Each criterion × group gets one of three verdicts. PASS: the one-sided upper confidence bound "
                    "of P(bad) from the group's primary interval is below the stated limit. FAIL: the one-sided "
                    "lower bound is above it (evidence of harm, not merely too few images). INCONCLUSIVE: the "
                    "interval straddles the limit, so these images (or volumes) cannot tell; the table says how "
                    "many would decide it were the observed rate to hold. The primary interval is cluster-exact "
                    "(Korn–Graubard on per-cluster proportions, for the population of clusters) where rows share "
                    "an image, volume or subject, exact Clopper–Pearson where they are independent trials (one row "
                    "per cluster, per-cluster or per-curve counting). Always one-sided at the stated confidence "
                    f"({' / '.join(percent(c) for c in stated)}), never the end of a two-sided interval. "
                    "Datasets are judged apart unless a criterion's `by` leaves out \"dataset\"."))
    if len(stated) > 1 and family:
        blocks.append(p(f"The criteria state different confidences; the family is judged at the highest, "
                        f"{percent(family[0])}.", "not-run"))
    text, cls = correction_text(results, correction)
    blocks.append(p(text + " The same correction applies to FAIL (Holm over the one-sided tests of harm).", cls))
    blocks.append({"kind": "list", "items": [
        (f"C{i}.", f"{r.name} — table {r.table}: bad = {r.bad}" + (f" where {r.where}" if r.where else "")
         + f"; by {', '.join(r.by) or 'all rows'}; limit {format_number(r.max_upper)}.")
        for i, r in enumerate(results, 1)]})
    rows = []
    for i, r in enumerate(results, 1):
        name = cell(f"C{i}", title=r.name)
        if not r.groups:
            rows.append([name, "–", "–", "–", "–", "–", "–", "–", "–", format_number(r.max_upper), "–", "–",
                         r.status.upper()])
        for g in r.groups:
            group = ", ".join(f"{c}={g.get(c)}" for c in r.by) or "all"
            need = g.get("decide_clusters")
            decides = ("decided" if g["verdict"] != "INCONCLUSIVE" else
                       "none at this rate" if need is None else f"{need:,} {g.get('unit') or 'image'}s")
            rows.append([name, group, g["n"], g["k"], g["point"], g["method"], g["lower_bound"], g["upper_bound"],
                         g["p_value"], g["p_adjusted"] if correction != "none" else "–", format_number(r.max_upper),
                         decides, g["verdict_raw"], g["verdict"]])
    adjusted = "verdict (Holm)" if correction == "holm" else "verdict (uncorrected)"
    blocks.append(doc.table("Acceptance criteria (C1 … as listed above), judged per group: the primary interval's "
                            "one-sided bounds against the limit (PASS below, FAIL above, INCONCLUSIVE across); the "
                            "raw verdict judges each decision alone, the adjusted one "
                            f"({correction}) the family; 'would decide at' is the number of clusters at which the "
                            "observed rate would decide it.",
                            ["", "group", "n", "k", "estimate", "primary method", "lower bound (one-sided)",
                             "upper bound (one-sided)", "p-value (pass)", "adjusted p-value", "limit",
                             "would decide at", "raw verdict", adjusted], rows,
                            status_column=13, numeric=[2, 3, 4, 6, 7, 8, 9, 10],
                            commands=[r.command for r in results]))
    for r in results:
        populations = sorted({str(g.get("estimand")) for g in r.groups if g.get("estimand")})
        if populations:
            blocks.append(p(f"C{results.index(r) + 1}, {r.name} — estimand: {'; '.join(populations)}."))
    for r in results:
        if r.message:
            blocks.append(p(f"{r.name}: {r.status} — {r.message}", "not-run"))
