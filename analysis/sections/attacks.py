"""Report section of the `attacks` table: worst-case perturbation search (Antun et al., Algorithms 1 and 2).

Default bad outcomes (amplification, PSNR loss) per image and level, the instability curves, and the
worst case per network as a paper-style grid (x + r_j, f(A(x + r_j)), the reference, |r_j|). Beside the
paper's snapshots, the worst case at matched budgets (search = 'budget'): network, reference and H searched
alike on the same images, with the paired per-image gain ratio network / reference and its t interval over
images (`survey.analysis.paired`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd
import seaborn as sns
import torch

from survey.analysis.db import execute
from survey.analysis.paired import paired_gain_ratio
from survey.analysis.recompute import call
from survey.analysis.figures import NETWORK_STYLE, as_image, fmt, panel, save_figure, theme, plt, row_tensors
from survey.analysis.sections.base import (CONFIDENCE, MAX_WORST, Context, Definition, Section, format_interval,
                                           format_number, h3, p,
                                           percent, records, slug)

DEFINITIONS = (
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
        "attack-budget-gain", "attacks", "Amplified worst case at a budget",
        bad="gain >= 2",
        where="search = 'budget' AND attacked = 'network'", by=("budget",), per="image",
        reference_bad="gain >= 2",
        reference_where="search = 'budget' AND attacked = 'reference'",
        reference_column="search", unit="image",
        rationale="An image is bad at a budget eps when the worst perturbation with ||r|| <= eps ||x|| found by "
                  "the budget search (projected ascent, several starts, best kept) has gain >= 2: the output moves "
                  "at least twice as much as the input, relatively. Unlike the paper's snapshots of a diverging "
                  "ascent, these are worst cases at a stated budget; the reference rows are the reference's own "
                  "worst case with the same search, budgets, iterations, starts and images (not the network's "
                  "perturbation transferred)."),
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
)


class AttacksSection(Section):
    table = "attacks"
    title = "Worst-case attack"
    method = ("Worst-case perturbation search (Antun et al., Algorithms 1 and 2): gradient ascent with momentum on "
              "Q(r) = ½||f(A(x + r)) − p(x)||² − λ/2 ||r||², snapshots where ||r|| / ||x|| first crosses each "
              "level. "
              "The reference solver is run on the same perturbed data.")
    params = ("attacked", "preset", "lam", "gamma", "eta", "tau", "p", "domain", "gradient", "support",
              "max_iterations", "restarts")
    definitions = DEFINITIONS

    def definition_figure(self, ctx: Context, definition: Definition, found) -> dict | None:
        if definition.key != "attack-amplification":
            return None
        frame = execute(ctx.con, "SELECT * FROM attacks WHERE snapshot = 'level' AND attacked = 'network'")
        finite = frame[_finite(frame["r_rel"]) & _finite(frame["out_change_rel"])] if not frame.empty else frame
        if finite.empty:
            return p(f"No instability curves: none of the {len(frame)} level snapshot rows has a finite ‖r‖/‖x‖ "
                     "and output change." if len(frame) else "No level snapshots to draw instability curves from.",
                     "not-run") if len(frame) else None
        paths = instability_curves(finite, ctx.figure_path("instability_curves"), svg=ctx.doc.svg)
        return ctx.doc.figure(paths, "Instability curves: relative output change against relative perturbation "
                                     "size, network (solid) and reference on the same perturbed data (dashed); "
                                     "points are samples, lines binned means, the dotted diagonal is a gain of 1.")

    def result_figures(self, ctx: Context) -> list[dict[str, Any]]:
        """The worst case at matched budgets: network beside reference and H, with the paired ratio."""
        if not {"search", "budget", "gain"} <= ctx.columns("attacks"):
            return []
        by = [c for c in ("network", "domain", "budget") if c in ctx.columns("attacks")]
        versus_ref = paired_gain_ratio(ctx.con, by=by, n_boot=ctx.n_boot, seed=ctx.seed)
        versus_h = {tuple(r[c] for c in by): r for r in paired_gain_ratio(ctx.con, by=by, denominator="H",
                                                                          n_boot=ctx.n_boot, seed=ctx.seed)}
        if not versus_ref and not versus_h:
            return []
        levelled = self._levelled(ctx, by)
        body = []
        for r in versus_ref or list(versus_h.values()):
            key = tuple(r[c] for c in by)
            h = versus_h.get(key, {})
            body.append([*(r[c] for c in by), r["images"], r["network_median"], r.get("reference_median"),
                         h.get("H_median"), r["ratio"] if versus_ref else None,
                         format_interval(r["ci_low"], r["ci_high"]) if versus_ref else "–",
                         r["share_above_1"] if versus_ref else None, h.get("ratio"),
                         " / ".join(format_number(levelled.get((*key, who))) for who in ("network", "reference")),
                         f"{format_number(r['p_holm'])}: {r['direction']}" if versus_ref else "–",
                         (f"{r['dropped']} ({'; '.join(r['dropped_reasons'])})" if r.get("dropped") else "0")
                         if versus_ref else "–"])
        command = f"survey estimate --paired --table attacks --store {ctx.given}"
        for key, rows, versus in (("attacks:paired", versus_ref, "reference"), ("attacks:paired-H", versus_h, "H")):
            ctx.computed[key] = {"by": by, "network": list(rows.values() if isinstance(rows, dict) else rows),
                                 "reference": [], "commands": {"network": command} if versus == "reference" else {},
                                 "calls": {"network": call("paired_gain_ratio", table="attacks", by=by,
                                                           denominator=versus, n_boot=ctx.n_boot, seed=ctx.seed)}}
        return [h3("Worst case at matched budgets"),
                ctx.doc.table("Worst case at each budget (||r|| <= eps ||x||; ||e|| <= eps ||Ax|| in the measurement "
                              "domain), network beside the reference's and H's own worst cases found by the same "
                              "search on the same images: median gains, and the paired per-image ratio gain_network / "
                              "gain_reference (geometric mean over images) with its t interval on the per-image log ratios "
                              "(the image bootstrap is too narrow with few images).",
                              [*by, "images", "gain network (median)", "gain reference (median)",
                               "gain H (median)", "ratio network / reference", f"{percent(CONFIDENCE)} interval",
                               "share of images with ratio > 1", "ratio network / H",
                               "levelled off: network / reference", "sign-flip p (Holm): direction",
                               "images dropped"], body,
                              numeric=range(len(by), len(by) + 8),
                              note="Interval: Student's t on the per-image log ratios (m - 1 degrees of "
                                   "freedom); the unit of independence is the image (its network, reference and H gains move together). "
                                   "gain = relative output change / relative perturbation size; 1 is what a faithful "
                                   "method does. Levelled off: the median over images of the gain at half the "
                                   "iterations over the gain at the end (1: the search had converged; below 1 "
                                   "it was still climbing, and that side's gain is a lower bound). Sign-flip p: the "
                                   "exact two-sided sign-flip test of no difference, Holm-adjusted over every row "
                                   "of this table; a direction is named only when it is at most "
                                   f"{percent(1 - CONFIDENCE)} (with m images no p falls below 2 / 2^m). Images "
                                   "dropped: without a positive finite gain on both sides, with the reason.",
                              commands=[command])]

    @staticmethod
    def _levelled(ctx: Context, by: Sequence[str]) -> dict[tuple, float]:
        """(*by, attacked) -> median over the budget rows of gain_at_50 / gain_at_100 (convergence)."""
        if not {"gain_at_50", "gain_at_100", "attacked"} <= ctx.columns("attacks"):
            return {}
        keys = ", ".join([*by, "attacked"])
        frame = execute(ctx.con, f"SELECT {keys}, median(gain_at_50 / gain_at_100) AS levelled FROM attacks "
                                 f"WHERE search = 'budget' AND gain_at_100 > 0 AND {ctx.live()} GROUP BY {keys}")
        return {tuple(row[:-1]): float(row[-1]) for row in frame.itertuples(index=False)}

    def worst(self, ctx: Context) -> list[dict[str, Any]]:
        if "tensor_file" not in ctx.columns("attacks"):
            return []
        cols = ctx.columns("attacks")
        gain = "" if "gain" in cols else ", out_change_rel / r_rel AS gain"
        paper = " AND (search IS NULL OR search = 'paper')" if "search" in cols else ""
        frame = execute(ctx.con, f"SELECT *{gain} FROM attacks WHERE attacked = 'network' "
                                 f"AND tensor_file IS NOT NULL AND r_rel > 0{paper} AND {ctx.live()}")
        if frame.empty:
            return []
        doc = ctx.doc
        worst = frame.sort_values("gain", ascending=False).groupby("network", sort=True).head(1).head(MAX_WORST)
        blocks = [h3("Worst-case perturbations")]
        table_rows = []
        for w in records(worst):
            sample = frame[(frame["unit_id"] == w["unit_id"]) & (frame["image_id"] == w["image_id"])
                           & (frame["restart"] == w["restart"])]
            sample = sample[sample["snapshot"] == "level"] if (sample["snapshot"] == "level").any() else sample
            size = int(row_tensors(ctx.store, w, ("out",))["out"].shape[-1])
            x = ctx.truths.get(w["dataset"], w["image_id"], size) if ctx.truths is not None else None
            paths = attack_grid(ctx.store, records(sample), ctx.figure_path(f"attack_{slug(w['network'])}"),
                                x=x, svg=doc.svg)
            blocks.append(doc.figure(paths, f"{w['network']}, image {w['image_id']}: the sample with the largest "
                                            f"gain ({format_number(w['gain'])}). Columns: increasing perturbations "
                                            "r_j; rows: x + r_j, the network's reconstruction f(A(x + r_j)), the "
                                            "reference on the same data, and |r_j| (shared scale). PSNR against x "
                                            "in the corners."))
            table_rows.append([w["network"], w["image_id"], w["r_rel"], w["out_change_rel"], w["gain"],
                               w.get("ref_out_change_rel"), w.get("psnr_clean"), w.get("psnr"),
                               w.get("psnr_visibility")])
        blocks.append(doc.table("The worst case per network (largest gain = relative output change / relative "
                                "perturbation).", ["network", "image", "‖r‖/‖x‖", "output change", "gain",
                                                   "reference change", "PSNR clean (dB)", "PSNR attacked (dB)",
                                                   "PSNR(x + r, x) (dB)"], table_rows, numeric=range(2, 9)))
        paths = perturbation_maps(ctx.store, records(worst), ctx.figure_path("perturbation_maps"), svg=doc.svg)
        blocks.append(doc.figure(paths, "Magnitude |r| of the worst perturbation per network (own colour scale "
                                        "each)."))
        return blocks


SECTION = AttacksSection()


# -- figures --------------------------------------------------------------------------------------

def attack_grid(store: Path | str, rows: Sequence[Mapping[str, Any]], out: Path | str, *,
                x: torch.Tensor | None = None, title: str | None = None, svg: bool = False) -> list[Path]:
    """Paper-style grid of one attacked sample at increasing snapshots r_1 < r_2 < ...

    rows: attack rows of one (unit_id, image_id, restart), any order (sorted by r_rel here).
    Columns: the snapshots; rows of panels: x + r_j, the network's f(A(x + r_j)), the reference on
    the same data (when kept), and |r_j| (shared colour scale). x: the ground truth (n, n) or None;
    when given it heads an extra first column. A measurement-domain r is shown as log10(1 + |e|).
    """
    theme()
    rows = sorted(rows, key=lambda r: float(r["r_rel"]))
    if not rows:
        raise ValueError("attack_grid needs at least one row")
    kept = [row_tensors(store, r, ("r", "out", "ref_out")) for r in rows]
    has_ref = all("ref_out" in k for k in kept)
    out_shape = tuple(kept[0]["out"].shape)
    image_domain = tuple(kept[0]["r"].shape) == out_shape
    x_img = as_image(x) if x is not None else None
    labels = ["x + r" if image_domain else "|e| (log)", "network f(A(x + r))"]
    labels += ["reference (CS)"] if has_ref else []
    labels += ["|r|"] if image_domain else []
    lead = 1 if x_img is not None else 0
    ncols, nrows = len(rows) + lead, len(labels)
    fig, axes = plt.subplots(nrows, ncols, figsize=(1.6 * ncols + 0.6, 1.65 * nrows + 0.4), squeeze=False)
    r_maps = [as_image(k["r"]) for k in kept]
    r_max = max(float(np.abs(m).max()) for m in r_maps) or 1.0
    shown_r = None
    for j, (row, k) in enumerate(zip(rows, kept)):
        c = j + lead
        head = f"‖r‖/‖x‖ = {100 * float(row['r_rel']):.1f}%\niteration {row.get('iteration', '-')}"
        line = 0
        if image_domain:
            base = x_img if x_img is not None else None
            xr = base + r_maps[j] if base is not None else None
            panel(axes[line, c], xr, head, f"PSNR(x+r, x) {fmt(row.get('psnr_visibility'))} dB")
            if xr is None:
                axes[line, c].text(0.5, 0.5, "x not available", ha="center", va="center", fontsize=7,
                                   transform=axes[line, c].transAxes, color="#777777")
        else:
            panel(axes[line, c], np.log10(1 + r_maps[j]), head, cmap="magma", vmin=None, vmax=None)
        line += 1
        panel(axes[line, c], as_image(k["out"]), note=f"PSNR {fmt(row.get('psnr'))} dB")
        line += 1
        if has_ref:
            panel(axes[line, c], as_image(k["ref_out"]), note=f"PSNR {fmt(row.get('ref_psnr'))} dB")
            line += 1
        if image_domain:
            shown_r = panel(axes[line, c], np.abs(r_maps[j]), cmap="magma", vmin=0.0, vmax=r_max)
    if lead:
        panel(axes[0, 0], x_img, "x (ground truth)")
        first = rows[0]
        notes = [f"clean PSNR\nnetwork {fmt(first.get('psnr_clean'))} dB"]
        if has_ref:
            notes.append(f"reference {fmt(first.get('ref_psnr_clean'))} dB")
        for i in range(1, nrows):
            panel(axes[i, 0], None)
        axes[1, 0].text(0.5, 0.5, "\n".join(notes), ha="center", va="center", fontsize=7.5,
                        transform=axes[1, 0].transAxes, color="#333333")
    for i, label in enumerate(labels):
        axes[i, lead].set_ylabel(label, fontsize=8)
    if shown_r is not None:
        bar = fig.colorbar(shown_r, cax=axes[-1, -1].inset_axes([1.04, 0.0, 0.06, 1.0]))
        bar.ax.tick_params(labelsize=7)
    if title:
        fig.suptitle(title, fontsize=9, y=1.0)
    return save_figure(fig, out, svg)



def perturbation_maps(store: Path | str, rows: Sequence[Mapping[str, Any]], out: Path | str, *,
                      svg: bool = False) -> list[Path]:
    """|r| of several worst-case perturbations side by side, each with its own colour bar.

    rows: attack (or ball) rows owning an `r` tensor; the panel title names network, image and r_rel.
    """
    theme()
    if not rows:
        raise ValueError("perturbation_maps needs at least one row")
    fig, axes = plt.subplots(1, len(rows), figsize=(2.6 * len(rows), 2.5), squeeze=False)
    fig.subplots_adjust(wspace=0.55)
    for ax, row in zip(axes[0], rows):
        r = row_tensors(store, row, ("r",))["r"]
        image = as_image(r)
        measured = tuple(r.shape) != tuple(row_tensors(store, row, ("out",)).get("out", r).shape)
        shown = panel(ax, np.log10(1 + image) if measured else image,
                       f"{row['network']} · {row['image_id']}\n‖r‖/‖x‖ = {100 * float(row['r_rel']):.1f}%",
                       cmap="magma", vmin=0.0, vmax=None)
        bar = fig.colorbar(shown, cax=ax.inset_axes([1.04, 0.0, 0.06, 1.0]))
        bar.ax.tick_params(labelsize=7)
    return save_figure(fig, out, svg)


def _finite(column: pd.Series) -> pd.Series:
    """True where the value is a finite number (NULL, NaN, Inf and text are not)."""
    return pd.Series(np.isfinite(pd.to_numeric(column, errors="coerce").astype(float)), index=column.index)


def instability_curves(frame: pd.DataFrame, out: Path | str, *, svg: bool = False) -> list[Path]:
    """Relative output change against relative perturbation size, one panel per network.

    frame: attack rows with network, r_rel, out_change_rel and optionally ref_out_change_rel (the
    reference on the same perturbed data). Points are samples; lines are binned means. The dotted
    diagonal is a gain of 1 (output moves as much as the input, relatively).
    """
    theme()
    if frame.empty:
        raise ValueError("instability_curves needs at least one row")
    parts = [frame.assign(solver="network", change=frame["out_change_rel"])]
    if "ref_out_change_rel" in frame and frame["ref_out_change_rel"].notna().any():
        parts.append(frame.assign(solver="reference (CS)", change=frame["ref_out_change_rel"]))
    long = pd.concat(parts, ignore_index=True)
    long = long[_finite(long["change"]) & _finite(long["r_rel"])]
    networks = sorted(long["network"].unique())
    if not networks:
        raise ValueError("instability_curves: no row has a finite r_rel and output change")
    ncols = min(3, len(networks))
    nrows = (len(networks) + ncols - 1) // ncols
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.6 * ncols, 3.0 * nrows), squeeze=False, sharey=True)
    colors = dict(zip(["network", "reference (CS)"], sns.color_palette("colorblind", 2)))
    for ax, name in zip(axes.flat, networks):
        sub = long[long["network"] == name]
        top = float(max(sub["r_rel"].max(), 1e-6))
        ax.plot([0, top], [0, top], ls=":", color="#888888", lw=0.8, label="gain 1")
        for solver, group in sub.groupby("solver", sort=False):
            ax.scatter(group["r_rel"], group["change"], s=9, alpha=0.45, color=colors[solver], edgecolors="none")
            binned = group.assign(bin=pd.cut(group["r_rel"], bins=min(8, max(2, group["r_rel"].nunique())),
                                             duplicates="drop"))
            means = binned.groupby("bin", observed=True)[["r_rel", "change"]].mean()
            ax.plot(means["r_rel"], means["change"], color=colors[solver], lw=1.6,
                    ls=NETWORK_STYLE.get(solver, "-"), label=solver)
        ax.set_title(name)
        ax.set_xlabel("‖r‖ / ‖x‖")
        ax.set_xlim(left=0)
        ax.set_ylim(bottom=0)
    for ax in axes.flat[len(networks):]:
        ax.axis("off")
    axes[0, 0].set_ylabel("‖f(A(x+r)) − f(Ax)‖ / ‖f(Ax)‖")
    axes.flat[0].legend(loc="upper left", frameon=True)
    fig.tight_layout()
    return save_figure(fig, out, svg)
