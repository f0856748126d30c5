"""Report section of the `detectors` table: uncertainty companions as instability detectors.

Our Table 1 (mean Pearson correlation per run, mean +- sd over runs, and an image-bootstrap interval)
beside Oala et al.'s, in its layout; detection as a decision (ROC-AUC and AUPRC with image-bootstrap
intervals per method, failure mode and image-level score); the adaptive attack's effect; ROC curves.
Numbers come from survey.analysis.detection.
"""

from __future__ import annotations

import math
from typing import Any

import pandas as pd

from survey.analysis.db import execute, sql_identifier
from survey.analysis.detection import (FAILURES, METHOD_LABELS, SCORES, SEED_TABLE_ONE, adaptive_table,
                                       decision_table, roc_curve, table_one)
from survey.analysis.sections.base import Context, Section, format_interval, format_number, h3, p, percent

COLUMNS_T1 = (("denoising", "advdetect"), ("denoising", "artdetect"), ("ct", "advdetect"), ("ct", "artdetect"))
EXPERIMENT_LABELS = {"advdetect": "AdvDetect", "artdetect": "ArtDetect"}


def _cell(row: pd.Series | None) -> str:
    if row is None:
        return "–"
    sd = "" if not math.isfinite(row["sd"]) else f" ± {row['sd']:.2f}"
    return f"{row['mean']:.2f}{sd} {format_interval(round(row['low'], 2), round(row['high'], 2))}"


def _computed(by: list[str], frame: pd.DataFrame) -> dict[str, Any]:
    """The report's machine-readable entry (as survey.analysis.report embeds estimates)."""
    return {"by": by, "network": frame.to_dict("records"), "reference": [], "commands": {}}


