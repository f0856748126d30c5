"""Report section of the `spectrum` table: the local Jacobian spectrum and the global Lipschitz bound.

sigma_k against k per network beside the unrolled reference and H (median over images, interquartile band),
the first singular vectors as images, and a table per network: median sigma_1 (absolute and relative to
||f(Ax)|| / ||x||, comparable with the attack's gain), the effective rank, the upper bound with its gap to
the largest sigma_1 seen, and the best budget-search gain at the smallest budget from the attacks table.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from survey.analysis.db import execute
from survey.analysis.figures import as_image, panel, save_figure, theme, plt, row_tensors
from survey.analysis.sections.base import MAX_WORST, Context, Section, h3, records

TARGETS = (("sigma_rel", "network", "-"), ("ref_sigma_rel", "reference (unrolled CS)", "--"),
           ("h_sigma_rel", "H", ":"))


class SpectrumSection(Section):
    table = "spectrum"
    title = "Local Jacobian spectrum and Lipschitz bounds"
    method = ("At each image, the top-k singular values sigma_1 >= ... >= sigma_k and right singular vectors of the "
              "linearised map r -> f(A(x + r)) (or e -> f(Ax + e) on the measured entries), by block Lanczos on "
              "J^T J with Jacobian-vector products (no dense Jacobian), for the network, the unrolled reference "
              "solver and H on the same images. sigma_1 bounds how far any small perturbation can move the output "
              "to first order; the spread of sigma_k says how many such bad directions there are. sigma_rel = "
              "sigma ||x|| / ||f(Ax)|| is on the scale of the worst-case search's gain. The upper bound is a global "
              "Lipschitz constant from layer norms along the network's graph: no perturbation of any size can "
              "do worse; none is given where a layer has no bound. A local singular value describes the map only "
              "as far as the map stays linear: the unrolled reference (soft thresholds, TV smoothed at a small "
              "eps) is nearly non-differentiable, and its sigma_1 can be large while its secant gain at the "
              "attack's budgets is small (python -m benchmarks.spectrum_locality); compare networks with the "
              "reference at a budget (worst-case attack, search = budget), not by sigma_1.")
    params = ("domain", "k_computed")

    def result_figures(self, ctx: Context) -> list[dict[str, Any]]:
        frame = execute(ctx.con, f"SELECT * FROM spectrum WHERE {ctx.live()}")
        if frame.empty:
            return []
        blocks: list[dict[str, Any]] = []
        paths = spectrum_curves(frame, ctx.figure_path("spectrum_sigma"), svg=ctx.doc.svg)
        blocks.append(ctx.doc.figure(paths, "sigma_k ||x|| / ||f(Ax)|| against k per network (solid), the unrolled "
                                            "reference (dashed) and H (dotted): median over images with the "
                                            "interquartile band. Values above 1 amplify a relative perturbation."))
        blocks.append(self.summary_table(ctx, frame))
        if "tensor_file" in frame and frame["tensor_file"].notna().any():
            first = frame[(frame["k"] == 1) & frame["tensor_file"].notna()].sort_values("sigma", ascending=False)
            picked = records(first.groupby("network", sort=True).head(1).head(MAX_WORST))
            if picked:
                paths = singular_vectors(ctx.store, picked, ctx.figure_path("spectrum_vectors"), svg=ctx.doc.svg)
                blocks += [h3("Top singular vectors"),
                           ctx.doc.figure(paths, "Per network, at its image with the largest sigma_1: the top right "
                                                 "singular vectors v_1 of the network, the reference and H (shared "
                                                 "diverging scale per image; measurement-domain vectors as "
                                                 "magnitudes): the perturbation the linearisation says hurts most.")]
        return blocks

    def summary_table(self, ctx: Context, frame: pd.DataFrame) -> dict[str, Any]:
        gains = budget_gains(ctx)
        rows = []
        for (network, domain), group in frame.groupby(["network", "domain"], sort=True):
            first = group[group["k"] == 1]
            bound = first["upper_bound"].dropna()
            bound_value = float(bound.iloc[0]) if len(bound) else None
            top = float(first["sigma"].max())
            gap = bound_value / top if bound_value is not None and top > 0 else None
            ref = first["ref_sigma_rel"].median() if "ref_sigma_rel" in first else None
            rows.append([network, domain, int(first["image_id"].nunique()), float(first["sigma"].median()),
                         float(first["sigma_rel"].median()), _median(ref),
                         float(first["effective_rank"].median()), bound_value, gap,
                         gains.get((network, domain))])
        return ctx.doc.table("Per network: median over images of sigma_1 and of sigma_1 relative (network, "
                             "reference), median effective rank (sum sigma)^2 / sum sigma^2 over the k computed, "
                             "the global upper bound and its ratio to the largest sigma_1 seen, and the best "
                             "budget-search gain at the smallest budget (attacks with search = 'budget'; – when "
                             "none ran).",
                             ["network", "domain", "images", "sigma_1", "sigma_1 rel", "reference sigma_1 rel",
                              "effective rank", "upper bound", "bound / max sigma_1", "best gain, smallest budget"],
                             rows, numeric=range(2, 10))


def _median(value: Any) -> float | None:
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else float(value)


def budget_gains(ctx: Context) -> dict[tuple[str, str], float]:
    """(network, domain) -> the largest gain at the smallest budget of the attacks table's budget searches."""
    if "attacks" not in ctx.known or not {"search", "budget", "gain", "domain"} <= ctx.columns("attacks"):
        return {}
    frame = execute(ctx.con, "SELECT network, domain, budget, gain FROM attacks WHERE search = 'budget' "
                             "AND budget IS NOT NULL AND gain IS NOT NULL")
    out = {}
    for key, group in frame.groupby(["network", "domain"]):
        smallest = group["budget"].min()
        out[key] = float(group.loc[group["budget"] == smallest, "gain"].max())
    return out


