"""Report section of the `severity` table: physical perturbations (motion, coil and field errors, detector
faults, photon noise) at physical severities.

Default bad outcomes, per network, family and severity, with the primary (cluster-exact: draws share an
image) interval of survey.analysis.estimate, for the network, the reference and H on the same draws:
PSNR below X = 25 dB, and PSNR more than 3 dB below the method's own clean PSNR. Figures: P(bad) against
the severity (one panel per network and family) and mean PSNR against the severity; a table of the first
severity at which each method falls below X dB for at least half of the draws.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd
import seaborn as sns

from survey.analysis.db import execute
from survey.analysis.estimate import estimate
from survey.analysis.figures import NETWORK_STYLE, PSNR_CAP, save_figure, theme, plt
from survey.analysis.sections.base import (Context, Definition, Section, estimate_command, format_interval,
                                           format_number, h3, percent, slug)

#: The absolute quality floor of the default definition ("does each method fall below X dB").
PSNR_FLOOR = 25.0
#: The relative one: dB below the method's own clean PSNR.
PSNR_DROP = 3.0
SOLVERS = {"network": "", "reference (CS)": "ref_", "zero-filled H(y)": "h_"}
MAX_PANELS = 24

DEFINITIONS = (
    Definition(
        "severity-floor", "severity", f"PSNR below {PSNR_FLOOR:g} dB at a physical severity",
        bad=f"psnr < {PSNR_FLOOR:g}", by=("family", "severity"), per="row", unit="draw",
        reference_bad=f"ref_psnr < {PSNR_FLOOR:g}", reference_column="ref_psnr",
        rationale=f"A draw of a perturbation family at a severity (pixels of patient motion, relative coil-map "
                  f"error, cycles of off-resonance, spike amplitude, % detector gain error, degrees of view "
                  f"jitter, photons per bin) is bad when the reconstruction's PSNR against the truth falls below "
                  f"{PSNR_FLOOR:g} dB. Draws of one image share it, so the primary interval is cluster-exact: it "
                  "speaks for the population of images. The reference and H(y) see the same perturbed "
                  "measurements (H's rows are in the figure and the threshold table)."),
    Definition(
        "severity-drop", "severity", f"PSNR more than {PSNR_DROP:g} dB below the clean image",
        bad=f"psnr < psnr_clean - {PSNR_DROP:g}", by=("family", "severity"), per="row", unit="draw",
        reference_bad=f"ref_psnr < ref_psnr_clean - {PSNR_DROP:g}", reference_column="ref_psnr",
        rationale=f"The same draws, judged against each method's own unperturbed reconstruction: bad when the "
                  f"PSNR drops by more than {PSNR_DROP:g} dB, whatever the method's clean quality; this separates "
                  "sensitivity to the perturbation from a low baseline."),
)

#: Per definition: the bad predicate for H(y).
H_BAD = {"severity-floor": f"h_psnr < {PSNR_FLOOR:g}", "severity-drop": f"h_psnr < h_psnr_clean - {PSNR_DROP:g}"}


class SeveritySection(Section):
    table = "severity"
    title = "Physical perturbations"
    method = ("Physical perturbation families at physical severities (survey.perturb): rigid patient motion during "
              "the scan, coil-map errors, B0 off-resonance, k-space spikes, detector gain errors (rings), view "
              "jitter and photon noise. Per image, family and severity, a fixed number of standard Gaussian latent "
              "draws (the same draws at every severity); network, compressed-sensing reference and H(y) "
              "reconstruct the same perturbed measurements.")
    params = ("family", "family_params", "severity_unit", "draws")
    definitions = DEFINITIONS

    def parameter_columns(self, ctx: Context) -> Sequence[str]:
        return self.params

    def definition_figure(self, ctx: Context, definition: Definition, found) -> dict | None:
        by = ["network", "family", "severity"]
        try:
            estimates = {"network": [r for r in found["network"] if r["primary"]],
                         "reference (CS)": [r for r in found.get("reference") or [] if r["primary"]],
                         "zero-filled H(y)": [r for r in estimate(ctx.con, "severity", H_BAD[definition.key], by=by,
                                                                  n_boot=ctx.n_boot, seed=ctx.seed)
                                              if r["primary"]]}
        except (KeyError, ValueError):
            return None
        if not estimates["network"]:
            return None
        command = estimate_command("severity", H_BAD[definition.key], where=None, by=by, per="row", store=ctx.given,
                                   n_boot=ctx.n_boot, seed=ctx.seed)
        ctx.computed[f"{definition.key}:h"] = {"by": by, "network": estimates["zero-filled H(y)"], "reference": [],
                                               "commands": {"network": command}}
        paths = probability_curves(estimates, ctx.figure_path(f"severity_{slug(definition.key)}"),
                                   ylabel=f"P({definition.bad})", svg=ctx.doc.svg)
        methods = sorted({r["method"] for rows in estimates.values() for r in rows})
        return ctx.doc.figure(paths, f"P({definition.bad}) against the severity, per network and family: points are "
                                     f"the estimates and bands the {percent(definition.confidence)} primary "
                                     f"intervals ({', '.join(methods)}); network (solid), compressed-sensing "
                                     "reference (dashed), H(y) (dotted), on the same draws. The severity axis is "
                                     "each family's own (its unit under the panel); levels are evenly spaced.")

    def result_figures(self, ctx: Context) -> list[dict[str, Any]]:
        frame = execute(ctx.con, f"SELECT * FROM severity WHERE {ctx.live()}")
        if frame.empty:
            return []
        blocks: list[dict[str, Any]] = [h3("Quality against the severity")]
        paths = psnr_curves(frame, ctx.figure_path("severity_psnr"), floor=PSNR_FLOOR, seed=ctx.seed,
                            svg=ctx.doc.svg)
        blocks.append(ctx.doc.figure(paths, "Mean PSNR against the severity per network and family with a 95% "
                                            "bootstrap band over draws (a figure, not an estimate): network "
                                            "(solid), reference (dashed), H(y) (dotted); the red line is "
                                            f"{PSNR_FLOOR:g} dB."))
        table = threshold_table(ctx, frame)
        if table is not None:
            blocks.append(table)
        return blocks


SECTION = SeveritySection()


# -- tables and figures ---------------------------------------------------------------------------

def _severity(value: Any) -> float:
    """A severity as float; estimate rows carry a non-finite group value as None (NaN in pandas): the only
    non-finite severity is a photon dose of inf (no noise)."""
    return math.inf if value is None or (isinstance(value, float) and math.isnan(value)) else float(value)


def _levels(frame: pd.DataFrame) -> list[float]:
    """The family's severities in sweep order: ascending, except photon doses (identity inf first, descending)."""
    values = sorted(set(_severity(v) for v in frame["severity"]))
    return values[::-1] if any(math.isinf(v) for v in values) else values


