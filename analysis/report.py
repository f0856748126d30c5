"""The evidence report: one self-contained folder, `<out>/index.html` plus `<out>/figures/*.png`.

Sections: summary (acceptance verdicts), device under test, intended use, methods and their
parameters, acceptance criteria, results with intervals, worst cases found (images), limitations,
provenance. Every probability comes from `survey.analysis.estimate.estimate` on the same store, so each
table matches `survey estimate` run with the command printed under it. Tables that the store does
not hold are reported as "not run".

Default definitions of a bad outcome (`DEFINITIONS`) are stated in the report with their reasons;
a study's own acceptance criteria (`[[criteria]]`) are judged on the Clopper-Pearson upper bound.
The ground truth x is not stored by the tasks: worst-case figures reload it from the study's dataset
declaration (deterministic loaders) and use it only when its content hash equals the one recorded
in the `runs` table.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import shlex
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from survey.analysis import figures
from survey.analysis.db import connect, execute, sql_identifier, tables as view_names
from survey.analysis.estimate import estimate

TEMPLATES = Path(__file__).parent / "templates"
CONFIDENCE = 0.95
#: The interval an acceptance criterion is judged on (exact; one-sided at k = 0, else two-sided, so conservative).
CRITERION_METHOD = "clopper-pearson"
MAX_WORST = 6       # networks shown in worst-case figures
TASK_TABLES = ("attacks", "ball", "insertions", "sweeps")


@dataclass(frozen=True)
class Definition:
    """A default "bad" outcome for one table, estimated per network (and `by`) for the report.

    bad / where / per / x / y: the arguments of `estimate`; reference_bad (or reference_y for
    curves): the same question asked of the reference solver on the same data (None: not asked).
    """

    key: str
    table: str
    title: str
    bad: str
    rationale: str
    where: str | None = None
    by: tuple[str, ...] = ()
    per: str = "row"
    reference_bad: str | None = None
    reference_where: str | None = None
    reference_column: str | None = None
    x: str = "value"
    y: str = "psnr"
    reference_y: str | None = None
    unit: str = "row"


DEFINITIONS: tuple[Definition, ...] = (
    Definition(
        "attack-amplification", "attacks", "Worst-case amplification",
        bad="out_change_rel >= 2 * r_rel",
        where="snapshot = 'level' AND attacked = 'network'", by=("snapshot_target",), per="image",
        reference_bad="ref_out_change_rel >= 2 * r_rel",
        reference_where="snapshot = 'level' AND attacked = 'network' AND ref_out_change_rel IS NOT NULL",
        reference_column="ref_out_change_rel", unit="image",
        rationale="An image is bad when some perturbation r found by the attack at that level moves the "
                  "output at least twice as much as it moves the input, relatively: ||f(A(x+r)) - f(Ax)|| / "
                  "||f(Ax)|| >= 2 ||r|| / ||x||. A stable reconstruction moves about as much as its input "
                  "(gain near 1: the compressed-sensing reference on the same data); a gain of 2 is a "
                  "conservative threshold for an amplified, network-made artefact. Levels are ||r|| / ||x|| "
                  "snapshots; an image counts once per level whatever the number of restarts and parameter sets "
                  "(the attack is a family of algorithms: any of them succeeding makes the image bad)."),
    Definition(
        "attack-psnr-drop", "attacks", "Worst-case PSNR loss",
        bad="psnr_clean - psnr >= 3",
        where="snapshot = 'level' AND attacked = 'network'", by=("snapshot_target",), per="image",
        reference_bad="ref_psnr_clean - ref_psnr >= 3",
        reference_where="snapshot = 'level' AND attacked = 'network' AND ref_psnr IS NOT NULL",
        reference_column="ref_psnr", unit="image",
        rationale="An image is bad when a perturbation at that level costs at least 3 dB of PSNR against "
                  "the truth compared with the unperturbed reconstruction (a halving of the signal-to-error "
                  "power ratio), while the perturbation itself stays at the stated level."),
    Definition(
        "ball-persistence", "ball", "Artefact persistence in the Gaussian ball",
        bad="out_change_rel >= 0.5 * center_change_rel AND artefact_cos >= 0.5",
        where="center = 'worst-case'", by=("radius",), per="row", unit="draw",
        rationale="A draw v around a worst-case perturbation r is bad when the artefact of r survives: the "
                  "output still moves at least half as far as at the centre, ||f(y + Ar + Av) - f(y)|| >= "
                  "0.5 ||f(y + Ar) - f(y)||, in the same direction (cosine with the centre's artefact >= 0.5). "
                  "The radius is ||v|| / ||r|| (the paper uses 1/4). Draws are the counted trials; draws of one "
                  "image are correlated, which the image-bootstrap interval accounts for and the binomial "
                  "intervals do not."),
    Definition(
        "insertion-lost", "insertions", "Structural detail lost",
        bad="NOT recovered", by=("detail",), per="row", reference_bad="NOT ref_recovered",
        reference_where="ref_recovered IS NOT NULL", reference_column="ref_recovered", unit="insertion",
        rationale="An inserted detail is lost when the change it causes in the output does not look like it "
                  "(correlation < the row's corr_threshold, default 0.5) or keeps less than contrast_threshold "
                  "(default 0.5) of its contrast. Each placement is a trial."),
    Definition(
        "sweep-falls", "sweeps", "Quality falls as samples grow",
        bad="y_end < y_peak - 1", where="axis IN ('ratio', 'views') AND isfinite(psnr)", per="curve",
        x="value", y="psnr", reference_y="ref_psnr",
        reference_where="axis IN ('ratio', 'views') AND isfinite(ref_psnr)", reference_column="ref_psnr",
        unit="curve",
        rationale="One PSNR-against-sampling curve per image. A curve is bad when the PSNR at the most "
                  "samples is more than 1 dB below the curve's peak: more data made the image worse, a sign "
                  "that the network is tied to its training sampling pattern. Noise-level (denoising) sweeps "
                  "are shown in the figures only."),
)


# -- small helpers --------------------------------------------------------------------------------

def format_number(value: Any, digits: int = 4) -> str:
    """The report's number format: 4 significant digits; '–' for missing values."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    if isinstance(value, (bool, np.bool_)):
        return "yes" if value else "no"
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    value = float(value)
    return f"{value:.0f}" if abs(value) >= 10 ** digits else f"{value:.{digits}g}"


