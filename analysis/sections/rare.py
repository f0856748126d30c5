"""Report section of the `rare` table: how often a random perturbation at a physical severity is bad.

Per image the table holds an estimate of P(D(o(y'), o(y)) >= delta) with its own interval, for the network,
the compressed-sensing reference and H on the same settings. The section shows the severity curves
(log10 P against the SNR or the dose, one panel per network, family, distance and threshold, a line per
target: the median over images, each image's estimate as a point with its interval), the distribution of
per-image P over images with the image-level bracket of survey.analysis.rare_summary, and the cost (calls).
"""

from __future__ import annotations

import math
import shlex
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd
import seaborn as sns

from survey.analysis.figures import NETWORK_STYLE, plt, save_figure, theme
from survey.analysis.rare_summary import (LEVELS, QUANTILES, SETTING, fetch, per_image_value, rare_claims,
                                          rare_distribution)
from survey.analysis.sections.base import Context, Section, format_interval, format_number, h3, p, percent

#: target column -> the solver names the other sections use (and their line styles).
TARGET_NAMES = {"network": "network", "reference": "reference (CS)", "H": "zero-filled H(y)"}
MAX_PANELS = 24
FLOOR = 1e-16   # where p = 0 (naive Monte Carlo without a hit) is drawn on the log axis


class RareSection(Section):
    table = "rare"
    title = "How often a random perturbation is bad"
    method = ("Per image, perturbation family and severity (thermal noise at an SNR, photon noise at a dose, ...), "
              "the probability that a random draw of the perturbation changes the reconstruction by at least delta, "
              "P(D(o(y'), o(y)) ≥ delta), with D the relative l2 change (or the largest change over a sliding 8 × 8 "
              "window, for local artefacts), for the network, the compressed-sensing reference and H(y) on the same "
              "settings and random streams. Where P is large it is counted by naive Monte Carlo (exact "
              "Clopper–Pearson interval); where it is small by adaptive multilevel splitting with a pCN kernel "
              "(interval on log p; when the level budget or stop_below ends it first, a certified upper bound) or "
              "by importance sampling at the most probable failure points (with its effective sample size), or by "
              "last-particle splitting (an exact Poisson interval). The splitting estimators pool several "
              "independent runs and check them against each other; where runs disagree or moves do not mix, the "
              "row says so (stop) and its upper end is what the runs still defend. Where the family is "
              "differentiable they are also checked against importance sampling's failure modes: a mode that "
              "no run reached, or intervals that do not overlap, says so (stop modes_lost or "
              "estimators_disagree) and the interval spans both. Each estimator's coverage was "
              "measured at its validated settings on planted maps with exact answers, multi-mode ones included, "
              "down to p = 1e-9 (tests/test_rare_coverage.py, docs/INTERVALS.md); rows below those settings are "
              "shown apart.")
    params = ("family", "family_params", "severity_name", "severity_unit", "estimator", "settings")

    def results(self, ctx: Context) -> list[dict[str, Any]]:
        if self.table not in ctx.known:
            return [h3(self.title), p(f"Not run: the store holds no '{self.table}' table.", "not-run")]
        try:
            frame = fetch(ctx.con, where=ctx.live())
        except ValueError as exc:
            return [p(f"Could not be read: {exc}", "not-run")]
        if frame.empty:
            return [p("No rows in the 'rare' table.", "not-run")]
        validated = _validated(frame)
        unvalidated = frame[~validated]
        where = ctx.live() if "validated" not in frame.columns else f"({ctx.live()}) AND validated"
        blocks: list[dict[str, Any]] = [h3("Severity curves")]
        paths = severity_curves(frame, ctx.figure_path("rare_severity"), svg=ctx.doc.svg)
        blocks.append(ctx.doc.figure(paths, "log10 P(D ≥ delta) against the severity (SNR in dB, or photons per bin "
                                            "for CT photon noise), per network, family, distance and threshold: "
                                            "lines are the median over images of each image's estimate, points "
                                            "each image's estimate with its interval (triangles: a certified upper "
                                            "bound only; points on the floor: no bad draw among naive Monte Carlo's). "
                                            "Network (solid), compressed-sensing reference (dashed), H(y) (dotted), "
                                            "on the same settings."))
        blocks.append(h3("Across images"))
        blocks.append(p("Each image's interval (and 'P < bound' certificate) is a statement about that image alone. "
                        "Statements about images in general are the brackets over images below (Clopper–Pearson "
                        "over the images of the dataset, for the population of such images), and only rows at "
                        "validated settings enter them."))
        rows = rare_distribution(ctx.con, where=where, levels=LEVELS, quantiles=QUANTILES) if validated.any() else []
        ctx.computed["rare:distribution"] = {"by": ["network", *SETTING], "network": rows, "reference": [],
                                             "commands": {"network": _command(ctx.given)}}
        blocks.append(distribution_table(ctx, rows))
        claims = rare_claims(ctx.con, where=ctx.live()) if validated.any() else []
        if claims:
            blocks.append(claims_table(ctx, claims))
        if len(unvalidated):
            blocks.append(unvalidated_table(ctx, unvalidated))
        blocks.append(cost_table(ctx, frame))
        return blocks