def threshold_table(ctx: Context, frame: pd.DataFrame) -> dict | None:
    """Per network, family and method: P(psnr < X) at the identity and at the largest severity (primary
    interval), and the first severity at which it reaches 1/2."""
    by = ["network", "family", "severity"]
    rows = []
    found: dict[str, list[dict[str, Any]]] = {}
    for solver, prefix in SOLVERS.items():
        if f"{prefix}psnr" not in frame:
            continue
        try:
            found[solver] = [r for r in estimate(ctx.con, "severity", f"{prefix}psnr < {PSNR_FLOOR:g}", by=by,
                                                 n_boot=ctx.n_boot, seed=ctx.seed) if r["primary"]]
        except ValueError:
            continue
    for (network, family), sub in frame.groupby(["network", "family"], sort=True):
        levels = _levels(sub)
        unit = str(sub["severity_unit"].iloc[0])
        for solver, estimates in found.items():
            mine = {_severity(r["severity"]): r for r in estimates if r["network"] == network and r["family"] == family}
            if not mine:
                continue
            first = next((v for v in levels if v in mine and mine[v]["point"] >= 0.5), None)
            start, end = mine.get(levels[0]), mine.get(levels[-1])
            rows.append([str(network), str(family), solver, unit,
                         "–" if start is None else f"{format_number(start['point'])} "
                                                   f"{format_interval(start['ci_low'], start['ci_high'])}",
                         format_number(levels[-1]),
                         "–" if end is None else f"{format_number(end['point'])} "
                                                 f"{format_interval(end['ci_low'], end['ci_high'])}",
                         "not reached" if first is None else format_number(first)])
    if not rows:
        return None
    return ctx.doc.table(f"At what severity does each method fall below {PSNR_FLOOR:g} dB, and how often: P(psnr < "
                         f"{PSNR_FLOOR:g}) at the first level (the identity) and at the largest severity, with the "
                         "primary 95% interval (cluster-exact over images), and the first severity at which the "
                         "estimate reaches 1/2.",
                         ["network", "family", "method", "unit", "P at first level [95%]", "largest severity",
                          "P at largest [95%]", "first severity with P ≥ 1/2"], rows, wrap=True)


def _panels(groups: Sequence[tuple[str, str]]):
    count = min(len(groups), MAX_PANELS)
    ncols = min(4, count)
    nrows = (count + ncols - 1) // ncols
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.1 * ncols, 2.6 * nrows), squeeze=False)
    for ax in axes.flat[count:]:
        ax.axis("off")
    return fig, axes, list(groups)[:count]


