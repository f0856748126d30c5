"""Report section of the `insertions` table: structural details (symbols, text, a heart, blobs) drawn into x.

Default bad outcome: the detail is lost (not recovered), per detail; recovery rates of the network and the
reference pooled over details; per network, the two insertions with the lowest correlation.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd
import seaborn as sns

from survey.analysis.db import execute
from survey.analysis.estimate import clopper_pearson, estimate
from survey.analysis.figures import _as_image, _fmt, _panel, _save, _theme, plt, row_tensors
from survey.analysis.sections.base import MAX_WORST, Context, Definition, Section, h3, percent, records

DEFINITIONS = (
    Definition(
        "insertion-lost", "insertions", "Structural detail lost",
        bad="NOT recovered", by=("detail",), per="row", reference_bad="NOT ref_recovered",
        reference_where="ref_recovered IS NOT NULL", reference_column="ref_recovered", unit="insertion",
        rationale="An inserted detail is lost when the change it causes in the output does not look like it "
                  "(correlation < the row's corr_threshold, default 0.5) or keeps less than contrast_threshold "
                  "(default 0.5) of its contrast. Each placement is a trial."),
)


class InsertionsSection(Section):
    table = "insertions"
    title = "Structural insertions"
    method = ("Structural insertions: a detail d (symbol, text, blob) drawn into x; is it visible in f(A(x + d)) "
              "− f(Ax)?")
    params = ("detail", "size", "contrast", "position", "corr_threshold", "contrast_threshold")
    definitions = DEFINITIONS

    def definition_figure(self, ctx: Context, definition: Definition, found) -> dict | None:
        if definition.key != "insertion-lost":
            return None
        # all details pooled: re-estimated per network (and dataset), so that the pooled placements of one image
        # stay one cluster (adding Clopper-Pearson counts over details would treat them as independent)
        by = [c for c in ("network", "dataset") if found["network"] and c in found["network"][0]]
        labelled = []
        asked = (("network", definition.bad, definition.where, bool(found["network"])),
                 ("reference (CS)", definition.reference_bad, definition.reference_where, bool(found["reference"])))
        for solver, bad, where, present in asked:
            if not present:
                continue
            rows = estimate(ctx.con, definition.table, bad, where=where, by=by, confidence=definition.confidence,
                            n_boot=ctx.n_boot, seed=ctx.seed)
            labelled += [dict(r, solver=solver, network=", ".join(str(r[c]) for c in by), p=1 - r["point"],
                              ci_low=None if r["ci_high"] is None else 1 - r["ci_high"],
                              ci_high=None if r["ci_low"] is None else 1 - r["ci_low"])
                         for r in rows if r["primary"]]
        if not labelled:
            return None
        methods = sorted({r["method"] for r in labelled})
        paths = recovery_rates(labelled, ctx.figure_path("recovery_rates"), method="primary", svg=ctx.doc.svg)
        return ctx.doc.figure(paths, "Recovery rate of inserted details (1 − P(lost)) per network"
                                     f"{' and dataset' if 'dataset' in by else ''}, network and reference, with "
                                     f"{percent(definition.confidence)} primary intervals ({', '.join(methods)}; "
                                     "all details pooled, placements of one image counted as one cluster).")

    def worst(self, ctx: Context) -> list[dict[str, Any]]:
        if "tensor_file" not in ctx.columns("insertions"):
            return []
        frame = execute(ctx.con, f"SELECT * FROM insertions WHERE tensor_file IS NOT NULL AND {ctx.live()}")
        if frame.empty:
            return []
        picked = frame.sort_values("corr").groupby("network", sort=True).head(2).head(2 * MAX_WORST)
        paths = insertion_grid(ctx.store, records(picked), ctx.figure_path("insertion_examples"), svg=ctx.doc.svg)
        return [h3("Inserted details"),
                ctx.doc.figure(paths, "Per network, the two insertions with the lowest correlation between the "
                                      "detail and the change it caused in the output: x + d (detail outlined), the "
                                      "network's and the reference's reconstructions.")]


def pooled(rows: list[dict[str, Any]], confidence: float) -> list[dict[str, Any]]:
    """Pool estimate rows over every group column except network (counts added, CP recomputed)."""
    counts: dict[str, list[int]] = {}
    for r in rows:
        if r["method"] == "clopper-pearson":
            k_n = counts.setdefault(r["network"], [0, 0])
            k_n[0] += r["k"]
            k_n[1] += r["n"]
    result = []
    for network, (k, n) in counts.items():
        low, high = clopper_pearson([k], [n], confidence)
        result.append({"network": network, "n": n, "k": k, "p": k / n, "ci_low": float(low[0]),
                       "ci_high": float(high[0]), "method": "clopper-pearson"})
    return result


SECTION = InsertionsSection()


# -- figures --------------------------------------------------------------------------------------

def insertion_grid(store: Path | str, rows: Sequence[Mapping[str, Any]], out: Path | str, *,
                   svg: bool = False) -> list[Path]:
    """One line per insertion row: x + d (detail outlined), the network's and the reference's
    reconstructions of A(x + d), with corr / contrast ratio and the recovered verdict."""
    _theme()
    if not rows:
        raise ValueError("insertion_grid needs at least one row")
    kept = [row_tensors(store, r, ("x_d", "out", "ref_out", "mask")) for r in rows]
    has_ref = all("ref_out" in k for k in kept)
    ncols = 3 if has_ref else 2
    fig, axes = plt.subplots(len(rows), ncols, figsize=(2.1 * ncols + 0.4, 2.15 * len(rows) + 0.2), squeeze=False)
    for i, (row, k) in enumerate(zip(rows, kept)):
        head = i == 0
        _panel(axes[i, 0], _as_image(k["x_d"]), "x + d (detail outlined)" if head else "")
        if "mask" in k:
            axes[i, 0].contour(_as_image(k["mask"].float()), levels=[0.5], colors="#e8a33d", linewidths=0.6)
        verdict = "recovered" if row.get("recovered") else "lost"
        _panel(axes[i, 1], _as_image(k["out"]), "network" if head else "",
               f"corr {_fmt(row.get('corr'), '.2f')} · contrast {_fmt(row.get('contrast_ratio'), '.2f')} · {verdict}")
        if has_ref:
            ref_verdict = "recovered" if row.get("ref_recovered") else "lost"
            _panel(axes[i, 2], _as_image(k["ref_out"]), "reference (CS)" if head else "",
                   f"corr {_fmt(row.get('ref_corr'), '.2f')} · contrast "
                   f"{_fmt(row.get('ref_contrast_ratio'), '.2f')} · {ref_verdict}")
        axes[i, 0].set_ylabel(f"{row['network']}\n{row.get('detail', '')} {row.get('size', '')} px\n"
                              f"contrast {row.get('contrast', '')}", fontsize=7)
    return _save(fig, out, svg)


def recovery_rates(estimates: Sequence[Mapping[str, Any]], out: Path | str, *, label: str = "solver",
                   method: str = "clopper-pearson", ylabel: str = "P(detail recovered)",
                   svg: bool = False) -> list[Path]:
    """Point estimates with interval error bars, per network, one colour per `label` value
    (e.g. network vs reference). estimates: estimate rows carrying a `label` key; method "primary" takes each
    group's primary row."""
    _theme()
    frame = pd.DataFrame([e for e in estimates if (e.get("primary") if method == "primary" else e.get("method") == method)])
    if frame.empty:
        raise ValueError(f"no {method} estimates to plot")
    networks = sorted(frame["network"].unique())
    labels = list(dict.fromkeys(frame[label]))
    width = 0.8 / len(labels)
    fig, ax = plt.subplots(figsize=(max(4.0, 1.3 * len(networks) + 2), 3.2))
    for j, (color, name) in enumerate(zip(sns.color_palette("colorblind", len(labels)), labels)):
        sub = frame[frame[label] == name].set_index("network").reindex(networks)
        pos = np.arange(len(networks)) - 0.4 + width * (j + 0.5)
        p = sub["p"].to_numpy(dtype=float)
        low = p - sub["ci_low"].fillna(0.0).to_numpy(dtype=float)
        high = sub["ci_high"].fillna(1.0).to_numpy(dtype=float) - p
        ax.errorbar(pos, p, yerr=[low, high], fmt="o", ms=5, capsize=3, color=color, label=str(name))
    ax.set_xticks(np.arange(len(networks)), networks)
    ax.set_xlim(-0.6, len(networks) - 0.4)
    ax.set_ylim(-0.02, 1.02)
    ax.set_ylabel(ylabel)
    ax.legend(frameon=True)
    fig.tight_layout()
    return _save(fig, out, svg)
