"""Uncertainty detectors, judged: Oala et al.'s Table 1 and detection as a decision (the `detectors` table).

- `table_one(frame)`: per (network, method, experiment) the mean Pearson score over images of each run
  (seed), then mean and sd over runs, as Oala et al.'s Table 1; plus an image-bootstrap interval for the
  mean over all images and runs (images resampled, runs of one image kept together).
- `roc_auc(pos, neg)`: the area under the ROC curve as the Mann-Whitney probability P(s+ > s-) + 1/2
  P(s+ = s-); `average_precision(pos, neg)`: the area under the precision-recall curve (AUPRC, step
  interpolation as scikit-learn's average_precision_score); `roc_curve(pos, neg)`.
- `decision_table(frame)`: for each network, method, failure mode and image-level score, AUC and AUPRC
  with percentile image-bootstrap intervals. Failure modes: "worst case vs Gaussian" (worstcase rows
  positive, gaussian rows of the same images negative), "adaptive vs Gaussian" (the attacker who knows
  the detector), "detail lost vs kept" (insertion rows, `lost`). The unit of resampling is the image,
  so the paired positive and negative of an image stay together (the image is the unit of
  independence).
- `adaptive_table(frame)`: per network and method, the output change of the adaptive attack relative to
  the plain worst case (damage kept), and the detection AUCs before and after.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import pandas as pd

#: The Table 1 of Oala et al.: mean Pearson correlation (sd over three runs).
SEED_TABLE_ONE = {
    ("denoising", "advdetect"): {"inn": (0.77, 0.008), "mcdropout": (0.20, 0.001), "probout": (0.81, 0.002)},
    ("denoising", "artdetect"): {"inn": (0.69, 0.006), "mcdropout": (0.44, 0.02), "probout": (0.44, 0.01)},
    ("ct", "advdetect"): {"inn": (0.56, 0.05), "mcdropout": (0.28, 0.02), "probout": (0.48, 0.12)},
    ("ct", "artdetect"): {"inn": (0.52, 0.03), "mcdropout": (0.26, 0.01), "probout": (0.34, 0.04)},
}
METHOD_LABELS = {"inn": "INN", "mcdropout": "MC dropout", "probout": "ProbOut", "inputnoise": "input noise (control)"}
SCORES = {"u_mean": "mean u", "u_max": "max 8x8 patch mean of u"}
FAILURES = {
    "worst case vs Gaussian": ("worstcase", "gaussian"),
    "adaptive vs Gaussian": ("adaptive", "gaussian"),
    "detail lost vs kept": ("insertion", None),
}


def use_case(physics: str) -> str:
    """Oala et al.'s column group of an operator kind: 'denoising' or 'ct' (others by name)."""
    return {"denoise": "denoising", "radon": "ct"}.get(physics, physics)


def roc_auc(pos: np.ndarray, neg: np.ndarray) -> float:
    """P(s+ > s-) + 1/2 P(s+ = s-) (NaN when a class is empty), by ranks: O(n log n)."""
    pos, neg = np.asarray(pos, float), np.asarray(neg, float)
    if len(pos) == 0 or len(neg) == 0:
        return math.nan
    scores = np.concatenate([pos, neg])
    ranks = pd.Series(scores).rank(method="average").to_numpy()
    return float((ranks[:len(pos)].sum() - len(pos) * (len(pos) + 1) / 2) / (len(pos) * len(neg)))


