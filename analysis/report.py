"""The evidence report: one self-contained folder, `<out>/index.html` plus `<out>/figures/*.png`.

Sections: summary (acceptance verdicts), device under test, intended use, methods and their
parameters, acceptance criteria, results with intervals, worst cases found (images), limitations,
provenance. Every probability comes from `survey.analysis.estimate.estimate` on the same store, so each
table matches the `survey estimate` command printed under it. Tables that the store does not hold are
reported as "not run".

This module only assembles. Each store table has a `Section` (survey.analysis.sections.base): the tables
come from the task registry (`survey.tasks`), a table's section from the module
`survey.analysis.sections.<table>` (its `SECTION`), and a table without one gets the generic section
(survey.analysis.sections.generic). Default definitions of a bad outcome live with their section; a
study's own acceptance criteria (`[[criteria]]`) are judged on the one-sided upper bound of each group's primary
interval, with the study's family-wise correction (`correction`, Holm by default) over all of them.
"""

from __future__ import annotations

import copy
import datetime as _dt
import json
import shutil
from importlib import import_module
from pathlib import Path
from typing import Any, Callable, Sequence

from survey.analysis.manifest import record_report, write_manifest
from survey.analysis.db import connect, execute, nan_counts, sql_identifier, tables as view_names, unreadable
from survey.analysis.sections.base import (CONFIDENCE, N_BOOT, SEED, Context, Definition, Doc, Section,
                                           definition_commands, definition_estimates, estimate_command,
                                           format_interval, format_number, ledger_units, p, percent)
from survey.analysis.sections.closing import limitations_section, provenance_section
from survey.analysis.sections.generic import GenericSection
from survey.analysis.sections.doc import parameters_cell as task_parameters
from survey.analysis.sections.verdicts import headline_numbers, verdict_table
from survey.analysis.sections.study import (CRITERION_METHOD, CriterionResult, Truths, correction_text, criterion_detail,
                                            criteria_section, device_section, evaluate_criteria, mark_missing_networks,
                                            overall_verdict, runs as recorded_runs, study_info)

TEMPLATES = Path(__file__).parent / "templates"
#: Views over the store that are not result tables.
NOT_TABLES = frozenset({"runs", "ledger"})


# -- finding the sections -------------------------------------------------------------------------

def registered_tables() -> dict[str, list[type]]:
    """table -> task classes writing it, in registry order (`survey.tasks.tables()` where it exists)."""
    from survey import tasks as registry

    registry.load_tasks()
    if hasattr(registry, "tables"):
        return {t: list(classes) for t, classes in registry.tables().items()}
    found: dict[str, list[type]] = {}
    for cls in registry.TASKS.values():
        if getattr(cls, "table", None):
            found.setdefault(cls.table, []).append(cls)
    return found


def custom_section(table: str) -> Section | None:
    """The `SECTION` of module survey.analysis.sections.<table>, or None when there is no such module."""
    from survey.analysis.sections import registered  # the registry: built-in sections and plugins' own
    if registered(table) is not None:
        return registered(table)
    if not table.isidentifier():
        return None
    name = f"survey.analysis.sections.{table}"
    try:
        module = import_module(name)
    except ModuleNotFoundError as err:
        if err.name != name:
            raise
        return None
    section = getattr(module, "SECTION", None)
    return section if isinstance(section, Section) and section.table == table else None


def section_for(table: str, classes: Sequence[type] = ()) -> Section:
    """The table's own section (a copy, with the registry's task names), else the generic one."""
    section = custom_section(table)
    if section is None:
        columns = None
        from survey import tasks as registry

        if classes and hasattr(registry, "table_columns"):
            try:
                columns = dict(registry.table_columns(table))
            except (AttributeError, ValueError):   # a class without declared columns: merged from those that have
                columns = None
        return GenericSection.for_table(table, classes, columns)
    section = copy.copy(section)
    section.tasks = tuple(getattr(c, "task_name", "") for c in classes) or section.tasks
    return section


#: The paper's four tests: their sections are always shown ("not run" when the store lacks them).
PAPER_TABLES = ("attacks", "ball", "insertions", "sweeps")