def _severity_axis(ax, levels: list[float], unit: str, family: str) -> None:
    ax.set_xticks(range(len(levels)))
    ax.set_xticklabels([("∞" if math.isinf(v) else format_number(v, 3)) for v in levels], fontsize=7)
    ax.set_xlabel(f"{family} severity ({unit})" if unit else f"{family} severity")


def probability_curves(estimates: dict[str, list[dict[str, Any]]], out: Path | str, *, ylabel: str,
                       svg: bool = False) -> list[Path]:
    """P(bad) against the severity, one panel per (network, family); a line per solver with its interval band.

    estimates: solver name (keys of NETWORK_STYLE) -> estimate rows (network, family, severity, p / point, ci_low,
    ci_high)."""
    theme()
    frames = [pd.DataFrame(rows).assign(solver=solver) for solver, rows in estimates.items() if rows]
    frame = pd.concat(frames, ignore_index=True)
    groups = sorted({(str(r.network), str(r.family)) for r in frame.itertuples()})
    fig, axes, groups = _panels(groups)
    palette = dict(zip(NETWORK_STYLE, sns.color_palette("colorblind", 3)))
    for index, (ax, (network, family)) in enumerate(zip(axes.flat, groups)):
        sub = frame[(frame["network"] == network) & (frame["family"] == family)]
        levels = _levels(sub)
        position = {v: i for i, v in enumerate(levels)}
        for solver, style in NETWORK_STYLE.items():
            line = sub[sub["solver"] == solver]
            if line.empty:
                continue
            line = line.assign(x=[position[_severity(v)] for v in line["severity"]]).sort_values("x")
            ax.fill_between(line["x"], line["ci_low"].fillna(0.0).astype(float),
                            line["ci_high"].fillna(1.0).astype(float), color=palette[solver], alpha=0.15, lw=0)
            ax.plot(line["x"], line["point"].astype(float), ls=style, marker="o", ms=3, color=palette[solver],
                    label=solver)
        ax.set_ylim(-0.03, 1.03)
        ax.set_title(f"{network}: {family}")
        ax.set_ylabel(ylabel if index % axes.shape[1] == 0 else "")
        _severity_axis(ax, levels, "", family)
    axes.flat[0].legend(frameon=True, loc="upper left")
    fig.tight_layout()
    return save_figure(fig, out, svg)


def psnr_curves(frame: pd.DataFrame, out: Path | str, *, floor: float = PSNR_FLOOR, seed: int = 0,
                svg: bool = False) -> list[Path]:
    """Mean PSNR against the severity per (network, family) with a bootstrap band over draws, for the network,
    the reference (where it ran) and H(y); a horizontal line at `floor` dB."""
    theme()
    groups = sorted({(str(n), str(f)) for n, f in zip(frame["network"], frame["family"])})
    fig, axes, groups = _panels(groups)
    palette = dict(zip(NETWORK_STYLE, sns.color_palette("colorblind", 3)))
    for index, (ax, (network, family)) in enumerate(zip(axes.flat, groups)):
        sub = frame[(frame["network"] == network) & (frame["family"] == family)]
        levels = _levels(sub)
        position = {v: i for i, v in enumerate(levels)}
        x = np.array([position[_severity(v)] for v in sub["severity"]])
        for solver, prefix in SOLVERS.items():
            column = f"{prefix}psnr"
            if column not in sub or not sub[column].notna().any():
                continue
            y = sub[column].astype(float).clip(upper=PSNR_CAP)
            keep = np.isfinite(y.to_numpy())
            sns.lineplot(x=x[keep], y=y[keep], ax=ax, color=palette[solver], errorbar=("ci", 95), n_boot=200,
                         seed=seed, marker="o", markersize=3, label=solver,
                         linestyle=NETWORK_STYLE[solver], legend=False)
        ax.axhline(floor, color="#b03a2e", lw=1.0, ls="-.")
        ax.set_title(f"{network}: {family}")
        ax.set_ylabel("PSNR (dB)" if index % axes.shape[1] == 0 else "")
        _severity_axis(ax, levels, str(sub["severity_unit"].iloc[0]), family)
    handles, labels = axes.flat[0].get_legend_handles_labels()
    if handles:
        axes.flat[0].legend(handles, labels, frameon=True, loc="lower left")
    fig.tight_layout()
    return save_figure(fig, out, svg)


__all__ = ["DEFINITIONS", "PSNR_DROP", "PSNR_FLOOR", "SECTION", "SeveritySection", "probability_curves",
           "psnr_curves", "threshold_table"]
