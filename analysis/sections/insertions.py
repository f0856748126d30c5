"""Report section of the `insertions` table: structural details (symbols, text, a heart, blobs) drawn into x.

Default bad outcome: the detail is lost (not recovered), per detail; recovery rates of the network and the
reference pooled over details; recovery against contrast and size as curves (network, reference and the H(y)
control on the same insertions); McNemar's exact test per network on the paired network / reference outcomes;
per network, the two insertions with the lowest correlation.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd
import seaborn as sns

from survey.analysis.db import execute
from survey.analysis.estimate import clopper_pearson, estimate
from survey.analysis.figures import as_image, fmt, panel, save_figure, theme, plt, row_tensors
from survey.analysis.paired_tests import mcnemar
from survey.analysis.sections.base import MAX_WORST, Context, Definition, Section, format_number, h3, percent, records

DEFINITIONS = (
    Definition(
        "insertion-lost", "insertions", "Structural detail lost",
        bad="NOT recovered", by=("detail",), per="row", reference_bad="NOT ref_recovered",
        reference_where="ref_recovered IS NOT NULL", reference_column="ref_recovered", unit="insertion",
        rationale="An inserted detail is lost unless the change it causes in the output looks like it "
                  "(correlation >= corr_threshold, default 0.8), keeps its contrast (contrast ratio within "
                  "[contrast_threshold, contrast_max], default [0.5, 1.5]) and its edges (gradient-norm ratio to "
                  "the drawn detail >= sharpness_threshold, default 0.7): a blurred detail does not pass. The "
                  "zero-filled / FBP reconstruction H(y) is scored by the same rule as a control (h_recovered). "
                  "Each placement is a trial."),
)


class InsertionsSection(Section):
    table = "insertions"
    title = "Structural insertions"
    method = ("Structural insertions: a detail d (symbol, text, blob) drawn into x; is it visible in f(A(x + d)) "
              "− f(Ax)?")
    params = ("detail", "size", "contrast", "position", "corr_threshold", "contrast_threshold", "contrast_max",
              "sharpness_threshold")
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

    def result_figures(self, ctx: Context) -> list[dict[str, Any]]:
        frame = execute(ctx.con, f"SELECT * FROM insertions WHERE {ctx.live()}")
        if frame.empty:
            return []
        blocks: list[dict[str, Any]] = [h3("Recovery against contrast and size")]
        paths = recovery_curves(frame, ctx.figure_path("recovery_curves"), svg=ctx.doc.svg)
        blocks.append(ctx.doc.figure(paths, "Share of inserted details recovered against the detail's contrast "
                                            "(left) and size (right) per network: the network (solid), the reference "
                                            "(dashed) and the zero-filled / FBP control H(y) (dotted), all on the same "
                                            "insertions; mean over placements with a 95% bootstrap band."))
        tests = paired_tests(frame)
        if tests:
            blocks.append(ctx.doc.table(
                "McNemar's exact test per network: network and reference on the same insertions (paired "
                "recovered / lost outcomes); b = recovered by the network only, c = by the reference only; "
                "two-sided p from Binomial(b + c, 1/2).",
                ["network", "insertions", "network recovered", "reference recovered", "b", "c", "p"],
                [[t["network"], t["pairs"], t["network_recovered"], t["reference_recovered"], t["b"], t["c"],
                  format_number(t["p"])] for t in tests], numeric=range(1, 7),
                note="Placements on one image are not independent, so p is a per-insertion summary, not a "
                     "population-of-images claim; the recovery intervals above are the cluster-valid ones."))
        return blocks


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
    theme()
    if not rows:
        raise ValueError("insertion_grid needs at least one row")
    kept = [row_tensors(store, r, ("x_d", "out", "ref_out", "mask")) for r in rows]
    has_ref = all("ref_out" in k for k in kept)
    ncols = 3 if has_ref else 2
    fig, axes = plt.subplots(len(rows), ncols, figsize=(2.1 * ncols + 0.4, 2.15 * len(rows) + 0.2), squeeze=False)
    for i, (row, k) in enumerate(zip(rows, kept)):
        head = i == 0
        panel(axes[i, 0], as_image(k["x_d"]), "x + d (detail outlined)" if head else "")
        if "mask" in k:
            axes[i, 0].contour(as_image(k["mask"].float()), levels=[0.5], colors="#e8a33d", linewidths=0.6)
        verdict = "recovered" if row.get("recovered") else "lost"
        panel(axes[i, 1], as_image(k["out"]), "network" if head else "",
               f"corr {fmt(row.get('corr'), '.2f')} · contrast {fmt(row.get('contrast_ratio'), '.2f')} · {verdict}")
        if has_ref:
            ref_verdict = "recovered" if row.get("ref_recovered") else "lost"
            panel(axes[i, 2], as_image(k["ref_out"]), "reference (CS)" if head else "",
                   f"corr {fmt(row.get('ref_corr'), '.2f')} · contrast "
                   f"{fmt(row.get('ref_contrast_ratio'), '.2f')} · {ref_verdict}")
        axes[i, 0].set_ylabel(f"{row['network']}\n{row.get('detail', '')} {row.get('size', '')} px\n"
                              f"contrast {row.get('contrast', '')}", fontsize=7)
    return save_figure(fig, out, svg)


def recovery_rates(estimates: Sequence[Mapping[str, Any]], out: Path | str, *, label: str = "solver",
                   method: str = "clopper-pearson", ylabel: str = "P(detail recovered)",
                   svg: bool = False) -> list[Path]:
    """Point estimates with interval error bars, per network, one colour per `label` value
    (e.g. network vs reference). estimates: estimate rows carrying a `label` key; method "primary" takes each
    group's primary row."""
    theme()
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
    return save_figure(fig, out, svg)