def report_sections(info: dict[str, Any], known: Sequence[str]) -> list[Section]:
    """The table sections of this report, in registry order, then store tables the registry does not know.

    A table is shown when the store holds it, the study runs a task writing it, a criterion names it or it
    is one of the paper's four (then "not run" when the store lacks it); other registered tables are left out."""
    registered = registered_tables()
    writers = {getattr(cls, "task_name", None): table for table, classes in registered.items() for cls in classes}
    asked = {writers.get(t.get("name")) for t in info.get("tasks") or [] if isinstance(t, dict)}
    asked |= {c.get("table") for c in info.get("criteria") or [] if isinstance(c, dict)}
    tables = list(registered) + sorted(t for t in known if t not in registered and t not in NOT_TABLES)
    sections = []
    for table in tables:
        if table in known or table in asked or table in PAPER_TABLES:
            sections.append(section_for(table, registered.get(table, ())))
    return sections


def __getattr__(name: str):
    if name == "DEFINITIONS":   # every default definition of the tables' own sections, in report order
        return tuple(d for t in registered_tables() if (s := custom_section(t)) is not None for d in s.definitions)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# -- the parts around the tables ------------------------------------------------------------------

def _guarded(left: list[str], blocks: list, what: str, make, *args) -> Any:
    """`make(*args)`, or, when it raises, a "could not show" paragraph in `blocks` and a line in `left`: one part of
    the report that cannot be drawn from this store never stops the rest."""
    try:
        return make(*args)
    except Exception as exc:  # noqa: BLE001 - the report renders on any store and says what it left out
        detail = " ".join(str(exc).split())[:300]
        line = f"{what}: could not be shown ({type(exc).__name__}: {detail})"
        left.append(line)
        blocks.append(p(line, "not-run"))
        return None


def _unjudged(criterion: Any, message: str) -> CriterionResult:
    """A criterion that could not be evaluated at all: status "error" (the overall verdict is incomplete)."""
    get = criterion.get if isinstance(criterion, dict) else lambda k, d=None: getattr(criterion, k, d)
    return CriterionResult(name=str(get("name", "?")), table=str(get("table", "?")), bad=str(get("bad", "")),
                           where=get("where"), by=list(get("by", None) or []), max_upper=float(get("max_upper", 0) or 0),
                           confidence=float(get("confidence", CONFIDENCE) or CONFIDENCE), status="error",
                           message=message, status_raw="error")


def skip_notes(con, table: str) -> list[str]:
    """One line per (network, task, reason) of `table`'s rows that hold no measurement (`skipped` / `error` said
    why: a sweep level an exported network cannot take, ...)."""
    cols = set(execute(con, f"DESCRIBE {sql_identifier(table)}")["column_name"])
    reasons = [c for c in ("skipped", "error") if c in cols]
    if not reasons:
        return []
    reason = "coalesce(" + ", ".join(f"nullif(trim(CAST({c} AS VARCHAR)), '')" for c in reasons) + ")"
    task = "task" if "task" in cols else "NULL"
    frame = execute(con, f"SELECT network, {task} AS task, {reason} AS reason, count(*) AS n FROM "
                         f"{sql_identifier(table)} WHERE {reason} IS NOT NULL GROUP BY ALL ORDER BY ALL")
    totals = execute(con, f"SELECT network, {task} AS task, count(*) AS n FROM {sql_identifier(table)} GROUP BY ALL")
    total = {(r.network, r.task): int(r.n) for r in totals.itertuples()}
    return [f"table {table}: network {r.network}, task {r.task}: {int(r.n)} of {total.get((r.network, r.task), '?')} "
            f"rows not measured: {str(r.reason).splitlines()[0][:200]}" for r in frame.itertuples()]