SECTION = RareSection()


def _command(store: Path) -> str:
    return f"survey estimate --table rare --store {shlex.quote(str(store))}"


def _setting_label(r: dict[str, Any]) -> list[str]:
    return [str(r["network"]), str(r["family"]), format_number(r["severity"]), format_number(r["threshold"]),
            str(r["distance"]), str(r["estimator"]), TARGET_NAMES.get(str(r["target"]), str(r["target"]))]


def distribution_table(ctx: Context, rows: list[dict[str, Any]]) -> dict:
    """One line per group: images, median and quantiles of per-image P, then per level the bracket."""
    confidence = rows[0]["confidence"] if rows else 0.95
    groups: dict[tuple, dict[str, Any]] = {}
    for r in rows:
        key = tuple(r.get(c) for c in ("network", "dataset", *SETTING))
        groups.setdefault(key, {"summary": r, "levels": {}})["levels"][r["level"]] = r
    body = []
    for g in groups.values():
        s = g["summary"]
        cells = []
        for level in LEVELS:
            a = g["levels"].get(float(level))
            cells.append("–" if a is None else f"{a['surely_above']}–{a['possibly_above']} / {a['images']} "
                                               f"{format_interval(a['bracket_low'], a['bracket_high'])}")
        body.append([*_setting_label(s), s["images"], s["certified"], s.get("q0.5"), s.get("q0.9"), s["max"], *cells])
    columns = ["network", "family", "severity", "threshold", "distance", "estimator", "solver", "images",
               "bound only", "median P", "90th pct", "max",
               *(f"P > {v:g}: images surely–possibly [{percent(confidence)} bracket]" for v in LEVELS)]
    return ctx.doc.table(
        "How the per-image probability of a bad perturbation spreads over images, per setting and solver.",
        columns, body, numeric=range(7, 12), wrap=True, commands=[_command(ctx.given)],
        note="Per-image P is each image's own estimate (where splitting reached only a certified bound, the bound: "
             "those images are counted in 'bound only' and make the quantiles upper bounds). An image is surely "
             "above a level when the lower end of its own interval is, possibly above when the upper end is; the "
             f"bracket runs from the lower {percent(confidence)} Clopper–Pearson bound over images of the first count "
             "to the upper bound of the second: a conservative interval for the fraction of the population of "
             "images whose P(bad) exceeds the level.")


def claims_table(ctx: Context, claims: list[dict[str, Any]]) -> dict:
    """The across-image claims with Holm over the family of (network, severity, threshold, ...) decisions."""
    body = [[*_setting_label(c), c["images"], c["possibly_above"], c["upper"], c["p_adjusted"],
             "PASS" if c["passed"] else "not shown"] for c in claims]
    first = claims[0]
    return ctx.doc.table(
        f"Claims about images in general: {first['claim']}, per setting, Holm-corrected over all "
        f"{first['family_size']} (network, severity, threshold, ...) decisions.",
        ["network", "family", "severity", "threshold", "distance", "estimator", "solver", "images",
         "possibly above", f"upper {percent(first['confidence'])}", "Holm p", "verdict"],
        body, numeric=range(7, 11), wrap=True,
        note="An image counts as possibly above the level unless its own interval rules it out; the verdict "
             "PASS says that, at the family-wise confidence, fewer than the stated share of the dataset's images "
             "(as a population) exceed the level. With few images nothing general can be shown: a per-image "
             "certificate is evidence about that image only.")


def _validated(frame: pd.DataFrame) -> np.ndarray:
    """Rows at validated settings (rows stored before the column existed were not validated)."""
    if "validated" not in frame.columns:
        return np.zeros(len(frame), dtype=bool)
    return frame["validated"].fillna(False).to_numpy(dtype=bool)


def unvalidated_table(ctx: Context, frame: pd.DataFrame) -> dict:
    """Rows whose estimator ran below its validated settings: shown apart, as estimates, never as certificates."""
    body = []
    for r in frame.itertuples():
        body.append([str(r.network), str(r.family), format_number(r.severity), format_number(r.threshold),
                     str(r.estimator), TARGET_NAMES.get(str(r.target), str(r.target)), str(r.image_id),
                     r.p if r.p == r.p else None, format_interval(r.ci_low, r.ci_high), str(r.stop),
                     str(getattr(r, "settings", ""))])
    return ctx.doc.table(
        "Rows at settings below the validated ones (not certificates).",
        ["network", "family", "severity", "threshold", "estimator", "solver", "image", "P", "interval", "stop",
         "settings"], body, numeric=[7], wrap=True,
        note="These estimators ran with fewer particles, pCN steps, runs or draws than the settings whose coverage "
             "was measured on planted maps (survey.rare.settings, docs/INTERVALS.md); their intervals and bounds "
             "may be too narrow, and they enter neither the distribution over images nor any certificate.")