class DetectorsSection(Section):
    table = "detectors"
    title = "Uncertainty as an instability detector"
    method = ("Oala et al. (detecting failure modes in image reconstructions with interval neural network uncertainty) ask whether a "
              "network's uncertainty map lights up where it fails. Each zoo network gets three companions "
              "trained post hoc with its weights frozen: an interval neural network (interval weights in its "
              "last layers, u = upper - lower bound), MC dropout (a dropout variant of its last layers, u = "
              "per-pixel standard deviation over T passes) and ProbOut (a log-variance head, u = predicted "
              "standard deviation). AdvDetect: a targeted perturbation forces an artefact into a random patch; "
              "score = Pearson correlation of |u(y) - u(y_adv)| with |f(y) - f(y_adv)|. ArtDetect: "
              "salt-and-pepper noise in half the image (denoising) or an inserted silhouette (CT); score = "
              "Pearson correlation of |u(y) - u(y_ood)| with the changed region. Decisions: can an image-level "
              "score (mean u, or the largest 8 x 8 patch mean) tell worst-case perturbations at a budget from "
              "Gaussian noise of the same norm, and inserted details the network loses from those it keeps; "
              "and does that survive an attacker who maximises the output change while holding the detector's "
              "score at its clean level.")
    params = ("method", "seed", "passes", "budget", "adaptive_weight")

    def parameter_table(self, ctx: Context, params, by=("network",)) -> dict:
        """Parameters as recorded (missing values, e.g. the budget of a Table-1 row, shown as '–')."""
        keys = ", ".join(f"coalesce(CAST({sql_identifier(c)} AS VARCHAR), '–') AS {sql_identifier(c)}"
                         for c in [*by, *params])
        frame = execute(ctx.con, f"SELECT {keys}, count(*) AS rows_, count(DISTINCT image_id) AS images_ "
                                 f"FROM {sql_identifier(self.table)} WHERE {ctx.live()} GROUP BY ALL ORDER BY ALL "
                                 "LIMIT 60")
        body = [[*r[:-2], int(r[-2]), int(r[-1])] for r in frame.itertuples(index=False)]
        return ctx.doc.table(f"Parameters of the '{self.table}' rows as recorded in the store, with row and image "
                             "counts ('–': not applicable to the row's experiment).", [*by, *params, "rows", "images"],
                             body, numeric=range(len(params) + len(by), len(params) + len(by) + 2))

    def _frame(self, ctx: Context) -> pd.DataFrame:
        return execute(ctx.con, f"SELECT * FROM {sql_identifier(self.table)} WHERE {ctx.live()}")

    def results(self, ctx: Context) -> list[dict[str, Any]]:
        if self.table not in ctx.known:
            return []
        frame = self._frame(ctx)
        if frame.empty:
            return [p("No live rows in the detectors table.", "not-run")]
        blocks: list[dict[str, Any]] = []
        blocks += self.table_one_blocks(ctx, frame)
        decisions = decision_table(frame, n_boot=ctx.n_boot, seed=ctx.seed)
        ctx.computed["detectors:decisions"] = _computed(["network", "method", "failure", "score"], decisions)
        blocks += self.decision_blocks(ctx, decisions)
        blocks += self.adaptive_blocks(ctx, frame, decisions)
        blocks += self.roc_blocks(ctx, frame)
        return blocks

    def table_one_blocks(self, ctx: Context, frame: pd.DataFrame) -> list[dict[str, Any]]:
        t1 = table_one(frame, n_boot=ctx.n_boot, seed=ctx.seed)
        ctx.computed["detectors:table1"] = _computed(["network", "method", "experiment"], t1)
        if t1.empty:
            return [h3("Table 1: Pearson correlation"), p("No AdvDetect / ArtDetect rows.", "not-run")]
        networks = {uc: sorted(t1[t1["use_case"] == uc]["network"].unique()) for uc in ("denoising", "ct")}
        methods = [m for m in METHOD_LABELS if m in set(t1["method"])]
        body = []
        for method in methods:
            seed_row = [f"{METHOD_LABELS[method]}: Oala et al."]
            for key in COLUMNS_T1:
                value = SEED_TABLE_ONE.get(key, {}).get(method)
                seed_row.append(f"{value[0]:.2f} ± {value[1]:g}" if value else "–")
            if method in SEED_TABLE_ONE[COLUMNS_T1[0]]:
                body.append(seed_row)
            ours = [f"{METHOD_LABELS[method]}: ours ({', '.join(n for uc in ('denoising', 'ct') for n in networks[uc])})"]
            for uc, experiment in COLUMNS_T1:
                match = t1[(t1["use_case"] == uc) & (t1["method"] == method) & (t1["experiment"] == experiment)]
                ours.append(_cell(match.iloc[0]) if len(match) else "–")
            body.append(ours)
        runs = sorted(set(t1["runs"]))
        images = sorted(set(t1["images"]))
        caption = ("Table 1 in Oala et al.'s layout: mean Pearson correlation, ± sd over runs, for AdvDetect and "
                   "ArtDetect on denoising (" + (", ".join(networks["denoising"]) or "–") + ") and limited-angle "
                   "CT (" + (", ".join(networks["ct"]) or "–") + f"). Ours: runs {runs}, images per run {images}; "
                   f"in brackets a {percent(0.95)} image-bootstrap interval of the mean over all images and runs "
                   f"({ctx.n_boot} resamples). Oala et al.'s rows are copied from their Table 1 (three runs, its own data "
                   "and networks).")
        columns = ["UQ method", "Denoising AdvDetect", "Denoising ArtDetect", "CT AdvDetect", "CT ArtDetect"]
        return [h3("Table 1: Pearson correlation of the uncertainty change with the failure"),
                ctx.doc.table(caption, columns, body, wrap=True)]

    def decision_blocks(self, ctx: Context, decisions: pd.DataFrame) -> list[dict[str, Any]]:
        if decisions.empty:
            return []
        body = []
        for r in decisions.itertuples(index=False):
            body.append([r.network, METHOD_LABELS.get(r.method, r.method), r.failure, SCORES.get(r.score, r.score),
                         f"{r.positives} / {r.negatives}",
                         f"{format_number(r.auc)} {format_interval(r.auc_low, r.auc_high)}",
                         f"{format_number(r.auprc)} {format_interval(r.auprc_low, r.auprc_high)}",
                         format_number(r.prevalence)])
        caption = (f"Detection as a decision: ROC-AUC and AUPRC of each method's image-level score, with "
                   f"{percent(0.95)} percentile image-bootstrap intervals ({ctx.n_boot} resamples; an image's "
                   "positive and negative inputs are resampled together). AUC 0.5 = chance; AUPRC's chance level "
                   "is the prevalence (last column). Worst case: tasks/budget.worst_case at the recorded budget; "
                   "Gaussian: the same norm; lost / kept: the insertion task's recovery rule on the network's output.")
        return [h3("Detection as a decision (ROC)"),
                ctx.doc.table(caption, ["network", "method", "failure", "score", "pos / neg", "ROC-AUC [95%]",
                                        "AUPRC [95%]", "prevalence"], body, wrap=True)]

    def adaptive_blocks(self, ctx: Context, frame: pd.DataFrame, decisions: pd.DataFrame) -> list[dict[str, Any]]:
        table = adaptive_table(frame, decisions)
        ctx.computed["detectors:adaptive"] = _computed(["network", "method"], table)
        if table.empty:
            return []
        body = [[r.network, METHOD_LABELS.get(r.method, r.method), r.images, r.change_worstcase, r.change_adaptive,
                 r.damage_kept, r.score_ratio_worstcase, r.score_ratio_adaptive,
                 getattr(r, "auc_worstcase", math.nan), getattr(r, "auc_adaptive", math.nan)]
                for r in table.itertuples(index=False)]
        caption = ("An attacker who knows the detector: from the worst case, maximise the output change while "
                   "penalising any rise of the detector's mean u and max patch mean above their clean values, "
                   "on the same budget ball. Output change ||f(y') - f(y)|| / ||f(y)||, plain and adaptive, and "
                   "their ratio (damage kept); the detector's max patch score relative to clean; ROC-AUC (max "
                   "patch score) against Gaussian noise of the same norm, before and after. Detection survives "
                   "when the adaptive AUC stays high or the damage kept is small.")
        return [h3("Adaptive attack"),
                ctx.doc.table(caption, ["network", "method", "images", "change (worst case)", "change (adaptive)",
                                        "damage kept", "score / clean (worst case)", "score / clean (adaptive)",
                                        "AUC (worst case)", "AUC (adaptive)"], body, numeric=range(2, 10))]

    def roc_blocks(self, ctx: Context, frame: pd.DataFrame) -> list[dict[str, Any]]:
        from survey.analysis.figures import save_figure, theme, plt
        from survey.analysis.detection import _split

        networks = sorted(frame["network"].unique())
        failures = [f for f in FAILURES if FAILURES[f][0] in set(frame["experiment"])]
        if not failures:
            return []
        theme()
        fig, axes = plt.subplots(len(networks), len(failures), figsize=(3.4 * len(failures), 3.2 * len(networks)),
                                 squeeze=False)
        for i, network in enumerate(networks):
            for j, failure in enumerate(failures):
                ax = axes[i][j]
                g = frame[frame["network"] == network]
                for method in [m for m in METHOD_LABELS if m in set(g["method"])]:
                    pos, neg = _split(g[g["method"] == method], failure, "u_max")
                    if pos.empty or neg.empty:
                        continue
                    fpr, tpr = roc_curve(pos["u_max"].to_numpy(), neg["u_max"].to_numpy())
                    ax.step(fpr, tpr, where="post", label=METHOD_LABELS[method])
                ax.plot([0, 1], [0, 1], ":", color="grey", lw=0.8)
                ax.set_title(f"{network}: {failure}", fontsize=9)
                ax.set_xlabel("false-positive rate")
                ax.set_ylabel("true-positive rate")
                ax.set_xlim(0, 1)
                ax.set_ylim(0, 1.01)
                if i == 0 and j == 0:
                    ax.legend(fontsize=7, loc="lower right")
        fig.tight_layout()
        paths = save_figure(fig, ctx.figure_path("detectors_roc"), svg=ctx.doc.svg)
        return [ctx.doc.figure(paths, "ROC curves of the max 8 x 8 patch mean of u, per network (rows) and failure "
                                      "mode (columns), one curve per method; the dotted diagonal is chance.")]


SECTION = DetectorsSection()