def store_notes(store: Path, known: Sequence[str], con=None) -> list[str]:
    """One line per thing about the store a reader must know: tables that cannot be read (and why), tables whose
    rows hold NaN (read as unknown: counted neither bad nor good), rows a task skipped (and why), finished units
    whose rows are missing."""
    notes = [f"table {name} left out: {why}" for name, why in unreadable(store).items()]
    try:
        from survey.store import Store
        lost = Store(store).missing_rows()
    except Exception:  # noqa: BLE001 - an unreadable ledger is already named above
        lost = {}
    if lost:
        notes.append(f"{len(lost)} finished unit(s) name row fragments that are missing (e.g. "
                     f"{next(iter(lost.values()))[0]}): their rows are not in this report; `survey run` redoes them")
    for table in known:
        if table in NOT_TABLES:
            continue
        try:
            counts = nan_counts(store, table)
        except Exception:  # noqa: BLE001 - a note about a note: never fatal
            continue
        if counts:
            shown = ", ".join(f"{c} ({n} rows)" for c, n in sorted(counts.items()))
            notes.append(f"table {table}: NaN in {shown}, read as unknown (no estimate counts those rows "
                         "as bad or as good)")
        if con is not None:
            try:
                notes += skip_notes(con, table)
            except Exception:  # noqa: BLE001
                pass
    return notes


def _stepper(on_progress: Callable[[int, int, str], None] | None, total: int) -> Callable[[str], None]:
    """A function to call at the start of each of `total` steps (with its name): it tells `on_progress`."""
    done = [0]

    def step(what: str) -> None:
        if on_progress is not None:
            on_progress(min(done[0], total), total, what)
        done[0] += 1

    return step


def _methods_section(ctx: Context, sections: Sequence[Section], left: list[str],
                     step: Callable[[str], None] = lambda what: None) -> None:
    blocks = ctx.doc.section("methods", "Methods and parameters")
    blocks.append(p("Each test is a pure function of (network, operator, reference solver, images, parameters, "
                    "random generator); the generator of a work unit is seeded from the sha256 of its id, so every "
                    "row can be replayed alone. The reference is a wavelet-ℓ1 + total-variation compressed-sensing "
                    "solver, run on the same data, so that an artefact can be attributed to the network and not to "
                    "the problem."))
    tasks = ctx.info.get("tasks") or []
    if tasks:
        rows = [[t["name"], task_parameters(t.get("params") or {}), format_number(t.get("images_per_unit")),
                 format_number(t.get("repeats")), ", ".join(t.get("networks") or ["all"])] for t in tasks]
        blocks.append(ctx.doc.table("Tasks as declared in the study file (list values expand to a grid; each task's "
                                    "parameters folded, click to open).",
                                    ["task", "parameters", "images / unit", "repeats", "networks"], rows))
    for section in sections:
        step(f"methods: {section.table}")
        blocks += _guarded(left, blocks, f"methods of {section.table}", section.methods, ctx) or []


def _results_section(ctx: Context, sections: Sequence[Section], left: list[str],
                     step: Callable[[str], None] = lambda what: None) -> None:
    blocks = ctx.doc.section("results", "Results with confidence intervals")
    level = percent(CONFIDENCE)
    blocks.append(p(f"Each group's probability comes with one primary {level} interval, chosen by how its rows were "
                    "drawn (docs/INTERVALS.md): where rows share an image (ball draws, insertions) it is cluster-exact, "
                    "Korn–Graubard on the per-image proportions, for the population of images (the estimate is the "
                    "mean per-image probability); where rows are independent trials (one row per image, per-image or "
                    "per-curve counting) it is exact Clopper–Pearson on k of n. The secondary intervals follow, each "
                    "with its assumption: Clopper–Pearson and Wilson on all rows (too narrow when rows share an "
                    f"image) and a percentile bootstrap that resamples images ({ctx.n_boot} resamples, seed "
                    f"{ctx.seed}; too narrow with few images). Each row names its population. Groups are kept apart "
                    "by dataset, and marked in-distribution when the network was trained on that data. The command "
                    "under each table prints the same numbers."))
    for section in sections:
        step(f"results: {section.table}")
        blocks += _guarded(left, blocks, f"results of {section.table}", section.results, ctx) or []