def cost_table(ctx: Context, frame: pd.DataFrame) -> dict:
    """Mean reconstructions (calls) per estimate, and the levels and ESS where they apply."""
    keys = ["network", "estimator", "target"]
    body = []
    for key, sub in frame.groupby(keys, sort=True):
        levels = sub["levels"].dropna() if "levels" in sub else []
        ess = sub["ess"].dropna() if "ess" in sub else []
        body.append([str(key[0]), str(key[1]), TARGET_NAMES.get(str(key[2]), str(key[2])), len(sub),
                     float(sub["calls"].mean()), float(np.mean(levels)) if len(levels) else None,
                     float(np.median(ess)) if len(ess) else None])
    return ctx.doc.table("What the estimates cost: reconstructions per estimate (one image, one setting), splitting "
                         "levels and importance sampling's effective sample size.",
                         ["network", "estimator", "solver", "estimates", "mean calls", "mean levels", "median ESS"],
                         body, numeric=range(3, 7))


def _levels_axis(values: Sequence[float]) -> tuple[list[float], bool]:
    """Severities in plotting order, and whether the axis is logarithmic (photon doses)."""
    finite = sorted(v for v in values if math.isfinite(v))
    return finite, bool(finite) and min(finite) > 0 and max(finite) / min(finite) >= 30


def severity_curves(frame: pd.DataFrame, out: Path | str, *, svg: bool = False) -> list[Path]:
    """log10 P against the severity, one panel per (network, family, distance, threshold); a line per target
    (median over images) and estimator (marker), each image's estimate with its interval behind it."""
    theme()
    frame = frame.assign(value=per_image_value(frame), bound=frame["p"].isna())
    panels = sorted({(str(r.network), str(r.family), str(r.distance), float(r.threshold))
                     for r in frame.itertuples()})[:MAX_PANELS]
    ncols = min(3, len(panels))
    nrows = (len(panels) + ncols - 1) // ncols
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.6 * ncols, 2.9 * nrows), squeeze=False)
    for ax in axes.flat[len(panels):]:
        ax.axis("off")
    palette = dict(zip(TARGET_NAMES, sns.color_palette("colorblind", 3)))
    markers = {"mc": "s", "splitting": "o", "importance": "D"}
    for ax, (network, family, distance, threshold) in zip(axes.flat, panels):
        sub = frame[(frame["network"] == network) & (frame["family"] == family) & (frame["distance"] == distance)
                    & (frame["threshold"] == threshold)]
        sub = sub[np.isfinite(sub["severity"].astype(float))]
        levels, logx = _levels_axis(sub["severity"].astype(float).tolist())
        for (target, estimator), line in sub.groupby(["target", "estimator"], sort=True):
            color = palette.get(str(target), "grey")
            style = NETWORK_STYLE.get(TARGET_NAMES.get(str(target), ""), "-")
            x = line["severity"].astype(float).to_numpy()
            v = np.clip(line["value"].to_numpy(dtype=float), FLOOR, 1.0)
            low = np.clip(line["ci_low"].to_numpy(dtype=float, na_value=0.0), FLOOR, 1.0)
            high = np.clip(line["ci_high"].to_numpy(dtype=float, na_value=1.0), FLOOR, 1.0)
            point = ~line["bound"].to_numpy()
            ax.errorbar(x[point], v[point], yerr=[v[point] - low[point], high[point] - v[point]], fmt="none",
                        ecolor=color, alpha=0.35, lw=0.8)
            ax.scatter(x[point], v[point], s=9, color=color, alpha=0.5, marker=markers.get(str(estimator), "o"))
            ax.scatter(x[~point], v[~point], s=16, color=color, alpha=0.7, marker="v")
            median = line.groupby(line["severity"].astype(float))["value"].median().sort_index()
            ax.plot(median.index, np.clip(median.to_numpy(dtype=float), FLOOR, 1.0), ls=style,
                    marker=markers.get(str(estimator), "o"), ms=4, color=color,
                    label=f"{TARGET_NAMES.get(str(target), target)} ({estimator})")
        ax.set_yscale("log")
        if logx:
            ax.set_xscale("log")
        unit = str(sub["severity_unit"].iloc[0]) if len(sub) else ""
        name = str(sub["severity_name"].iloc[0]) if len(sub) else "severity"
        ax.set_xlabel(f"{name} ({unit})" if unit else name)
        ax.set_ylabel("P(D ≥ δ)")
        ax.set_title(f"{network}: {family}, {distance} ≥ {format_number(threshold)}")
        if levels:
            ax.set_xticks(levels)
            ax.set_xticklabels([format_number(v, 3) for v in levels], fontsize=7)
    if panels:
        axes.flat[0].legend(frameon=True, loc="best", fontsize=6)
    fig.tight_layout()
    return save_figure(fig, out, svg)


__all__ = ["RareSection", "SECTION", "TARGET_NAMES", "cost_table", "distribution_table", "severity_curves",
           "claims_table", "unvalidated_table"]
