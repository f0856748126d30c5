"""Uncertainty detectors, judged: Oala et al.'s Table 1 and detection as a decision (the `detectors` table).

- `table_one(frame)`: per (network, method, experiment) the mean Pearson score over images of each run
  (seed), then mean and sd over runs, as Oala et al.'s Table 1; plus an image-bootstrap interval for the
  mean over all images and runs (images resampled, runs of one image kept together).
- `roc_auc(pos, neg)`: the area under the ROC curve as the Mann-Whitney probability P(s+ > s-) + 1/2
  P(s+ = s-); `average_precision(pos, neg)`: the area under the precision-recall curve (AUPRC, step
  interpolation as scikit-learn's average_precision_score); `roc_curve(pos, neg)`.
- `decision_table(frame)`: for each network, method, failure mode and image-level score, AUC with a
  cluster-robust interval (Obuchowski 1997: DeLong's structural components summed per image or volume,
  logit-scale t on K - 1 degrees of freedom; `clustered_auc`) and a within-cluster permutation test of
  "no better than chance" (`within_cluster_permutation_p`), the percentile image bootstrap beside it, and
  AUPRC with its image bootstrap. Failure modes: "worst case vs Gaussian" (worstcase rows
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

from survey.analysis.intervals import beta_bounds

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


def _psi(pos: np.ndarray, neg: np.ndarray) -> np.ndarray:
    """(P, N) kernel 1{x > y} + 1/2 1{x = y}."""
    return (pos[:, None] > neg[None, :]) + 0.5 * (pos[:, None] == neg[None, :])


def clustered_auc(pos, pos_clusters, neg, neg_clusters, confidence: float = 0.95) -> dict[str, float]:
    """AUC with Obuchowski's (1997) cluster-robust variance (DeLong's structural components summed per
    cluster): clusters are the units of independence (images, volumes), each holding any number of
    positives and negatives. Returns auc, se, low, high (logit-scale t interval on K - 1 degrees of freedom,
    mapped back: it stays in [0, 1]; NaN with fewer than 2 clusters or an empty class), clusters (K).

    var(A) = S10 / M + S01 / N + 2 S11 / (M N), S10 = K / ((K - 1) M) sum_k (V10_k - m_k A)^2,
    S01 = K / ((K - 1) N) sum_k (V01_k - n_k A)^2, S11 = K / (K - 1) sum_k (V10_k - m_k A)(V01_k - n_k A),
    V10_k = sum over cluster k's positives of their mean kernel over all negatives (V01_k likewise).
    """
    from scipy import stats

    pos, neg = np.asarray(pos, float), np.asarray(neg, float)
    out = {"auc": math.nan, "se": math.nan, "low": math.nan, "high": math.nan, "clusters": 0}
    if pos.size == 0 or neg.size == 0:
        return out
    keys = pd.Index(np.unique(np.concatenate([np.asarray(pos_clusters, dtype=str), np.asarray(neg_clusters, dtype=str)])))
    kp, kn = keys.get_indexer(np.asarray(pos_clusters, dtype=str)), keys.get_indexer(np.asarray(neg_clusters, dtype=str))
    K, M, N = len(keys), pos.size, neg.size
    kernel = _psi(pos, neg)
    auc = float(kernel.mean())
    out.update(auc=auc, clusters=K)
    if K < 2:
        return out
    v10 = np.bincount(kp, weights=kernel.mean(axis=1), minlength=K)
    v01 = np.bincount(kn, weights=kernel.mean(axis=0), minlength=K)
    m_k, n_k = np.bincount(kp, minlength=K), np.bincount(kn, minlength=K)
    a10, a01 = v10 - m_k * auc, v01 - n_k * auc
    s10 = K / ((K - 1) * M) * np.sum(a10**2)
    s01 = K / ((K - 1) * N) * np.sum(a01**2)
    s11 = K / (K - 1) * np.sum(a10 * a01)
    var = max(s10 / M + s01 / N + 2 * s11 / (M * N), 0.0)
    se = math.sqrt(var)
    if var <= 1e-12 or auc <= 0.0 or auc >= 1.0:
        # no spread between clusters to learn from (e.g. every positive above every negative): the exact
        # Clopper-Pearson interval on K clusters, as if each were one all-or-nothing comparison
        low, high = (float(v) for v in beta_bounds(auc * K, K, (1 - confidence) / 2, (1 - confidence) / 2))
        out.update(se=se, low=low, high=high)
        return out
    t = float(stats.t.ppf(0.5 + confidence / 2, K - 1))
    clipped = min(max(auc, 0.5 / (M * N)), 1 - 0.5 / (M * N))   # logit needs 0 < A < 1
    centre = math.log(clipped / (1 - clipped))
    half = t * se / (clipped * (1 - clipped))
    out.update(se=se, low=1 / (1 + math.exp(-(centre - half))), high=1 / (1 + math.exp(-(centre + half))))
    return out


def within_cluster_permutation_p(pos, pos_clusters, neg, neg_clusters, n_perm: int = 2000, seed: int = 0) -> float:
    """Two-sided p of "the score does not tell positives from negatives" (AUC = 1/2): the labels are
    permuted within each cluster (exchangeable under the null even when clusters differ), n_perm times;
    p = (1 + #{|A* - 1/2| >= |A - 1/2|}) / (1 + n_perm)."""
    pos, neg = np.asarray(pos, float), np.asarray(neg, float)
    if pos.size == 0 or neg.size == 0:
        return math.nan
    scores = np.concatenate([pos, neg])
    labels = np.r_[np.ones(pos.size, bool), np.zeros(neg.size, bool)]
    clusters = np.concatenate([np.asarray(pos_clusters, dtype=str), np.asarray(neg_clusters, dtype=str)])
    ranks = pd.Series(scores).rank(method="average").to_numpy()
    M, N = pos.size, neg.size

    def auc_of(lab: np.ndarray) -> np.ndarray:   # (R, M + N) boolean labels -> (R,) AUC by rank sums
        return ((lab * ranks).sum(axis=1) - M * (M + 1) / 2) / (M * N)

    observed = abs(float(auc_of(labels[None])[0]) - 0.5)
    rng = np.random.default_rng(seed)
    perms = np.tile(labels, (n_perm, 1))
    for k in np.unique(clusters):
        idx = np.nonzero(clusters == k)[0]
        if idx.size > 1:
            order = np.argsort(rng.random((n_perm, idx.size)), axis=1)
            perms[:, idx] = perms[:, idx][np.arange(n_perm)[:, None], order]
    hits = np.sum(np.abs(auc_of(perms) - 0.5) >= observed - 1e-12)
    return float((hits + 1) / (n_perm + 1))


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
                   scores: Sequence[str] = tuple(SCORES), unit: str = "image") -> pd.DataFrame:
    """Rows (network, method, failure, score): positives, negatives, images, clusters (of `unit`: "image",
    or "volume" / "subject" where the rows carry volume_id / subject_id), AUC with its primary cluster-robust
    interval [auc_low, auc_high] (Obuchowski 1997, `clustered_auc`) and se, the percentile image bootstrap
    beside it (auc_boot_low / auc_boot_high: too narrow with few images), p_chance (within-cluster permutation
    test of AUC = 1/2), AUPRC [low, high] (image bootstrap) and prevalence."""
    frame = _with_image_key(frame)
    unit_col = {"image": "image_key", "volume": "volume_id", "subject": "subject_id"}.get(unit)
    if unit_col is None or unit_col not in frame or frame[unit_col].isna().any():
        raise ValueError(f"cluster unit {unit!r}: the detector rows do not carry it")
    unit_key = unit_col
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
                robust = clustered_auc(pos[score], pos[unit_key], neg[score], neg[unit_key], confidence)
                chance = within_cluster_permutation_p(pos[score], pos[unit_key], neg[score], neg[unit_key],
                                                      n_perm=n_boot, seed=seed)
                out.append({"network": network, "method": method, "failure": failure, "score": score,
                            "positives": len(pos), "negatives": len(neg), "images": pos["image_key"].nunique(),
                            "clusters": robust["clusters"], "unit": unit, "auc": auc[0],
                            "auc_low": robust["low"], "auc_high": robust["high"], "auc_se": robust["se"],
                            "auc_boot_low": auc[1], "auc_boot_high": auc[2], "p_chance": chance,
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
           "bootstrap_by_image", "clustered_auc", "decision_table", "within_cluster_permutation_p", "roc_auc", "roc_curve", "table_one", "use_case"]
