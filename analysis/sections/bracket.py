"""Report section of the `bracket` table: the worst gain at a budget bracketed from both sides.

Per network and target (network, H, reference) and budget: median over images of the attack's gain (a lower
bound), local sigma_1 (an estimate) and the certified upper bound, the gap between the two bounds in words,
and a figure of the three against eps. Where a target has no certificate the table says which layer lacks a
rule. Center smoothing's certified radius and its PSNR price follow when the `smoothing` table exists.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pandas as pd

from survey.analysis.db import execute
from survey.analysis.figures import _save, _theme, plt
from survey.analysis.sections.base import Context, Section, format_number, h3, p

TARGET_ORDER = {"network": 0, "H": 1, "reference": 2}


def gap_words(lower: float | None, upper: float | None) -> str:
    """The gap between attack and certificate in words."""
    if upper is None or lower is None or not math.isfinite(upper) or lower <= 0:
        return "no certificate: only the attack's lower bound is known"
    gap = upper / lower
    span = f"between {format_number(lower)} and {format_number(upper)}"
    if gap <= 1.01:
        return f"pinned down: {span}"
    if gap <= 2:
        return f"{span}: the certificate is within a factor {gap:.2f} of the attack"
    if gap <= 10:
        return f"{span}: the certificate is {gap:.1f}x the attack, the truth is not resolved"
    return (f"{span}: the certificate is {gap:.3g}x the attack, too loose to say more than that the gain is "
            "finite")


class BracketSection(Section):
    table = "bracket"
    title = "Bracket of the worst case: attack, estimate and certificate"
    method = ("For every image and budget eps (||r|| <= eps ||x||), three numbers on the scale of the gain "
              "(relative output change over relative input change): the budget search's best gain (reached, so a "
              "lower bound on the worst gain), sigma_1 of the local Jacobian (Lanczos: an estimate of the worst "
              "gain as eps -> 0, neither bound at a finite eps) and a certified upper bound, the least of three sound "
              "ones: linear bound propagation with back-substitution over the ball (every ReLU, leaky ReLU, |z| and "
              "max-pooling relaxed around the clean point; the deviation of each unit that may leave its clean "
              "piece carried to every later layer through the composed clean linearisation, and chord relaxations "
              "back-substituted from the output; plus eps times a certified norm of the dense clean Jacobian), the "
              "same with the deviations carried as intervals through absolute weights, and the certified global "
              "Lipschitz bound (layer norms from exact circular spectra and Gram iteration, with their rounding "
              "error). The truth lies between the attack and the certificate; the gap is their ratio. H is linear: "
              "its certificate is eps sigma_1 exactly and its bracket closes. The reference (the compressed-sensing "
              "solver, soft thresholds iterated to a tolerance) has no bound rule: a certified bound for it is "
              "probably not available with these methods (its iterations would have to be unrolled and bounded "
              "to convergence), so it gets the attack and the estimate only.")
    params = ("domain",)

    def result_figures(self, ctx: Context) -> list[dict[str, Any]]:
        frame = execute(ctx.con, f"SELECT * FROM bracket WHERE {ctx.live()}")
        if frame.empty:
            return []
        blocks: list[dict[str, Any]] = [self.summary_table(ctx, frame)]
        blocks += [p(line) for line in self.gap_lines(frame)]
        paths = bracket_figure(frame, ctx.figure_path("bracket"), svg=ctx.doc.svg)
        blocks.append(ctx.doc.figure(paths, "Per network: the attack's gain (lower bound, solid), local sigma_1 "
                                            "(estimate, dotted) and the certified upper bound (dashed) against eps, "
                                            "median over images, for the network and H; the truth lies between "
                                            "solid and dashed."))
        if "smoothing" in ctx.known:
            blocks += self.smoothing_blocks(ctx)
        return blocks

    @staticmethod
    def medians(frame: pd.DataFrame) -> pd.DataFrame:
        keys = ["network", "domain", "target", "budget"]
        grouped = frame.groupby(keys, sort=True)
        columns = ["lower_bound", "sigma_estimate", "certified_upper", "gap"]
        columns += [c for c in ("interval_upper", "global_upper") if c in frame.columns]
        out = grouped[columns].median()
        if "method" in frame.columns:
            out["method"] = grouped["method"].agg(lambda s: ", ".join(sorted({m for m in s if m})))
        out["images"] = grouped["image_id"].nunique()
        out["missing"] = grouped["missing"].agg(lambda s: next((m for m in s if m), ""))
        out = out.reset_index()
        out["order"] = out["target"].map(TARGET_ORDER).fillna(9)
        return out.sort_values(["network", "domain", "order", "budget"])

    def summary_table(self, ctx: Context, frame: pd.DataFrame) -> dict[str, Any]:
        rows = []
        for r in self.medians(frame).itertuples(index=False):
            cert = None if pd.isna(r.certified_upper) else float(r.certified_upper)
            box = getattr(r, "interval_upper", None)
            glob = getattr(r, "global_upper", None)
            rows.append([r.network, r.domain, r.target, float(r.budget), int(r.images), float(r.lower_bound),
                         float(r.sigma_estimate), cert, None if pd.isna(r.gap) else float(r.gap),
                         None if box is None or pd.isna(box) else float(box),
                         None if glob is None or pd.isna(glob) else float(glob),
                         getattr(r, "method", ""), r.missing if cert is None else ""])
        return ctx.doc.table("Per network, target and budget: medians over images of the attack's gain (lower "
                             "bound), local sigma_1 as a gain (estimate), the certified upper bound and the gap "
                             "(certified / attack), beside the interval-only and the global certified bounds it is "
                             "the least of, and which one it is; where there is no certificate, the layer without "
                             "a rule.",
                             ["network", "domain", "target", "eps", "images", "attack (lower)", "sigma_1 (estimate)",
                              "certified (upper)", "gap", "intervals only", "global", "certified by",
                              "no certificate because"], rows, numeric=range(3, 11),
                             wrap=True)

    def gap_lines(self, frame: pd.DataFrame) -> list[str]:
        lines = []
        for r in self.medians(frame).itertuples(index=False):
            if r.target != "network":
                continue
            cert = None if pd.isna(r.certified_upper) else float(r.certified_upper)
            lines.append(f"{r.network} at eps = {format_number(float(r.budget))} (median of {int(r.images)} "
                         f"images): the worst gain lies {gap_words(float(r.lower_bound), cert)}.")
        return lines

    def smoothing_blocks(self, ctx: Context) -> list[dict[str, Any]]:
        frame = execute(ctx.con, f"SELECT * FROM smoothing WHERE {ctx.live()}")
        if frame.empty:
            return []
        keys = ["network", "target", "budget", "noise"]
        grouped = frame.groupby(keys, sort=True)
        stats = grouped[["certified_radius", "certified_gain", "psnr", "smoothed_psnr", "psnr_price", "samples",
                         "confidence"]].median().reset_index()
        rows = [[r.network, r.target, float(r.budget), float(r.noise), None if pd.isna(r.certified_radius) else
                 float(r.certified_radius), None if pd.isna(r.certified_gain) else float(r.certified_gain),
                 float(r.psnr), float(r.smoothed_psnr), float(r.psnr_price), int(r.samples), float(r.confidence)]
                for r in stats.itertuples(index=False)]
        return [h3("Center smoothing: what could be guaranteed, and at what price"),
                p("The smoothed reconstruction (the centre of the half-mass ball of f under Gaussian input noise) "
                  "has a certified output radius at input radius eps ||x||, at the stated confidence, for the noise, "
                  "samples and PSNR shown: a guarantee for a different, noisier reconstruction."),
                ctx.doc.table("Center smoothing per network, target, budget and noise: medians over images of the "
                              "certified output radius (absolute and as a gain), PSNR before and after smoothing "
                              "and its price, the samples spent and the confidence.",
                              ["network", "target", "eps", "noise", "certified radius", "as a gain", "PSNR",
                               "smoothed PSNR", "price (dB)", "samples", "confidence"], rows, numeric=range(2, 11))]


SECTION = BracketSection()


def bracket_figure(frame: pd.DataFrame, out: Path | str, *, svg: bool = False) -> list[Path]:
    """Attack, sigma_1 and certificate against eps, one panel per (network, domain)."""
    _theme()
    medians = BracketSection.medians(frame)
    groups = list(medians.groupby(["network", "domain"], sort=True))
    ncols = min(3, len(groups))
    nrows = math.ceil(len(groups) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.4 * ncols, 2.7 * nrows), squeeze=False)
    colours = {"network": "#1f77b4", "H": "#2ca02c", "reference": "#d62728"}
    for ax, ((network, domain), group) in zip(axes.flat, groups):
        for target, part in group.groupby("target"):
            colour = colours.get(target, "#555555")
            ax.plot(part["budget"], part["lower_bound"], "-o", color=colour, lw=1.3, ms=3, label=f"{target} attack")
            ax.plot(part["budget"], part["sigma_estimate"], ":", color=colour, lw=1.0)
            if part["certified_upper"].notna().any():
                ax.plot(part["budget"], part["certified_upper"], "--s", color=colour, lw=1.0, ms=3)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_title(f"{network} ({domain})")
        ax.set_xlabel("eps")
        ax.set_ylabel("gain")
    for ax in list(axes.flat)[len(groups):]:
        ax.set_visible(False)
    axes.flat[0].legend(loc="best", fontsize=7)
    fig.tight_layout()
    return _save(fig, out, svg)
