"""The closing sections: limitations (with the study's scale) and provenance (runs, weights, the ledger)."""

from __future__ import annotations

import datetime as _dt
import math
from typing import Any, Sequence

from survey.analysis.db import execute, sql_identifier
from survey.analysis.sections.base import Context, as_json, count, p
from survey.analysis.sections.study import recorded_hashes


def limitations_section(ctx: Context, runs: list[dict[str, Any]], tables: Sequence[str]) -> None:
    doc, info, con, known = ctx.doc, ctx.info, ctx.con, ctx.known
    blocks = doc.section("limitations", "Limitations")
    sizes = sorted({(n.get("physics") or {}).get("size") for n in info.get("networks", []) if n.get("physics")}
                   - {None})
    devices = set()
    for run in runs:
        for d in (as_json(run.get("devices")) or {}).values():
            if isinstance(d, dict):
                devices.add(str(d.get("device", "?")))
    images = 0
    for table in known:
        if table in tables and "image_id" in ctx.columns(table):
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
    single = single_volumes(ctx, tables)
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
                                       "chosen differently. Draws of one image are correlated, and so are the "
                                       "slices of one volume: the primary interval (cluster-exact) speaks for the "
                                       "population of the coarsest unit the rows carry (subject > volume > image; "
                                       "each table's estimand names it) and is wide when few are tested; the "
                                       "binomial intervals shown beside it count correlated draws as independent. "
                                       + single +
                                       "Out-of-distribution groups (data the "
                                       "network was not trained on) are marked as such and say nothing of the "
                                       "intended use unless it includes that data."),
        ("Reference solver.", "The compressed-sensing reference is tuned once per operator; it is a stable baseline, "
                              "not an optimum, and its own worst case (attacking it directly) is reported only where "
                              "the study asked for it."),
        ("Clinical relevance.", "Pixel metrics (relative norms, PSNR, SSIM, correlation) are proxies; whether a given "
                                "artefact or lost detail changes a diagnosis is not assessed by this test and needs "
                                "reader studies."),
    ]
    blocks.append({"kind": "list", "items": items})


def single_volumes(ctx: Context, tables: Sequence[str]) -> str:
    """A sentence for each dataset whose every image is a slice of one volume (the brain template): its
    intervals speak for slices of that volume, not for volumes or subjects; '' when there is none."""
    found: dict[str, str] = {}
    for table in ctx.known:
        if table in tables and {"volume_id", "dataset"} <= set(ctx.columns(table)):
            frame = execute(ctx.con, f"SELECT dataset, count(DISTINCT volume_id) AS volumes, any_value(volume_id) "
                                     f"AS volume, count(*) - count(volume_id) AS missing FROM "
                                     f"{sql_identifier(table)} GROUP BY dataset")
            for r in frame.itertuples(index=False):
                if int(r.volumes) == 1 and int(r.missing) == 0:
                    found[str(r.dataset)] = str(r.volume)
    return "".join(f"Every image of dataset {d!r} is a slice of one volume ({v}): its numbers speak for slices of "
                   "that one volume (one subject), not for other brains or patients, whatever the interval. "
                   for d, v in sorted(found.items()))


def provenance_section(ctx: Context, runs: list[dict[str, Any]]) -> None:
    doc, con, known = ctx.doc, ctx.con, ctx.known
    blocks = doc.section("provenance", "Provenance")
    if not runs:
        blocks.append(p("The store holds no 'runs' table: provenance unknown.", "not-run"))
    else:
        fields = ["run id", "study", "study sha256", "study file", "git commit", "code version", "started", "host",
                  "user", "python", "packages", "devices"]
        columns = []
        for run in runs:
            started = run.get("started_at")
            when = (_dt.datetime.fromtimestamp(float(started), tz=_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
                    if isinstance(started, (int, float)) and math.isfinite(started) else "–")
            packages = ", ".join(f"{k} {v}" for k, v in (as_json(run.get("packages")) or {}).items())
            devices = "; ".join(f"{k}: {d.get('device', '?')} ({d.get('device_name', '?')})"
                                for k, d in (as_json(run.get("devices")) or {}).items() if isinstance(d, dict))
            columns.append([str(run.get(k) or "–") for k in ("run_id", "study", "study_sha256", "study_path",
                                                             "git_commit", "code_version")]
                           + [when, str(run.get("host") or "–"), str(run.get("user") or "–"),
                              str(run.get("python") or "–"), packages or "–", devices or "–"])
        rows = [[name, *(c[i] for c in columns)] for i, name in enumerate(fields)]
        blocks.append(doc.table("Runs that wrote to this store (one column per run).",
                                ["", *(f"run {i + 1}" for i in range(len(runs)))], rows, wrap=True))
        weights = recorded_hashes(runs, "weights_sha256")
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
        # sums over no ok unit (a network whose every unit failed) are NULL: 0 rows, 0 seconds
        body = [[r.task, r.network, count(r.ok), count(r.failed), count(r.rows_), _seconds(r.seconds)]
                for r in frame.itertuples(index=False)]
        blocks.append(doc.table("Work units per task and network from the ledger, by each unit's latest attempt "
                                "(failed units are retried on a rerun of the study).",
                                ["task", "network", "units ok", "units failed", "rows", "seconds"], body,
                                numeric=range(2, 6)))


def _seconds(value: Any) -> float:
    return 0.0 if value is None or (isinstance(value, float) and math.isnan(value)) else float(value)
