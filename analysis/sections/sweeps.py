"""Report section of the `sweeps` table: nested sampling patterns at increasing ratios (or views).

Default bad outcome: a PSNR curve that falls by more than 1 dB from its peak at the most samples; PSNR
against the sampling level per network with a bootstrap band.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import seaborn as sns

from survey.analysis.db import execute
from survey.analysis.figures import NETWORK_STYLE, PSNR_CAP, save_figure, theme, plt
from survey.analysis.sections.base import SEED, Context, Definition, Section, p

#: Resamples of the bootstrap band in the sweep figure (a figure, not a published number).
FIGURE_BOOT = 500

DEFINITIONS = (
    Definition(
        "sweep-falls", "sweeps", "Quality falls as samples grow",
        bad="y_end < y_peak - 1", where="axis IN ('ratio', 'views') AND isfinite(psnr)", per="curve",
        x="value", y="psnr", reference_y="ref_psnr",
        reference_where="axis IN ('ratio', 'views') AND isfinite(ref_psnr)", reference_column="ref_psnr",
        unit="curve",
        rationale="One PSNR-against-sampling curve per image. A curve is bad when the PSNR at the most "
                  "samples is more than 1 dB below the curve's peak: more data made the image worse, a sign "
                  "that the network is tied to its training sampling pattern. Networks that read only their "
                  "trained sampling points (AUTOMAP) have fixed sampling by construction: more samples cannot "
                  "reach them, so they are left out (no network PSNR is recorded for them). Noise-level "
                  "(denoising) sweeps are shown in the figures only."),
)


class SweepsSection(Section):
    table = "sweeps"
    title = "Sampling sweep"
    method = ("Sampling sweep: nested sampling patterns at increasing ratios (or more projection views); PSNR of "
              "the network, the reference and zero-filling against the truth.")
    params = ("axis", "train_value", "mask", "forward")
    definitions = DEFINITIONS

    def result_figures(self, ctx: Context) -> list[dict[str, Any]]:
        frame = execute(ctx.con, "SELECT * FROM sweeps")
        if frame.empty:
            return []
        notes = [p(text, "definition") for text in sweep_notes(frame)]
        paths = sweep_curves(frame, ctx.figure_path("sweep_psnr"), n_boot=FIGURE_BOOT, seed=ctx.seed, svg=ctx.doc.svg)
        return notes + [ctx.doc.figure(paths, "PSNR against the sampling level per network: mean over images with a 95% "
                                      f"bootstrap band ({FIGURE_BOOT} resamples, seed {ctx.seed}); network (solid), "
                                      "compressed-sensing reference (dashed), zero-filled H(y) (dotted); the red "
                                      "line marks the level the network was trained at. PSNR above "
                                      f"{PSNR_CAP:g} dB (exact recovery) is drawn at {PSNR_CAP:g} dB.")]


SECTION = SweepsSection()


def sweep_notes(frame: pd.DataFrame) -> list[str]:
    """Sentences for the section: networks with fixed sampling by construction, finer forward models used."""
    notes = []
    if "fixed_sampling" in frame:
        fixed = sorted(frame.loc[frame["fixed_sampling"].fillna(False).astype(bool), "network"].unique())
        if fixed:
            notes.append(f"Fixed sampling by construction: {', '.join(map(str, fixed))} read(s) only the sampling "
                         "points it was trained on (found by probe or declared), so more samples cannot change its "
                         "output; it is left out of the more-samples claim and its panel shows the reference and "
                         "H(y) only.")
    if "forward" in frame:
        finer = sorted(frame.loc[frame["forward"] == "finer", "network"].unique())
        if finer:
            notes.append(f"Finer forward model: the measurements of {', '.join(map(str, finer))} come from the "
                         "operator at twice the resolution (the image as square pixels, two sub-rays per detector "
                         "bin), not from the operator the network and the reference reconstruct with, so these "
                         "sweeps are not an inverse crime.")
    if "mask" in frame:
        masks = frame.dropna(subset=["mask"]).groupby("network")["mask"].unique()
        spelled = [f"{net}: {', '.join(map(str, kinds))}" for net, kinds in masks.items()]
        if spelled:
            notes.append(f"Sampling patterns swept (nested across levels): {'; '.join(spelled)}.")
    return notes


# -- figures --------------------------------------------------------------------------------------

def sweep_curves(frame: pd.DataFrame, out: Path | str, *, n_boot: int = FIGURE_BOOT, seed: int = SEED,
                 svg: bool = False) -> list[Path]:
    """PSNR against the sampling level per network (one panel each), mean with a 95% band over images:
    the network, the reference (CS) and zero-filled H(y); a vertical line marks the training level.

    frame: sweep rows with network, value (ratio / views / sigma), axis, train_value, psnr and
    optionally ref_psnr, h_psnr. PSNR above PSNR_CAP dB is drawn at the cap. n_boot / seed: seaborn's
    bootstrap of the band.
    """
    theme()
    if frame.empty:
        raise ValueError("sweep_curves needs at least one row")
    parts = [frame.assign(solver="network", y=frame["psnr"])]
    for column, name in (("ref_psnr", "reference (CS)"), ("h_psnr", "zero-filled H(y)")):
        if column in frame and frame[column].notna().any():
            parts.append(frame.assign(solver=name, y=frame[column]))
    long = pd.concat(parts, ignore_index=True)
    long = long[np.isfinite(long["y"].astype(float))]
    long["y"] = long["y"].clip(upper=PSNR_CAP)
    networks = sorted(frame["network"].unique())
    ncols = min(3, len(networks))
    nrows = (len(networks) + ncols - 1) // ncols
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.7 * ncols, 3.0 * nrows), squeeze=False, sharey=True)
    order = [s for s in NETWORK_STYLE if s in set(long["solver"])]
    palette = dict(zip(NETWORK_STYLE, sns.color_palette("colorblind", 3)))
    for ax, name in zip(axes.flat, networks):
        sub = long[long["network"] == name]
        sns.lineplot(data=sub, x="value", y="y", hue="solver", style="solver", hue_order=order, style_order=order,
                     dashes={k: ("" if v == "-" else (4, 2) if v == "--" else (1, 2)) for k, v in
                             NETWORK_STYLE.items() if k in order},
                     palette=palette, errorbar=("ci", 95), seed=seed, n_boot=n_boot, marker="o", markersize=4,
                     ax=ax, legend=ax is axes.flat[0])
        train = sub["train_value"].dropna().unique()
        for value in train:
            ax.axvline(float(value), color="#b03a2e", lw=1.0, ls="-.", alpha=0.8)
            ax.text(float(value), 0.02, " training", color="#b03a2e", fontsize=7, rotation=90,
                    transform=ax.get_xaxis_transform(), va="bottom")
        axis = str(sub["axis"].iloc[0]) if "axis" in sub else "value"
        ax.set_xlabel({"ratio": "sampling ratio", "views": "projection views",
                       "sigma": "noise level σ"}.get(axis, axis))
        ax.set_ylabel("PSNR (dB)")
        fixed = "fixed_sampling" in sub and sub["fixed_sampling"].fillna(False).astype(bool).any()
        ax.set_title(f"{name} (fixed sampling)" if fixed else name)
    for ax in axes.flat[len(networks):]:
        ax.axis("off")
    if axes.flat[0].get_legend() is not None:
        sns.move_legend(axes.flat[0], "upper left", title=None, frameon=True)
    fig.tight_layout()
    return save_figure(fig, out, svg)