def _worst_section(ctx: Context, sections: Sequence[Section], truths: Truths, left: list[str],
                   step: Callable[[str], None] = lambda what: None) -> None:
    blocks = ctx.doc.section("worst", "Worst cases found")
    blocks.append(p("The ground truth x is not stored with the results; it is reloaded from the study's dataset "
                    "declaration and shown only when its content hash equals the one recorded at run time. "
                    "The clean reconstruction f(Ax) is not stored either: its PSNR is given instead. Only units "
                    "whose latest ledger entry is finished are shown (not failed or retracted ones)."))
    shown = False
    for section in sections:
        step(f"worst cases: {section.table}")
        if section.table in ctx.known:
            found = _guarded(left, blocks, f"worst cases of {section.table}", section.worst, ctx) or []
            blocks += found
            shown |= bool(found)
    if not shown:
        blocks.append(p("No kept tensors to show: run the tests with keep_tensors = true.", "not-run"))
    for note in dict.fromkeys(truths.notes):
        blocks.append(p(note, "not-run"))


def _summary(ctx: Context, results: list[CriterionResult], sections: Sequence[Section],
             correction: str = "holm", left_out: Sequence[str] = ()) -> dict[str, Any]:
    verdict = overall_verdict(results)
    text = {"pass": "All acceptance criteria are met.",
            "fail": f"{sum(r.status == 'fail' for r in results)} of {len(results)} acceptance criteria are not met.",
            "inconclusive": f"{sum(r.status == 'inconclusive' for r in results)} of {len(results)} acceptance "
                            "criteria cannot be decided with these images: no evidence of harm, too few to pass.",
            "incomplete": "Some acceptance criteria could not be judged (not run, no data or an error).",
            "no criteria": "The study states no acceptance criteria: the results are reported without a "
                           "verdict."}[verdict]
    if results and any(r.groups for r in results):
        text += (" Verdicts after Holm's family-wise correction over every criterion × group decision."
                 if correction == "holm" else
                 " NO family-wise correction (correction = \"none\"): each decision judged alone.")
    items = []
    for r in results:
        items.append({"name": r.name, "status": r.status, "detail": criterion_detail(r)})
    counts = []
    for section in sections:
        if section.table in ctx.known:
            n = int(execute(ctx.con, f"SELECT count(*) AS n FROM {sql_identifier(section.table)}")["n"].iloc[0])
            counts.append(f"{section.table}: {n:,} rows")
        else:
            counts.append(f"{section.table}: not run")
    if left_out:
        text += f" Parts of this report could not be shown ({len(left_out)}): see the list below."
    warning = (correction_text(results, correction)[0]
               if correction == "none" and any(r.groups for r in results) else None)
    definitions = {d.key: d for s in sections for d in s.definitions}
    family = correction_text(results, correction)[0] if any(r.groups for r in results) else ""
    return {"verdict": verdict, "text": text, "criteria": items, "counts": counts, "correction": correction,
            "warning": warning, "left_out": list(dict.fromkeys(left_out)), "verdicts": verdict_table(results),
            "headline": headline_numbers(ctx.computed, definitions), "level": percent(CONFIDENCE),
            "family": family if correction != "none" else ""}


# -- the report -----------------------------------------------------------------------------------

