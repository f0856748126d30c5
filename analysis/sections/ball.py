"""Report section of the `ball` table: the Gaussian ball around the worst case (paper Fig. 2).

Default bad outcome: a point of the ball is itself a bad perturbation (point_gain >= 2), per radius, for the
network, the reference and H on the same draws (the old 'artefact persists' rule is no evidence: the identity
passes it); P(bad point) against the radius; per network, the centre with the largest artefact, a noisy draw and both artefacts.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch

from survey.analysis.db import execute
from survey.analysis.figures import as_image, fmt, interval_plot, panel, save_figure, theme, plt, row_tensors
from survey.analysis.sections.base import MAX_WORST, Context, Definition, Section, h3, percent, records

DEFINITIONS = (
    Definition(
        "ball-point-gain", "ball", "Bad points in the Gaussian ball",
        bad="point_gain >= 2",
        where="center = 'worst-case' AND point_gain IS NOT NULL", by=("radius",), per="row", unit="draw",
        reference_bad="ref_point_gain >= 2",
        reference_where="center = 'worst-case' AND ref_point_gain IS NOT NULL",
        reference_column="ref_point_gain",
        rationale="A draw v around a worst-case perturbation r is bad when the ball point is itself a bad "
                  "perturbation: its own gain (||f(y + A(r + v)) - f(y)|| / ||f(y)||) / (||r + v|| / ||x||) is at "
                  "least 2, twice what a faithful method does. The same draws go to the reference (its first "
                  "draws) and to H (next table), so network, reference and H are compared on the same points. "
                  "This replaces 'the artefact persists' (output change >= half the centre's, cosine with the "
                  "centre's artefact >= 0.5): that rule holds for any smooth map, the identity and a Tikhonov "
                  "smoother included, so it is not evidence of instability (tests/test_ball_controls.py). "
                  "The radius is ||v|| / ||r|| (the paper uses 1/4). Draws of one image are correlated, so the "
                  "primary interval is cluster-exact: it speaks for the population of images (the mean over "
                  "images of each image's P(bad point)), where the binomial intervals would count correlated "
                  "draws as independent."),
    Definition(
        "ball-point-gain-h", "ball", "Bad points in the Gaussian ball for H (control)",
        bad="h_point_gain >= 2",
        where="center = 'worst-case' AND h_point_gain IS NOT NULL", by=("radius",), per="row", unit="draw",
        rationale="The same question for H, the easy linear reconstruction (A* or FBP), on the same ball points "
                  "around the network's worst case: what a method without learned components does there."),
)


class BallSection(Section):
    table = "ball"
    title = "Gaussian ball"
    method = ("Gaussian ball around the worst case: complex Gaussian e in measurement space, v = A*e rescaled to "
              "||v|| = radius · ||r||; is the point x + r + v itself a bad perturbation (its own gain >= 2), for the "
              "network, H and the reference on the same draws?")
    params = ("center", "level", "attack", "noise_domain", "radius_kind", "radius", "draws")
    definitions = DEFINITIONS

    def definition_figure(self, ctx: Context, definition: Definition, found) -> dict | None:
        primary = [r for r in found["network"] if r["primary"]]
        if definition.key != "ball-point-gain" or len({r["radius"] for r in primary}) < 2:
            return None
        hue = "network" if "dataset" not in primary[0] else "group"
        shown = [dict(r, group=f"{r['network']}, {r['dataset']}") for r in primary] if hue == "group" else primary
        methods = sorted({r["method"] for r in primary})
        paths = ball_curves(shown, ctx.figure_path("ball_point_gain"), method="primary", hue=hue, svg=ctx.doc.svg)
        return ctx.doc.figure(paths, "P(point gain >= 2) against the ball radius ||v|| / ||r||, per network"
                                     f"{' and dataset' if hue == 'group' else ''}; points are the estimates and bands "
                                     f"the {percent(definition.confidence)} primary intervals "
                                     f"({', '.join(methods)}).")

    def worst(self, ctx: Context) -> list[dict[str, Any]]:
        if "tensor_file" not in ctx.columns("ball"):
            return []
        frame = execute(ctx.con, "SELECT * FROM ball WHERE center = 'worst-case' AND tensor_file IS NOT NULL "
                                 f"AND {ctx.live()}")
        if frame.empty:
            return []
        # the radius index of each row inside its unit: rows are image-major, then radius, then draw
        order = frame.groupby(["unit_id", "image_id", "radius"])["tensor_index"].min().reset_index()
        order["radius_index"] = (order.groupby(["unit_id", "image_id"])["tensor_index"].rank(method="dense")
                                 .astype(int) - 1)
        frame = frame.merge(order[["unit_id", "image_id", "radius", "radius_index"]],
                            on=["unit_id", "image_id", "radius"])
        first = frame[frame["draw"] == 0]
        radius = 0.25 if (first["radius"] == 0.25).any() else float(first["radius"].min())
        first = first[first["radius"] == radius].sort_values("center_change_rel", ascending=False)
        picked = first.groupby("network", sort=True).head(1).head(MAX_WORST)
        x_by_id = {}
        rows = records(picked)
        for row in rows:
            size = int(row_tensors(ctx.store, row, ("clean_out",))["clean_out"].shape[-1])
            x = ctx.truths.get(row["dataset"], row["image_id"], size) if ctx.truths is not None else None
            if x is not None:
                x_by_id[(row["network"], row["image_id"])] = x
        paths = ball_grid(ctx.store, rows, ctx.figure_path("ball_examples"), truths=x_by_id, svg=ctx.doc.svg)
        return [h3("Gaussian ball around the worst case"),
                ctx.doc.figure(paths, f"Per network, the centre with the largest artefact at radius ||v|| = "
                                      f"{radius:g} ||r||: the clean reconstruction f(y), the worst case f(y + Ar), "
                                      "one noisy draw, and the artefacts relative to f(y) (shared diverging scale "
                                      "per line).")]


SECTION = BallSection()


# -- figures --------------------------------------------------------------------------------------

def ball_grid(store: Path | str, rows: Sequence[Mapping[str, Any]], out: Path | str, *,
              truths: Mapping[tuple[str, str], torch.Tensor] | None = None, svg: bool = False) -> list[Path]:
    """Gaussian-ball persistence, one line per row (one centre each): f(y), f(y + A r), one draw
    f(y + A r + A v), and the artefacts f(y + A r) - f(y) and f(y + A r + A v) - f(y) on a shared
    diverging scale. truths: (network, image_id) -> x, for an extra x + r panel when the centre is
    image-domain (keyed by network too: networks of one study may see one image at different sizes).
    """
    theme()
    if not rows:
        raise ValueError("ball_grid needs at least one row")
    truths = truths or {}
    lead = 1 if any((r["network"], r["image_id"]) in truths for r in rows) else 0
    ncols = 5 + lead
    fig, axes = plt.subplots(len(rows), ncols, figsize=(1.9 * ncols + 0.6, 2.0 * len(rows) + 0.3), squeeze=False)
    for i, row in enumerate(rows):
        k = row_tensors(store, row, ("r", "clean_out", "center_out", "first_draw_out"))
        first = k["first_draw_out"]
        if first.ndim > k["clean_out"].ndim:  # one first draw per radius: pick this row's radius
            first = first[int(row.get("radius_index") or 0)]
        clean, centre, draw = as_image(k["clean_out"]), as_image(k["center_out"]), as_image(first)
        a1, a2 = centre - clean, draw - clean
        lim = float(max(np.abs(a1).max(), np.abs(a2).max())) or 1.0
        head = i == 0
        if lead:
            x = truths.get((row["network"], row["image_id"]))
            xr = as_image(x) + as_image(k["r"]) if x is not None and k["r"].shape == k["clean_out"].shape else None
            panel(axes[i, 0], xr, "x + r" if head else "")
        panel(axes[i, lead], clean, "f(y)" if head else "", f"PSNR {fmt(row.get('psnr_clean'))} dB")
        panel(axes[i, lead + 1], centre, "f(y + Ar)" if head else "", f"PSNR {fmt(row.get('psnr_center'))} dB")
        panel(axes[i, lead + 2], draw, "f(y + Ar + Av), one draw" if head else "")
        panel(axes[i, lead + 3], a1, "artefact of r" if head else "", cmap="RdBu_r", vmin=-lim, vmax=lim)
        shown = panel(axes[i, lead + 4], a2, "artefact with noise v" if head else "", cmap="RdBu_r",
                       vmin=-lim, vmax=lim)
        bar = fig.colorbar(shown, cax=axes[i, lead + 4].inset_axes([1.04, 0.0, 0.06, 1.0]))
        bar.ax.tick_params(labelsize=6)
        axes[i, 0].set_ylabel(f"{row['network']}\n{row['image_id']}\n‖v‖ = {row.get('radius', '-')}·‖r‖",
                              fontsize=7)
    return save_figure(fig, out, svg)



def ball_curves(estimates: Sequence[Mapping[str, Any]], out: Path | str, *, x: str = "radius",
                ylabel: str = "P(point gain ≥ 2)", method: str = "clopper-pearson", hue: str = "network",
                svg: bool = False) -> list[Path]:
    """P(bad) against the ball radius per `hue` group, the band being the `method` interval ("primary": each
    group's primary interval; the point is the row's `p`, so give rows whose `p` is the primary's estimate).

    estimates: rows of `estimate(..., by=["network", x])` (all methods; `method` is picked here).
    """
    if method == "primary":
        estimates = [dict(e, p=e.get("point", e.get("p"))) for e in estimates]
    return interval_plot(estimates, x, out, xlabel="radius ‖v‖ / ‖r‖", ylabel=ylabel, method=method, hue=hue,
                          svg=svg)