def paired_tests(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """McNemar's exact test per network on rows holding both recovered and ref_recovered (same insertions)."""
    if "ref_recovered" not in frame or "recovered" not in frame:
        return []
    paired = frame.dropna(subset=["recovered", "ref_recovered"])
    result = []
    for network, sub in paired.groupby("network", sort=True):
        net, ref = sub["recovered"].astype(bool).tolist(), sub["ref_recovered"].astype(bool).tolist()
        test = mcnemar(net, ref)
        result.append({"network": str(network), "pairs": len(net), "network_recovered": sum(net),
                       "reference_recovered": sum(ref), "b": test.b, "c": test.c, "p": test.p_value})
    return result


def recovery_curves(frame: pd.DataFrame, out: Path | str, *, svg: bool = False) -> list[Path]:
    """P(recovered) against contrast and against size, one line style per solver (network, reference,
    H(y) control) and one colour per network, on the same insertions."""
    theme()
    if frame.empty:
        raise ValueError("recovery_curves needs at least one row")
    parts = []
    for column, solver in (("recovered", "network"), ("ref_recovered", "reference (CS)"), ("h_recovered", "H(y)")):
        if column in frame and frame[column].notna().any():
            sub = frame.dropna(subset=[column])
            parts.append(sub.assign(solver=solver, y=sub[column].astype(float)))
    long = pd.concat(parts, ignore_index=True)
    long["contrast"] = long["contrast"].abs()
    fig, axes = plt.subplots(1, 2, figsize=(8.4, 3.3), sharey=True)
    dashes = {"network": "", "reference (CS)": (4, 2), "H(y)": (1, 2)}
    order = [s for s in dashes if s in set(long["solver"])]
    for ax, x, label in ((axes[0], "contrast", "detail contrast (image units)"), (axes[1], "size", "detail size (pixels)")):
        sns.lineplot(data=long, x=x, y="y", hue="network", style="solver", style_order=order,
                     dashes={k: dashes[k] for k in order}, errorbar=("ci", 95), n_boot=200, seed=0, marker="o",
                     markersize=4, ax=ax, legend=ax is axes[0])
        ax.set_xlabel(label)
        ax.set_ylabel("P(detail recovered)")
        ax.set_ylim(-0.02, 1.02)
    if axes[0].get_legend() is not None:
        sns.move_legend(axes[0], "lower right", title=None, frameon=True, fontsize=7)
    fig.tight_layout()
    return save_figure(fig, out, svg)