def build_report(store: Path | str, out: Path | str, study=None, *, svg: bool = False, n_boot: int = N_BOOT,
                 seed: int = SEED, on_progress: Callable[[int, int, str], None] | None = None) -> Path:
    """Write the evidence report for `store` into the folder `out`; returns `out/index.html`.

    study: the `Study` (for intended use, tasks and criteria); None takes the newest run's recorded study.
    n_boot / seed: the image bootstrap of every estimate (printed in the report and in its commands).
    The folder is self-contained: index.html (inline CSS) and figures/*.png referenced relatively.
    on_progress(done, total, step): hears each step as it starts (a progress bar).
    """
    import jinja2
    import markupsafe

    given = Path(store).expanduser()   # printed commands name the store as given: run them from the same folder
    store = given.resolve()
    out = Path(out).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    fig_dir = out / "figures"
    if fig_dir.is_dir():
        shutil.rmtree(fig_dir)
    fig_dir.mkdir()
    con = connect(store)
    left: list[str] = []
    try:
        known = view_names(con)
        left += store_notes(store, known, con)
        runs = _guarded(left, [], "the runs table (provenance)", recorded_runs, con) or []
        info = _guarded(left, [], "the recorded study", study_info, study, runs) or study_info(study, [])
        truths = Truths(info, runs)
        units = _guarded(left, [], "the ledger (which units finished)", ledger_units, con, known) or {}
        ctx = Context(Doc(out, store=given, svg=svg), con, known, store, given, info=info, truths=truths,
                      n_boot=n_boot, seed=seed, units=units)
        sections = report_sections(info, known)
        tables = [s.table for s in sections]
        step = _stepper(on_progress, 5 + 3 * len(sections))
        step("device, intended use")
        _guarded(left, [], "device under test", device_section, ctx, runs, tables)
        use = ctx.doc.section("intended-use", "Intended use")
        use.append(p(info.get("intended_use") or "The study file states no intended use (field intended_use).",
                     None if info.get("intended_use") else "not-run"))
        if info.get("description"):
            use.append(p(info["description"]))
        _methods_section(ctx, sections, left, step)
        step("acceptance criteria")
        correction = info.get("correction") or "holm"
        criteria = info.get("criteria") or []
        results = _guarded(left, use, "acceptance criteria", lambda: evaluate_criteria(
            given, criteria, con=con, n_boot=n_boot, seed=seed, correction=correction,
            cluster=(info.get("analysis") or {}).get("cluster")))
        if results is None:   # criteria that could not be judged give no verdict: each is an error
            results = [_unjudged(c, left[-1]) for c in criteria]
        _guarded(left, [], "networks without data", mark_missing_networks, results, ctx,
                 {s.table: s.tasks for s in sections})
        criteria_section(ctx.doc, results, correction)
        _results_section(ctx, sections, left, step)
        _worst_section(ctx, sections, truths, left, step)
        step("limitations, provenance")
        closing = ctx.doc.section("left-out", "What this report could not show") if left else []
        closing += [p(line, "not-run") for line in dict.fromkeys(left)]
        _guarded(left, closing, "limitations", limitations_section, ctx, runs, tables)
        _guarded(left, closing, "provenance", provenance_section, ctx, runs)
        summary = _guarded(left, [], "the summary's row counts", _summary, ctx, results, sections, correction, left)
        if summary is None:
            summary = _summary(ctx, results, [], correction, left)
        manifest = _guarded(left, closing, "the manifest", record_report, ctx, results, tables, study, runs)
    finally:
        con.close()
    data = {"correction": correction,
            "criteria": [{"name": r.name, "status": r.status, "status_raw": r.status_raw, "groups": r.groups}
                         for r in results],
            "estimates": {k: {"by": v["by"], "network": v["network"], "reference": v["reference"],
                              "commands": v["commands"]}
                          for k, v in ctx.computed.items()}}
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES),
                             autoescape=jinja2.select_autoescape(["html", "j2"]),
                             trim_blocks=True, lstrip_blocks=True)
    env.filters["breakable"] = lambda text: markupsafe.Markup(str(markupsafe.escape(text)).replace("_", "_<wbr>"))
    html = env.get_template("report.html.j2").render(
        title=f"Stability evidence report: {info.get('name') or store.name}",
        study=info, store=str(given), summary=summary, sections=ctx.doc.sections,
        generated=_dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        study_sha=(runs[-1].get("study_sha256") if runs else None) or (study.digest() if study is not None else None),
        data_json=json.dumps(data, default=str, sort_keys=True).replace("</", "<\\/"))
    index = out / "index.html"
    index.write_text(html, encoding="utf-8")
    write_manifest(out, manifest)   # None: a stale manifest.json is removed
    if on_progress is not None:
        on_progress(1, 1, "written")
    return index


__all__ = ["CONFIDENCE", "CRITERION_METHOD", "CriterionResult", "DEFINITIONS", "Definition", "build_report",
           "custom_section", "definition_commands", "definition_estimates", "estimate_command", "evaluate_criteria",
           "format_interval", "format_number", "overall_verdict", "registered_tables", "report_sections",
           "section_for"]