def average_precision(pos: np.ndarray, neg: np.ndarray) -> float:
    """Area under the precision-recall curve, sum over thresholds of (R_k - R_{k-1}) P_k (NaN when no
    positives); ties are one threshold."""
    pos, neg = np.asarray(pos, float), np.asarray(neg, float)
    if len(pos) == 0:
        return math.nan
    scores = np.concatenate([pos, neg])
    labels = np.concatenate([np.ones(len(pos)), np.zeros(len(neg))])
    order = np.argsort(-scores, kind="mergesort")
    scores, labels = scores[order], labels[order]
    tp, fp = np.cumsum(labels), np.cumsum(1 - labels)
    last = np.r_[np.nonzero(np.diff(scores))[0], len(scores) - 1]  # last index of each distinct score
    precision, recall = tp[last] / (tp[last] + fp[last]), tp[last] / len(pos)
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def roc_curve(pos: np.ndarray, neg: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(false-positive rates, true-positive rates) over every threshold, from (0, 0) to (1, 1)."""
    pos, neg = np.asarray(pos, float), np.asarray(neg, float)
    thresholds = np.unique(np.concatenate([pos, neg]))[::-1]
    fpr = np.r_[0.0, [(neg >= t).mean() for t in thresholds]] if len(neg) else np.zeros(1)
    tpr = np.r_[0.0, [(pos >= t).mean() for t in thresholds]] if len(pos) else np.zeros(1)
    return fpr, tpr


def _split(frame: pd.DataFrame, failure: str, score: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    positive, negative = FAILURES[failure]
    if negative is None:
        rows = frame[frame["experiment"] == positive]
        lost = rows["lost"].astype(bool)
        return rows[lost], rows[~lost]
    return frame[frame["experiment"] == positive], frame[frame["experiment"] == negative]


def bootstrap_by_image(pos: pd.DataFrame, neg: pd.DataFrame, score: str, statistic, *, n_boot: int = 2000,
                       seed: int = 0, confidence: float = 0.95) -> tuple[float, float, float]:
    """statistic(pos scores, neg scores) and its percentile interval, resampling images with replacement
    (every row of a drawn image comes along, as often as it is drawn)."""
    value = statistic(pos[score].to_numpy(), neg[score].to_numpy())
    images = np.union1d(pos["image_key"].unique(), neg["image_key"].unique())
    if len(images) < 2 or not math.isfinite(value):
        return value, math.nan, math.nan
    pos_groups = {k: g[score].to_numpy() for k, g in pos.groupby("image_key")}
    neg_groups = {k: g[score].to_numpy() for k, g in neg.groupby("image_key")}
    empty = np.zeros(0)
    rng = np.random.default_rng(seed)
    stats = []
    for _ in range(n_boot):
        drawn = rng.choice(images, size=len(images), replace=True)
        p = np.concatenate([pos_groups.get(k, empty) for k in drawn])
        n = np.concatenate([neg_groups.get(k, empty) for k in drawn])
        s = statistic(p, n)
        if math.isfinite(s):
            stats.append(s)
    if not stats:
        return value, math.nan, math.nan
    alpha = 1 - confidence
    return value, float(np.quantile(stats, alpha / 2)), float(np.quantile(stats, 1 - alpha / 2))


def _with_image_key(frame: pd.DataFrame) -> pd.DataFrame:
    frame = frame.copy()
    frame["image_key"] = frame["dataset"].astype(str) + "/" + frame["image_id"].astype(str)
    return frame


def table_one(frame: pd.DataFrame, *, n_boot: int = 2000, seed: int = 0, confidence: float = 0.95) -> pd.DataFrame:
    """Rows (network, physics, method, experiment): runs, images, mean and sd over runs of the per-run
    mean Pearson score, and an image-bootstrap interval of the mean over all images and runs."""
    frame = _with_image_key(frame[frame["experiment"].isin(["advdetect", "artdetect"])])
    out = []
    for (network, physics, method, experiment), g in frame.groupby(["network", "physics", "method", "experiment"]):
        per_run = g.groupby("seed")["pearson"].mean()
        per_image = g.groupby("image_key")["pearson"].apply(np.asarray)
        rng = np.random.default_rng(seed)
        keys = per_image.index.to_numpy()
        boots = []
        for _ in range(n_boot if len(keys) > 1 else 0):
            drawn = rng.choice(keys, size=len(keys), replace=True)
            boots.append(np.concatenate([per_image[k] for k in drawn]).mean())
        alpha = 1 - confidence
        out.append({"network": network, "physics": physics, "use_case": use_case(physics), "method": method,
                    "experiment": experiment, "runs": int(per_run.size), "images": int(len(keys)),
                    "mean": float(per_run.mean()), "sd": float(per_run.std(ddof=1)) if per_run.size > 1 else math.nan,
                    "low": float(np.quantile(boots, alpha / 2)) if boots else math.nan,
                    "high": float(np.quantile(boots, 1 - alpha / 2)) if boots else math.nan})
    return pd.DataFrame(out)


def decision_table(frame: pd.DataFrame, *, n_boot: int = 2000, seed: int = 0, confidence: float = 0.95,
                   scores: Sequence[str] = tuple(SCORES)) -> pd.DataFrame:
    """Rows (network, method, failure, score): positives, negatives, AUC [low, high], AUPRC [low, high]."""
    frame = _with_image_key(frame)
    out = []
    for (network, method), g in frame.groupby(["network", "method"]):
        for failure in FAILURES:
            for score in scores:
                pos, neg = _split(g, failure, score)
                if pos.empty and neg.empty:
                    continue
                auc = bootstrap_by_image(pos, neg, score, roc_auc, n_boot=n_boot, seed=seed, confidence=confidence)
                ap = bootstrap_by_image(pos, neg, score, average_precision, n_boot=n_boot, seed=seed,
                                        confidence=confidence)
                out.append({"network": network, "method": method, "failure": failure, "score": score,
                            "positives": len(pos), "negatives": len(neg), "images": pos["image_key"].nunique(),
                            "auc": auc[0], "auc_low": auc[1], "auc_high": auc[2],
                            "auprc": ap[0], "auprc_low": ap[1], "auprc_high": ap[2],
                            "prevalence": len(pos) / max(len(pos) + len(neg), 1)})
    return pd.DataFrame(out)


def adaptive_table(frame: pd.DataFrame, decisions: pd.DataFrame | None = None, score: str = "u_max") -> pd.DataFrame:
    """Per (network, method): mean relative output change of the plain worst case and of the adaptive
    attack, their ratio (damage kept), the detector's score at both relative to clean, and the AUCs
    (worst case vs Gaussian, adaptive vs Gaussian) for `score`."""
    out = []
    for (network, method), g in frame.groupby(["network", "method"]):
        wc, ad = g[g["experiment"] == "worstcase"], g[g["experiment"] == "adaptive"]
        if wc.empty or ad.empty:
            continue
        row = {"network": network, "method": method, "images": wc["image_id"].nunique(),
               "change_worstcase": float(wc["out_change_rel"].mean()),
               "change_adaptive": float(ad["out_change_rel"].mean()),
               "score_ratio_worstcase": float((wc[score] / wc[f"{score}_clean"]).mean()),
               "score_ratio_adaptive": float((ad[score] / ad[f"{score}_clean"]).mean())}
        row["damage_kept"] = row["change_adaptive"] / row["change_worstcase"] if row["change_worstcase"] else math.nan
        if decisions is not None and not decisions.empty:
            d = decisions[(decisions["network"] == network) & (decisions["method"] == method)
                          & (decisions["score"] == score)].set_index("failure")
            for failure, key in (("worst case vs Gaussian", "auc_worstcase"), ("adaptive vs Gaussian", "auc_adaptive")):
                row[key] = float(d.loc[failure, "auc"]) if failure in d.index else math.nan
        out.append(row)
    return pd.DataFrame(out)


__all__ = ["FAILURES", "METHOD_LABELS", "SCORES", "SEED_TABLE_ONE", "adaptive_table", "average_precision",
           "bootstrap_by_image", "decision_table", "roc_auc", "roc_curve", "table_one", "use_case"]