def format_interval(low: Any, high: Any) -> str:
    return f"[{format_number(low)}, {format_number(high)}]"


def estimate_command(table: str, bad: str | None, *, where: str | None, by: Sequence[str], per: str,
                     store: Path, confidence: float = CONFIDENCE, x: str = "value", y: str = "psnr") -> str:
    """The `survey estimate` command line that prints the same numbers (x, y: curve axes, per="curve")."""
    parts = ["survey", "estimate", "--table", table]
    if bad is not None:
        parts += ["--bad", bad]
    if where:
        parts += ["--where", where]
    if by:
        parts += ["--by", ",".join(by)]
    if per != "row":
        parts += ["--per", per]
    if per == "curve":
        parts += [*(["--x", x] if x != "value" else []), *(["--y", y] if y != "psnr" else [])]
    if confidence != 0.95:
        parts += ["--confidence", f"{confidence:g}"]
    parts += ["--store", str(store)]
    return " ".join(_shell_quote(p) for p in parts)


def _shell_quote(text: str) -> str:
    """shlex.quote, but SQL with single quotes goes in double quotes when that needs no escaping."""
    quoted = shlex.quote(text)
    if quoted.startswith("'") and "'" in text and not any(ch in text for ch in '"$`\\!'):
        return f'"{text}"'
    return quoted


def _json(text: Any) -> Any:
    if text is None or (isinstance(text, float) and math.isnan(text)):
        return None
    try:
        return json.loads(text)
    except (TypeError, ValueError):
        return None


def _records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    return [{k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in r.items()}
            for r in frame.to_dict("records")]


class _Doc:
    """Collects sections, numbering tables and figures in reading order."""

    def __init__(self, out: Path):
        self.out = out
        self.sections: list[dict[str, Any]] = []
        self.tables = 0
        self.figures = 0
        self.data: dict[str, Any] = {}
        self.svg = False

    def section(self, anchor: str, title: str) -> list[dict[str, Any]]:
        blocks: list[dict[str, Any]] = []
        self.sections.append({"anchor": anchor, "title": title, "number": len(self.sections) + 1,
                              "blocks": blocks})
        return blocks

    def table(self, caption: str, columns: Sequence[str], rows: Sequence[Sequence[Any]], *,
              note: str | None = None, commands: Sequence[str] = (), status_column: int | None = None,
              numeric: Sequence[int] = (), wrap: bool = False) -> dict[str, Any]:
        self.tables += 1
        cells = [[c if isinstance(c, str) else format_number(c) for c in row] for row in rows]
        return {"kind": "table", "number": self.tables, "caption": caption, "columns": list(columns),
                "rows": cells, "note": note, "commands": list(commands), "status_column": status_column,
                "numeric": list(numeric), "wrap": wrap}

    def figure(self, paths: Sequence[Path], caption: str) -> dict[str, Any]:
        self.figures += 1
        png = Path(paths[0])
        return {"kind": "figure", "number": self.figures, "caption": caption,
                "src": png.relative_to(self.out).as_posix(),
                "svg": next((Path(p).relative_to(self.out).as_posix() for p in paths[1:]), None)}


def _p(text: str, cls: str | None = None) -> dict[str, Any]:
    return {"kind": "p", "text": text, "cls": cls}


def _not_run(table: str) -> dict[str, Any]:
    return _p(f"Not run: the store holds no '{table}' table.", "not-run")


# -- the study and its provenance -----------------------------------------------------------------

def _runs(con) -> list[dict[str, Any]]:
    if "runs" not in view_names(con):
        return []
    return _records(execute(con, "SELECT * FROM runs ORDER BY started_at"))