SECTION = SpectrumSection()


# -- figures --------------------------------------------------------------------------------------

def spectrum_curves(frame: pd.DataFrame, out: Path | str, *, svg: bool = False) -> list[Path]:
    """sigma_k (relative) against k, one panel per (network, domain): median over images and the
    interquartile band for the network, the reference and H where the rows carry them."""
    theme()
    groups = list(frame.groupby(["network", "domain"], sort=True))
    ncols = min(3, len(groups))
    nrows = math.ceil(len(groups) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.4 * ncols, 2.7 * nrows), squeeze=False)
    for ax, ((network, domain), group) in zip(axes.flat, groups):
        for column, label, style in TARGETS:
            if column not in group or group[column].isna().all():
                continue
            stats = group.groupby("k")[column].quantile([0.25, 0.5, 0.75]).unstack()
            ax.plot(stats.index, stats[0.5], style, label=label, lw=1.4)
            ax.fill_between(stats.index, stats[0.25], stats[0.75], alpha=0.2)
        ax.axhline(1.0, color="#999999", lw=0.8)
        ax.set_yscale("log")
        ax.set_title(f"{network} ({domain})")
        ax.set_xlabel("k")
        ax.set_ylabel("sigma_k ||x|| / ||f(Ax)||")
    for ax in list(axes.flat)[len(groups):]:
        ax.set_visible(False)
    axes.flat[0].legend(loc="best")
    fig.tight_layout()
    return save_figure(fig, out, svg)


def singular_vectors(store: Path | str, rows: Sequence[dict[str, Any]], out: Path | str, *,
                     svg: bool = False) -> list[Path]:
    """One line per row (k = 1 rows): v_1 of the network, the reference and H, where kept."""
    theme()
    names = (("v", "network v_1"), ("ref_v", "reference v_1"), ("h_v", "H v_1"))
    fig, axes = plt.subplots(len(rows), 3, figsize=(6.2, 2.1 * len(rows) + 0.3), squeeze=False)
    for i, row in enumerate(rows):
        kept = row_tensors(store, row)
        for j, (name, title) in enumerate(names):
            ax = axes[i, j]
            if name not in kept:
                panel(ax, None, title if i == 0 else "")
                continue
            image = as_image(kept[name])
            lim = float(np.abs(image).max()) or 1.0
            panel(ax, image, title if i == 0 else "", f"{row['network']}" if j == 0 else "", cmap="RdBu_r",
                   vmin=-lim, vmax=lim)
    fig.tight_layout()
    return save_figure(fig, out, svg)