def _study_info(study, runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The study as a plain dict: the given Study, else the newest run's recorded study."""
    if study is not None:
        return study.model_dump()
    for run in reversed(runs):
        info = _json(run.get("study_json"))
        if isinstance(info, dict):
            return info
    return {}


def _recorded_hashes(runs: list[dict[str, Any]], key: str) -> dict[str, Any]:
    merged: dict[str, Any] = {}
    for run in runs:
        merged.update(_json(run.get(key)) or {})
    return merged


class _Truths:
    """Ground truths reloaded from the study's dataset declarations, checked against recorded hashes."""

    def __init__(self, info: dict[str, Any], runs: list[dict[str, Any]]):
        self.datasets = {d["name"]: d for d in info.get("datasets", []) if isinstance(d, dict)}
        self.base = Path(info["path"]).parent if info.get("path") else Path.cwd()
        self.hashes = _recorded_hashes(runs, "datasets_sha256")
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


# -- estimates ------------------------------------------------------------------------------------

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


def evaluate_criteria(store: Path | str, criteria: Sequence[Any], con=None) -> list[CriterionResult]:
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
                rows = estimate(con, c.table, c.bad, where=c.where, by=c.by, per=c.per, confidence=c.confidence)
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


def _group_columns(con, table: str, extra: Sequence[str]) -> list[str]:
    cols = set(execute(con, f"DESCRIBE {sql_identifier(table)}")["column_name"])
    by = ["network"]
    if "dataset" in cols:
        count = execute(con, f"SELECT count(DISTINCT dataset) AS n FROM {sql_identifier(table)}")["n"].iloc[0]
        if int(count) > 1:
            by.append("dataset")
    return by + [c for c in extra if c in cols]


def definition_estimates(con, definition: Definition, by: Sequence[str]) -> dict[str, list[dict[str, Any]]]:
    """{"network": estimate rows, "reference": estimate rows (may be empty)} for one definition."""
    kwargs = dict(by=list(by), per=definition.per, confidence=CONFIDENCE, x=definition.x)
    found = {"network": estimate(con, definition.table, definition.bad, where=definition.where, y=definition.y,
                                 **kwargs)}
    found["reference"] = []
    cols = set(execute(con, f"DESCRIBE {sql_identifier(definition.table)}")["column_name"])
    if definition.reference_column not in cols:  # the reference was not run on these rows
        return found
    if definition.per == "curve":
        found["reference"] = estimate(con, definition.table, definition.bad, where=definition.reference_where,
                                      y=definition.reference_y, **kwargs)
    elif definition.reference_bad is not None:
        found["reference"] = estimate(con, definition.table, definition.reference_bad,
                                      where=definition.reference_where, **kwargs)
    return found


def definition_commands(definition: Definition, by: Sequence[str], found: dict[str, list],
                        store: Path) -> dict[str, str]:
    """{"network": command, "reference": command (when estimated)}: `survey estimate` lines printing `found`."""
    common = dict(by=by, per=definition.per, store=store, x=definition.x)
    commands = {"network": estimate_command(definition.table, definition.bad, where=definition.where, y=definition.y,
                                            **common)}
    if found["reference"]:
        bad = definition.bad if definition.per == "curve" else definition.reference_bad
        commands["reference"] = estimate_command(definition.table, bad, where=definition.reference_where,
                                                 y=definition.reference_y or definition.y, **common)
    return commands


def _estimate_table(doc: _Doc, definition: Definition, by: Sequence[str], found: dict[str, list],
                    commands: dict[str, str]) -> dict:
    columns = [*by, "solver", "n", "k", "p", "95% Clopper–Pearson", "95% Wilson", "95% image bootstrap"]
    lines: dict[tuple, dict[str, Any]] = {}
    for solver, rows in (("network", found["network"]), ("reference (CS)", found["reference"])):
        for r in rows:
            key = (*(r.get(c) for c in by), solver)
            line = lines.setdefault(key, {"key": key, "n": r["n"], "k": r["k"], "p": r["p"]})
            line[r["method"]] = format_interval(r["ci_low"], r["ci_high"])
    ordered = sorted(lines.values(), key=lambda line: tuple(str(v) for v in line["key"][:-1]) +
                     (line["key"][-1] != "network",))
    body = [[*(str(v) if not isinstance(v, float) else format_number(v) for v in line["key"]), line["n"], line["k"],
             line["p"], line.get("clopper-pearson", "–"), line.get("wilson", "–"), line.get("bootstrap", "–")]
            for line in ordered]
    y_note = f" (curves: x = {definition.x}, y = {definition.y})" if definition.per == "curve" else ""
    return doc.table(f"{definition.title}: P(bad) per {definition.unit}, bad = {definition.bad}"
                     f"{' where ' + definition.where if definition.where else ''}{y_note}.",
                     columns, body, numeric=range(len(by) + 1, len(columns)),
                     note=_table_note(definition, found),
                     commands=list(commands.values()))


def _table_note(definition: Definition, found: dict[str, list]) -> str:
    note = ""
    if found["reference"]:
        asked = (f"bad = {definition.reference_bad}" if definition.reference_bad else f"y = {definition.reference_y}")
        note = ("Reference rows ask the same question of the compressed-sensing reference on the same data "
                f"({asked}). ")
    note += "Image bootstrap: 2000 resamples, seed 0"
    if any(r["method"] == "bootstrap" and r["note"] for rows in found.values() for r in rows):
        note += "; '–' where no unit (or every unit) is bad: resampling cannot bound p, use Clopper–Pearson"
    return note + "."


# -- sections -------------------------------------------------------------------------------------

def _physics_text(physics: dict[str, Any] | None) -> tuple[str, str]:
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


def _device_section(doc: _Doc, info: dict[str, Any], runs: list[dict[str, Any]], con) -> None:
    blocks = doc.section("device", "Device under test")
    weights = _recorded_hashes(runs, "weights_sha256")
    networks = info.get("networks") or [{"name": n} for n in _distinct_networks(con)]
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
        operator, sampling = _physics_text(physics)
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
    if cards:
        blocks.append(doc.table("Model cards of the zoo networks.",
                                ["network", "architecture", "parameters", "training data", "training", "test metrics"],
                                cards))
    datasets = info.get("datasets") or []
    hashes = _recorded_hashes(runs, "datasets_sha256")
    if datasets:
        drows = []
        for d in datasets:
            recorded = [f"{k.split('@')[1]} px: {v[:12]}…" for k, v in hashes.items() if k.split("@")[0] == d["name"]]
            drows.append([d["name"], d.get("split", "test"), format_number(d.get("count")) if d.get("count") else "all",
                          "; ".join(recorded) or "–"])
        blocks.append(doc.table("Test images: datasets, splits, counts and content hashes recorded at run time.",
                                ["dataset", "split", "images", "content sha256"], drows))


def _distinct_networks(con) -> list[str]:
    names: set[str] = set()
    for table in view_names(con):
        if table in TASK_TABLES:
            names |= set(execute(con, f"SELECT DISTINCT network FROM {sql_identifier(table)}")["network"])
    return sorted(names)


PARAM_COLUMNS = {
    "attacks": ("attacked", "preset", "lam", "gamma", "eta", "tau", "p", "domain", "gradient", "support",
                "max_iterations", "restarts"),
    "ball": ("center", "level", "noise_domain", "radius_kind", "radius", "draws"),
    "insertions": ("detail", "size", "contrast", "position", "corr_threshold", "contrast_threshold"),
    "sweeps": ("axis", "train_value"),
}
METHOD_TEXT = {
    "attacks": "Worst-case perturbation search (Antun et al., Algorithms 1 and 2): gradient ascent with momentum on "
               "Q(r) = ½||f(A(x + r)) − p(x)||² − λ/2 ||r||², snapshots where ||r|| / ||x|| first crosses each "
               "level. "
               "The reference solver is run on the same perturbed data.",
    "ball": "Gaussian ball around the worst case: complex Gaussian e in measurement space, v = A*e rescaled to "
            "||v|| = radius · ||r||; does the artefact of r persist at x + r + v?",
    "insertions": "Structural insertions: a detail d (symbol, text, blob) drawn into x; is it visible in f(A(x + d)) "
                  "− f(Ax)?",
    "sweeps": "Sampling sweep: nested sampling patterns at increasing ratios (or more projection views); PSNR of "
              "the network, the reference and zero-filling against the truth.",
}


TASK_TITLES = {"attacks": "Worst-case attack", "ball": "Gaussian ball", "insertions": "Structural insertions",
               "sweeps": "Sampling sweep"}


def _methods_section(doc: _Doc, info: dict[str, Any], con, known: list[str]) -> None:
    blocks = doc.section("methods", "Methods and parameters")
    blocks.append(_p("Each test is a pure function of (network, operator, reference solver, images, parameters, "
                     "random generator); the generator of a work unit is seeded from the sha256 of its id, so every "
                     "row can be replayed alone. The reference is a wavelet-ℓ1 + total-variation compressed-sensing "
                     "solver, run on the same data, so that an artefact can be attributed to the network and not to "
                     "the problem."))
    tasks = info.get("tasks") or []
    if tasks:
        rows = [[t["name"], json.dumps(t.get("params") or {}, sort_keys=True), format_number(t.get("images_per_unit")),
                 format_number(t.get("repeats")), ", ".join(t.get("networks") or ["all"])] for t in tasks]
        blocks.append(doc.table("Tasks as declared in the study file (list values expand to a grid).",
                                ["task", "parameters", "images / unit", "repeats", "networks"], rows))
    for table in TASK_TABLES:
        blocks.append({"kind": "h3", "text": TASK_TITLES[table]})
        blocks.append(_p(METHOD_TEXT[table]))
        if table not in known:
            blocks.append(_not_run(table))
            continue
        cols = set(execute(con, f"DESCRIBE {sql_identifier(table)}")["column_name"])
        params = [c for c in PARAM_COLUMNS[table] if c in cols]
        if not params:
            continue
        keys = ", ".join(sql_identifier(c) for c in ["network", *params])
        frame = execute(con, f"SELECT {keys}, count(*) AS rows_, count(DISTINCT image_id) AS images_ "
                             f"FROM {sql_identifier(table)} GROUP BY ALL ORDER BY ALL LIMIT 40")
        body = [[*(format_number(v) if not isinstance(v, str) else v for v in r[:-2]), int(r[-2]), int(r[-1])]
                for r in frame.itertuples(index=False)]
        blocks.append(doc.table(f"Parameters of the '{table}' rows as recorded in the store, with row and image "
                                "counts.", ["network", *params, "rows", "images"], body,
                                numeric=range(len(params) + 1, len(params) + 3)))


def _criteria_section(doc: _Doc, results: list[CriterionResult]) -> None:
    blocks = doc.section("criteria", "Acceptance criteria")
    if not results:
        blocks.append(_p("The study file states no acceptance criteria ([[criteria]] tables); the results below are "
                         "reported without a verdict.", "not-run"))
        return
    blocks.append(_p(f"A criterion passes when, for every group, the upper bound of the {CONFIDENCE:.0%} "
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
            blocks.append(_p(f"{r.name}: {r.status} — {r.message}", "not-run"))


def _results_section(doc: _Doc, con, known: list[str]) -> dict[str, Any]:
    blocks = doc.section("results", "Results with confidence intervals")
    blocks.append(_p("Probabilities are k / n with three 95% intervals: exact Clopper–Pearson, Wilson score, and a "
                     "percentile bootstrap that resamples images (so correlated trials of one image are not counted "
                     "as independent). The command under each table prints the same numbers."))
    computed: dict[str, Any] = {}
    for definition in DEFINITIONS:
        blocks.append({"kind": "h3", "text": definition.title})
        if definition.table not in known:
            blocks.append(_not_run(definition.table))
            continue
        blocks.append(_p(definition.rationale, "definition"))
        by = _group_columns(con, definition.table, definition.by)
        try:
            found = definition_estimates(con, definition, by)
        except ValueError as exc:
            blocks.append(_p(f"Could not be estimated on this store: {exc}", "not-run"))
            continue
        commands = definition_commands(definition, by, found, Path(doc.data["store"]))
        computed[definition.key] = {"by": by, **found, "commands": commands}
        if not found["network"]:
            blocks.append(_p("No rows matched this definition.", "not-run"))
            continue
        blocks.append(_estimate_table(doc, definition, by, found, commands))
        figure = _definition_figure(doc, definition, con, found)
        if figure is not None:
            blocks.append(figure)
    if "sweeps" in known:
        _sweep_figure(doc, con, blocks)
    return computed


def _figure_path(doc: _Doc, name: str) -> Path:
    return doc.out / "figures" / name


def _definition_figure(doc: _Doc, definition: Definition, con, found) -> dict | None:
    if definition.key == "attack-amplification":
        frame = execute(con, "SELECT * FROM attacks WHERE snapshot = 'level' AND attacked = 'network'")
        if frame.empty:
            return None
        paths = figures.instability_curves(frame, _figure_path(doc, "instability_curves"), svg=doc.svg)
        return doc.figure(paths, "Instability curves: relative output change against relative perturbation size, "
                                 "network (solid) and reference on the same perturbed data (dashed); points are "
                                 "samples, lines binned means, the dotted diagonal is a gain of 1.")
    if definition.key == "ball-persistence":
        cp = [r for r in found["network"] if r["method"] == "clopper-pearson"]
        if len({r["radius"] for r in cp}) < 2:
            return None
        paths = figures.ball_curves(found["network"], _figure_path(doc, "ball_persistence"), svg=doc.svg)
        return doc.figure(paths, "P(artefact persists) against the ball radius ||v|| / ||r||, per network; bands are "
                                 "95% Clopper–Pearson intervals.")
    if definition.key == "insertion-lost":
        labelled = [dict(r, solver="network", p=1 - r["p"], ci_low=None if r["ci_high"] is None else 1 - r["ci_high"],
                         ci_high=None if r["ci_low"] is None else 1 - r["ci_low"])
                    for r in _pooled(found["network"])]
        labelled += [dict(r, solver="reference (CS)", p=1 - r["p"],
                          ci_low=None if r["ci_high"] is None else 1 - r["ci_high"],
                          ci_high=None if r["ci_low"] is None else 1 - r["ci_low"])
                     for r in _pooled(found["reference"])]
        if not labelled:
            return None
        paths = figures.recovery_rates(labelled, _figure_path(doc, "recovery_rates"), svg=doc.svg)
        return doc.figure(paths, "Recovery rate of inserted details (1 − P(lost)) per network, network and "
                                 "reference, "
                                 "with 95% Clopper–Pearson intervals (all details pooled).")
    return None


def _pooled(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Pool estimate rows over every group column except network (counts added, CP recomputed)."""
    from survey.analysis.estimate import clopper_pearson

    counts: dict[str, list[int]] = {}
    for r in rows:
        if r["method"] == "clopper-pearson":
            k_n = counts.setdefault(r["network"], [0, 0])
            k_n[0] += r["k"]
            k_n[1] += r["n"]
    pooled = []
    for network, (k, n) in counts.items():
        low, high = clopper_pearson([k], [n], CONFIDENCE)
        pooled.append({"network": network, "n": n, "k": k, "p": k / n, "ci_low": float(low[0]),
                       "ci_high": float(high[0]), "method": "clopper-pearson"})
    return pooled


def _sweep_figure(doc: _Doc, con, blocks: list) -> None:
    frame = execute(con, "SELECT * FROM sweeps")
    if frame.empty:
        return
    blocks.append(doc.figure(figures.sweep_curves(frame, _figure_path(doc, "sweep_psnr"), svg=doc.svg),
                             "PSNR against the sampling level per network: mean over images with a 95% bootstrap "
                             "band; network (solid), compressed-sensing reference (dashed), zero-filled H(y) "
                             f"(dotted); the red line marks the level the network was trained at. PSNR above "
                             f"{figures.PSNR_CAP:g} dB (exact recovery) is drawn at {figures.PSNR_CAP:g} dB."))


def _worst_section(doc: _Doc, con, known: list[str], truths: _Truths, store: Path) -> None:
    blocks = doc.section("worst", "Worst cases found")
    blocks.append(_p("The ground truth x is not stored with the results; it is reloaded from the study's dataset "
                     "declaration and shown only when its content hash equals the one recorded at run time. "
                     "The clean reconstruction f(Ax) is not stored either: its PSNR is given instead."))
    shown = False
    if "attacks" in known:
        shown |= _worst_attacks(doc, con, truths, store, blocks)
    if "ball" in known:
        shown |= _worst_ball(doc, con, truths, store, blocks)
    if "insertions" in known:
        shown |= _worst_insertions(doc, con, store, blocks)
    if not shown:
        blocks.append(_p("No kept tensors to show: run the tests with keep_tensors = true.", "not-run"))
    for note in dict.fromkeys(truths.notes):
        blocks.append(_p(note, "not-run"))


def _worst_attacks(doc: _Doc, con, truths: _Truths, store: Path, blocks: list) -> bool:
    frame = execute(con, "SELECT *, out_change_rel / r_rel AS gain FROM attacks "
                         "WHERE attacked = 'network' AND tensor_file IS NOT NULL AND r_rel > 0")
    if frame.empty:
        return False
    worst = frame.sort_values("gain", ascending=False).groupby("network", sort=True).head(1).head(MAX_WORST)
    blocks.append({"kind": "h3", "text": "Worst-case perturbations"})
    table_rows = []
    for w in _records(worst):
        sample = frame[(frame["unit_id"] == w["unit_id"]) & (frame["image_id"] == w["image_id"])
                       & (frame["restart"] == w["restart"])]
        sample = sample[sample["snapshot"] == "level"] if (sample["snapshot"] == "level").any() else sample
        size = int(figures.row_tensors(store, w, ("out",))["out"].shape[-1])
        x = truths.get(w["dataset"], w["image_id"], size)
        paths = figures.attack_grid(store, _records(sample), _figure_path(doc, f"attack_{_slug(w['network'])}"),
                                    x=x, svg=doc.svg)
        blocks.append(doc.figure(paths, f"{w['network']}, image {w['image_id']}: the sample with the largest gain "
                                        f"({format_number(w['gain'])}). Columns: increasing perturbations r_j; rows: "
                                        "x + r_j, the network's reconstruction f(A(x + r_j)), the reference on the "
                                        "same data, and |r_j| (shared scale). PSNR against x in the corners."))
        table_rows.append([w["network"], w["image_id"], w["r_rel"], w["out_change_rel"], w["gain"],
                           w.get("ref_out_change_rel"), w.get("psnr_clean"), w.get("psnr"), w.get("psnr_visibility")])
    blocks.append(doc.table("The worst case per network (largest gain = relative output change / relative "
                            "perturbation).", ["network", "image", "‖r‖/‖x‖", "output change", "gain",
                                               "reference change", "PSNR clean (dB)", "PSNR attacked (dB)",
                                               "PSNR(x + r, x) (dB)"], table_rows, numeric=range(2, 9)))
    paths = figures.perturbation_maps(store, _records(worst), _figure_path(doc, "perturbation_maps"), svg=doc.svg)
    blocks.append(doc.figure(paths, "Magnitude |r| of the worst perturbation per network (own colour scale each)."))
    return True


def _worst_ball(doc: _Doc, con, truths: _Truths, store: Path, blocks: list) -> bool:
    frame = execute(con, "SELECT * FROM ball WHERE center = 'worst-case' AND tensor_file IS NOT NULL")
    if frame.empty:
        return False
    # the radius index of each row inside its unit: rows are image-major, then radius, then draw
    order = frame.groupby(["unit_id", "image_id", "radius"])["tensor_index"].min().reset_index()
    order["radius_index"] = order.groupby(["unit_id", "image_id"])["tensor_index"].rank(method="dense").astype(int) - 1
    frame = frame.merge(order[["unit_id", "image_id", "radius", "radius_index"]], on=["unit_id", "image_id", "radius"])
    first = frame[frame["draw"] == 0]
    radius = 0.25 if (first["radius"] == 0.25).any() else float(first["radius"].min())
    first = first[first["radius"] == radius].sort_values("center_change_rel", ascending=False)
    picked = first.groupby("network", sort=True).head(1).head(MAX_WORST)
    x_by_id = {}
    rows = _records(picked)
    for row in rows:
        size = int(figures.row_tensors(store, row, ("clean_out",))["clean_out"].shape[-1])
        x = truths.get(row["dataset"], row["image_id"], size)
        if x is not None:
            x_by_id[(row["network"], row["image_id"])] = x
    blocks.append({"kind": "h3", "text": "Gaussian ball around the worst case"})
    paths = figures.ball_grid(store, rows, _figure_path(doc, "ball_examples"), truths=x_by_id, svg=doc.svg)
    blocks.append(doc.figure(paths, f"Per network, the centre with the largest artefact at radius ||v|| = {radius:g} "
                                    "||r||: the clean reconstruction f(y), the worst case f(y + Ar), one noisy draw, "
                                    "and the artefacts relative to f(y) (shared diverging scale per line)."))
    return True


def _worst_insertions(doc: _Doc, con, store: Path, blocks: list) -> bool:
    frame = execute(con, "SELECT * FROM insertions WHERE tensor_file IS NOT NULL")
    if frame.empty:
        return False
    picked = frame.sort_values("corr").groupby("network", sort=True).head(2).head(2 * MAX_WORST)
    blocks.append({"kind": "h3", "text": "Inserted details"})
    paths = figures.insertion_grid(store, _records(picked), _figure_path(doc, "insertion_examples"), svg=doc.svg)
    blocks.append(doc.figure(paths, "Per network, the two insertions with the lowest correlation between the "
                                    "detail and the change it caused in the output: x + d (detail outlined), the "
                                    "network's and the reference's reconstructions."))
    return True


def _slug(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in str(name))


def _limitations_section(doc: _Doc, info: dict[str, Any], runs: list[dict[str, Any]], con, known) -> None:
    blocks = doc.section("limitations", "Limitations")
    sizes = sorted({(n.get("physics") or {}).get("size") for n in info.get("networks", []) if n.get("physics")}
                   - {None})
    devices = set()
    for run in runs:
        for d in (_json(run.get("devices")) or {}).values():
            if isinstance(d, dict):
                devices.add(str(d.get("device", "?")))
    images = 0
    for table in known:
        if table in TASK_TABLES:
            images = max(images, int(execute(con, f"SELECT count(DISTINCT image_id) AS n FROM "
                                                  f"{sql_identifier(table)}")["n"].iloc[0]))
    facts = []
    if sizes:
        facts.append(f"images of {', '.join(f'{s} × {s}' for s in sizes)} pixels")
    if devices:
        facts.append(f"run on {', '.join(sorted(devices))}")
    if images:
        facts.append(f"at most {images} distinct test images per table")
    scale = ("This study used " + "; ".join(facts) + ". ") if facts else ""
    items = [
        ("Scale.", scale + "The networks are small re-trainings (or the user's own networks) at low resolution; "
                   "clinical networks at 256–512 pixels may behave differently, and conclusions do not transfer "
                   "between networks, sampling patterns or anatomies."),
        ("What the attack can show.", "A gradient search finds perturbations that exist; failing to find one is not "
                                      "proof that none exists. P(bad) for the attack is the rate at which this search, "
                                      "with these parameters and this budget, succeeds: a lower bound on the true "
                                      "vulnerability."),
        ("What the statistics cover.", "Intervals quantify sampling uncertainty over the images and draws actually "
                                       "tested, under the stated definitions of a bad outcome; they do not cover other "
                                       "datasets, other noise models, adversaries with other budgets, or definitions "
                                       "chosen differently. Draws of one image are correlated: prefer the "
                                       "image-bootstrap interval where it differs."),
        ("Reference solver.", "The compressed-sensing reference is tuned once per operator; it is a stable baseline, "
                              "not an optimum, and its own worst case (attacking it directly) is reported only where "
                              "the study asked for it."),
        ("Clinical relevance.", "Pixel metrics (relative norms, PSNR, SSIM, correlation) are proxies; whether a given "
                                "artefact or lost detail changes a diagnosis is not assessed by this test and needs "
                                "reader studies."),
    ]
    blocks.append({"kind": "list", "items": items})


def _provenance_section(doc: _Doc, runs: list[dict[str, Any]], con, known) -> None:
    blocks = doc.section("provenance", "Provenance")
    if not runs:
        blocks.append(_p("The store holds no 'runs' table: provenance unknown.", "not-run"))
    else:
        fields = ["run id", "study", "study sha256", "study file", "git commit", "code version", "started", "host",
                  "user", "python", "packages", "devices"]
        columns = []
        for run in runs:
            started = run.get("started_at")
            when = (_dt.datetime.fromtimestamp(float(started), tz=_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
                    if isinstance(started, (int, float)) and math.isfinite(started) else "–")
            packages = ", ".join(f"{k} {v}" for k, v in (_json(run.get("packages")) or {}).items())
            devices = "; ".join(f"{k}: {d.get('device', '?')} ({d.get('device_name', '?')})"
                                for k, d in (_json(run.get("devices")) or {}).items() if isinstance(d, dict))
            columns.append([str(run.get(k) or "–") for k in ("run_id", "study", "study_sha256", "study_path",
                                                             "git_commit", "code_version")]
                           + [when, str(run.get("host") or "–"), str(run.get("user") or "–"),
                              str(run.get("python") or "–"), packages or "–", devices or "–"])
        rows = [[name, *(c[i] for c in columns)] for i, name in enumerate(fields)]
        blocks.append(doc.table("Runs that wrote to this store (one column per run).",
                                ["", *(f"run {i + 1}" for i in range(len(runs)))], rows, wrap=True))
        weights = _recorded_hashes(runs, "weights_sha256")
        if weights:
            blocks.append(doc.table("Network weights (sha256 of the weights file, or of the factory source for "
                                    "networks without weights).", ["network", "sha256"],
                                    [[k, str(v or "–")] for k, v in weights.items()], wrap=True))
    if "ledger" in known:
        # each unit's latest entry counts (a retry supersedes a failure; forgotten units are pending again)
        frame = execute(con, "WITH latest AS (SELECT unit_id, arg_max(task, finished_at) AS task, "
                             "arg_max(network, finished_at) AS network, arg_max(status, finished_at) AS status, "
                             "arg_max(rows, finished_at) AS rows, arg_max(seconds, finished_at) AS seconds "
                             "FROM ledger GROUP BY unit_id) "
                             "SELECT task, network, count(*) FILTER (WHERE status = 'ok') AS ok, "
                             "count(*) FILTER (WHERE status = 'failed') AS failed, "
                             "sum(rows) FILTER (WHERE status = 'ok') AS rows_, "
                             "round(sum(seconds) FILTER (WHERE status = 'ok'), 1) AS seconds FROM latest "
                             "WHERE status IN ('ok', 'failed') GROUP BY ALL ORDER BY ALL")
        body = [[r.task, r.network, int(r.ok), int(r.failed), int(r.rows_ or 0), float(r.seconds or 0.0)]
                for r in frame.itertuples(index=False)]
        blocks.append(doc.table("Work units per task and network from the ledger, by each unit's latest attempt "
                                "(failed units are retried on a rerun of the study).",
                                ["task", "network", "units ok", "units failed", "rows", "seconds"], body,
                                numeric=range(2, 6)))


def _summary(results: list[CriterionResult], con, known) -> dict[str, Any]:
    verdict = overall_verdict(results)
    text = {"pass": "All acceptance criteria are met.",
            "fail": f"{sum(r.status == 'fail' for r in results)} of {len(results)} acceptance criteria are not met.",
            "incomplete": "Some acceptance criteria could not be judged (not run, no data or an error).",
            "no criteria": "The study states no acceptance criteria: the results are reported without a "
                           "verdict."}[verdict]
    items = []
    for r in results:
        worst = max((g["ci_high"] for g in r.groups if g["ci_high"] is not None), default=None)
        items.append({"name": r.name, "status": r.status,
                      "detail": (f"largest upper bound {format_number(worst)} vs limit {format_number(r.max_upper)}"
                                 if worst is not None else r.message or r.status)})
    counts = []
    for table in TASK_TABLES:
        if table in known:
            n = int(execute(con, f"SELECT count(*) AS n FROM {sql_identifier(table)}")["n"].iloc[0])
            counts.append(f"{table}: {n:,} rows")
        else:
            counts.append(f"{table}: not run")
    return {"verdict": verdict, "text": text, "criteria": items, "counts": counts}


# -- the report -----------------------------------------------------------------------------------

def build_report(store: Path | str, out: Path | str, study=None, *, svg: bool = False) -> Path:
    """Write the evidence report for `store` into the folder `out`; returns `out/index.html`.

    study: the `Study` (for intended use, tasks and criteria); None takes the newest run's recorded study.
    The folder is self-contained: index.html (inline CSS) and figures/*.png referenced relatively.
    """
    import jinja2

    given = Path(store).expanduser()   # printed commands name the store as given: run them from the same folder
    store = given.resolve()
    out = Path(out).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    fig_dir = out / "figures"
    if fig_dir.is_dir():
        shutil.rmtree(fig_dir)
    fig_dir.mkdir()
    con = connect(store)
    try:
        known = view_names(con)
        runs = _runs(con)
        info = _study_info(study, runs)
        doc = _Doc(out)
        doc.data["store"] = str(given)
        doc.svg = svg
        truths = _Truths(info, runs)
        _device_section(doc, info, runs, con)
        use = doc.section("intended-use", "Intended use")
        use.append(_p(info.get("intended_use") or "The study file states no intended use (field intended_use).",
                      None if info.get("intended_use") else "not-run"))
        if info.get("description"):
            use.append(_p(info["description"]))
        _methods_section(doc, info, con, known)
        results = evaluate_criteria(given, info.get("criteria") or [], con=con)
        _criteria_section(doc, results)
        computed = _results_section(doc, con, known)
        _worst_section(doc, con, known, truths, store)
        _limitations_section(doc, info, runs, con, known)
        _provenance_section(doc, runs, con, known)
        summary = _summary(results, con, known)
    finally:
        con.close()
    data = {"criteria": [{"name": r.name, "status": r.status, "groups": r.groups} for r in results],
            "estimates": {k: {"by": v["by"], "network": v["network"], "reference": v["reference"],
                              "commands": v["commands"]}
                          for k, v in computed.items()}}
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES),
                             autoescape=jinja2.select_autoescape(["html", "j2"]),
                             trim_blocks=True, lstrip_blocks=True)
    html = env.get_template("report.html.j2").render(
        title=f"Stability evidence report: {info.get('name') or store.name}",
        study=info, store=str(given), summary=summary, sections=doc.sections,
        generated=_dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        study_sha=(runs[-1].get("study_sha256") if runs else None) or (study.digest() if study is not None else None),
        data_json=json.dumps(data, default=str, sort_keys=True).replace("</", "<\\/"))
    index = out / "index.html"
    index.write_text(html, encoding="utf-8")
    return index


__all__ = ["CONFIDENCE", "CRITERION_METHOD", "CriterionResult", "DEFINITIONS", "Definition", "build_report",
           "definition_commands", "definition_estimates", "estimate_command", "evaluate_criteria", "format_interval",
           "format_number", "overall_verdict"]
