"""Figures (matplotlib Agg + seaborn), written as PNG and, with `svg=True`, SVG as well.

Image figures read the tensors a unit kept (`<store>/<tensor_file>`, safetensors) through the rows'
`tensor_file` / `tensor_index` (`row_tensors`). The ground truth x is not stored by the tasks: image
figures take it as an argument (the report reloads it from the study's dataset declaration and checks
its content hash) and leave its panel out when it is None. The clean reconstruction f(A x) is not
stored by the attack either; its PSNR (a row column) is printed instead.

Plot functions take plain data (pandas frames from `survey.analysis.db.query`, estimate rows from
`survey.analysis.estimate.estimate`) and return the paths they wrote: [png] or [png, svg].
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any, Mapping, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402
import torch  # noqa: E402

#: Prefix of tensor keys indexed by the row's `image_index` (survey.tasks.ball.PER_IMAGE), not `tensor_index`.
PER_IMAGE = "per_image/"
DPI = 130
#: PSNR above this (exact recovery, e.g. H(y) at full sampling) is drawn at the limit.
PSNR_CAP = 60.0
NETWORK_STYLE = {"network": "-", "reference (CS)": "--", "zero-filled H(y)": ":"}


def _theme() -> None:
    sns.set_theme(context="paper", style="whitegrid", palette="colorblind", font="DejaVu Sans",
                  rc={"axes.titlesize": 9, "axes.labelsize": 9, "xtick.labelsize": 8, "ytick.labelsize": 8,
                      "legend.fontsize": 8, "figure.titlesize": 10, "axes.edgecolor": "#555555"})


def _save(fig, out: Path | str, svg: bool = False) -> list[Path]:
    """Write `fig` to out (.png) and, with svg, next to it as .svg; close it; return the paths."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    png = out.with_suffix(".png")
    fig.savefig(png, dpi=DPI, bbox_inches="tight", facecolor="white")
    paths = [png]
    if svg:
        fig.savefig(out.with_suffix(".svg"), bbox_inches="tight", facecolor="white")
        paths.append(out.with_suffix(".svg"))
    plt.close(fig)
    return paths


def _as_image(t: torch.Tensor) -> np.ndarray:
    """(n, n), (1, n, n) or (1, 1, n, n) tensor -> (n, n) float numpy; complex as magnitude."""
    t = t.detach().cpu()
    t = t.abs() if torch.is_complex(t) else t
    while t.ndim > 2:
        t = t[0]
    return t.to(torch.float32).numpy()


# -- tensors kept in the store --------------------------------------------------------------------

@lru_cache(maxsize=32)
def _load_file(path: str) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(path)


def row_tensors(store: Path | str, row: Mapping[str, Any],
                names: Sequence[str] | None = None) -> dict[str, torch.Tensor]:
    """The tensors a row owns: name -> tensor (one sample, e.g. (1, n, n)).

    Keys "per_image/<name>" (ball centres) are indexed by the row's image_index and returned as <name>.
    ValueError naming the file when the row kept no tensors or the file is missing.
    """
    rel = row.get("tensor_file")
    if rel is None or (isinstance(rel, float) and np.isnan(rel)):
        raise ValueError(f"row of unit {row.get('unit_id')!r} kept no tensors (tensor_file is empty)")
    path = Path(store) / str(rel)
    if not path.is_file():
        raise ValueError(f"tensor file {path} named by unit {row.get('unit_id')!r} does not exist")
    found: dict[str, torch.Tensor] = {}
    for key, value in _load_file(str(path.resolve())).items():
        if key.startswith(PER_IMAGE):
            name, index = key[len(PER_IMAGE):], row.get("image_index")
        else:
            name, index = key, row.get("tensor_index")
        if names is not None and name not in names:
            continue
        if index is None or int(index) >= value.shape[0]:
            raise ValueError(f"{path}: tensor {key!r} has {value.shape[0]} entries, row index is {index!r}")
        found[name] = value[int(index)]
    return found


# -- image figures --------------------------------------------------------------------------------

def image_grid(images: Sequence[torch.Tensor], titles: Sequence[str] | None = None, out: Path = "grid.png",
               ncols: int = 4, vmin: float | None = 0.0, vmax: float | None = 1.0) -> Path:
    """Grid of 2-D images (n, n) in grey levels; complex images are shown as magnitude."""
    count = len(images)
    ncols = max(1, min(ncols, count))
    nrows = (count + ncols - 1) // ncols
    fig, axes = plt.subplots(nrows, ncols, figsize=(2.4 * ncols, 2.5 * nrows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for i, img in enumerate(images):
        img = img.detach().cpu()
        img = img.abs() if torch.is_complex(img) else img
        ax = axes.flat[i]
        ax.imshow(img.numpy(), cmap="gray", vmin=vmin, vmax=vmax)
        if titles is not None:
            ax.set_title(str(titles[i]), fontsize=8)
    return _save(fig, out)[0]


def physics_panel(physics, x: torch.Tensor, out: Path) -> Path:
    """Three panels: x, the sampling pattern or |measurements|, and H(Ax) with its PSNR."""
    from survey.metrics import psnr

    with torch.no_grad():
        y = physics.A(x)
        h = physics.H(y)
        h = h.real if torch.is_complex(h) else h
    mask = getattr(physics, "mask", None)
    if mask is not None:
        pattern, label = mask.detach().cpu().float(), "sampling mask (centred)"
    else:
        meas = y[0, 0].detach().cpu()
        pattern, label = (meas.abs() if torch.is_complex(meas) else meas), "measurements"
    fig, axes = plt.subplots(1, 3, figsize=(9, 3.2))
    axes[0].imshow(x[0, 0].cpu().numpy(), cmap="gray", vmin=0, vmax=1)
    axes[0].set_title("x")
    axes[1].imshow(pattern.numpy(), cmap="gray", aspect="auto")
    axes[1].set_title(label)
    axes[2].imshow(h[0, 0].cpu().numpy(), cmap="gray", vmin=0, vmax=1)
    axes[2].set_title(f"H(Ax), PSNR {float(psnr(h, x)[0]):.1f} dB")
    for ax in axes:
        ax.axis("off")
    fig.suptitle(", ".join(f"{k}={v}" for k, v in physics.describe().items()), fontsize=8)
    return _save(fig, out)[0]


def _panel(ax, image: np.ndarray | None, title: str = "", note: str = "", cmap: str = "gray",
           vmin: float | None = 0.0, vmax: float | None = 1.0):
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_visible(False)
    if title:
        ax.set_title(title, fontsize=8)
    if image is None:
        ax.set_facecolor("white")
        return None
    shown = ax.imshow(image, cmap=cmap, vmin=vmin, vmax=vmax, interpolation="nearest")
    if note:
        ax.text(0.03, 0.03, note, transform=ax.transAxes, fontsize=7, color="white", va="bottom",
                bbox=dict(boxstyle="square,pad=0.15", fc="black", ec="none", alpha=0.6))
    return shown


def _fmt(value: Any, spec: str = ".1f", unit: str = "") -> str:
    if value is None or (isinstance(value, float) and not np.isfinite(value)):
        return "-"
    return f"{value:{spec}}{unit}"


def attack_grid(store: Path | str, rows: Sequence[Mapping[str, Any]], out: Path | str, *,
                x: torch.Tensor | None = None, title: str | None = None, svg: bool = False) -> list[Path]:
    """Paper-style grid of one attacked sample at increasing snapshots r_1 < r_2 < ...

    rows: attack rows of one (unit_id, image_id, restart), any order (sorted by r_rel here).
    Columns: the snapshots; rows of panels: x + r_j, the network's f(A(x + r_j)), the reference on
    the same data (when kept), and |r_j| (shared colour scale). x: the ground truth (n, n) or None;
    when given it heads an extra first column. A measurement-domain r is shown as log10(1 + |e|).
    """
    _theme()
    rows = sorted(rows, key=lambda r: float(r["r_rel"]))
    if not rows:
        raise ValueError("attack_grid needs at least one row")
    kept = [row_tensors(store, r, ("r", "out", "ref_out")) for r in rows]
    has_ref = all("ref_out" in k for k in kept)
    out_shape = tuple(kept[0]["out"].shape)
    image_domain = tuple(kept[0]["r"].shape) == out_shape
    x_img = _as_image(x) if x is not None else None
    labels = ["x + r" if image_domain else "|e| (log)", "network f(A(x + r))"]
    labels += ["reference (CS)"] if has_ref else []
    labels += ["|r|"] if image_domain else []
    lead = 1 if x_img is not None else 0
    ncols, nrows = len(rows) + lead, len(labels)
    fig, axes = plt.subplots(nrows, ncols, figsize=(1.6 * ncols + 0.6, 1.65 * nrows + 0.4), squeeze=False)
    r_maps = [_as_image(k["r"]) for k in kept]
    r_max = max(float(np.abs(m).max()) for m in r_maps) or 1.0
    shown_r = None
    for j, (row, k) in enumerate(zip(rows, kept)):
        c = j + lead
        head = f"‖r‖/‖x‖ = {100 * float(row['r_rel']):.1f}%\niteration {row.get('iteration', '-')}"
        line = 0
        if image_domain:
            base = x_img if x_img is not None else None
            xr = base + r_maps[j] if base is not None else None
            _panel(axes[line, c], xr, head, f"PSNR(x+r, x) {_fmt(row.get('psnr_visibility'))} dB")
            if xr is None:
                axes[line, c].text(0.5, 0.5, "x not available", ha="center", va="center", fontsize=7,
                                   transform=axes[line, c].transAxes, color="#777777")
        else:
            _panel(axes[line, c], np.log10(1 + r_maps[j]), head, cmap="magma", vmin=None, vmax=None)
        line += 1
        _panel(axes[line, c], _as_image(k["out"]), note=f"PSNR {_fmt(row.get('psnr'))} dB")
        line += 1
        if has_ref:
            _panel(axes[line, c], _as_image(k["ref_out"]), note=f"PSNR {_fmt(row.get('ref_psnr'))} dB")
            line += 1
        if image_domain:
            shown_r = _panel(axes[line, c], np.abs(r_maps[j]), cmap="magma", vmin=0.0, vmax=r_max)
    if lead:
        _panel(axes[0, 0], x_img, "x (ground truth)")
        first = rows[0]
        notes = [f"clean PSNR\nnetwork {_fmt(first.get('psnr_clean'))} dB"]
        if has_ref:
            notes.append(f"reference {_fmt(first.get('ref_psnr_clean'))} dB")
        for i in range(1, nrows):
            _panel(axes[i, 0], None)
        axes[1, 0].text(0.5, 0.5, "\n".join(notes), ha="center", va="center", fontsize=7.5,
                        transform=axes[1, 0].transAxes, color="#333333")
    for i, label in enumerate(labels):
        axes[i, lead].set_ylabel(label, fontsize=8)
    if shown_r is not None:
        bar = fig.colorbar(shown_r, cax=axes[-1, -1].inset_axes([1.04, 0.0, 0.06, 1.0]))
        bar.ax.tick_params(labelsize=7)
    if title:
        fig.suptitle(title, fontsize=9, y=1.0)
    return _save(fig, out, svg)


def perturbation_maps(store: Path | str, rows: Sequence[Mapping[str, Any]], out: Path | str, *,
                      svg: bool = False) -> list[Path]:
    """|r| of several worst-case perturbations side by side, each with its own colour bar.

    rows: attack (or ball) rows owning an `r` tensor; the panel title names network, image and r_rel.
    """
    _theme()
    if not rows:
        raise ValueError("perturbation_maps needs at least one row")
    fig, axes = plt.subplots(1, len(rows), figsize=(2.6 * len(rows), 2.5), squeeze=False)
    fig.subplots_adjust(wspace=0.55)
    for ax, row in zip(axes[0], rows):
        r = row_tensors(store, row, ("r",))["r"]
        image = _as_image(r)
        measured = tuple(r.shape) != tuple(row_tensors(store, row, ("out",)).get("out", r).shape)
        shown = _panel(ax, np.log10(1 + image) if measured else image,
                       f"{row['network']} · {row['image_id']}\n‖r‖/‖x‖ = {100 * float(row['r_rel']):.1f}%",
                       cmap="magma", vmin=0.0, vmax=None)
        bar = fig.colorbar(shown, cax=ax.inset_axes([1.04, 0.0, 0.06, 1.0]))
        bar.ax.tick_params(labelsize=7)
    return _save(fig, out, svg)


def ball_grid(store: Path | str, rows: Sequence[Mapping[str, Any]], out: Path | str, *,
              truths: Mapping[tuple[str, str], torch.Tensor] | None = None, svg: bool = False) -> list[Path]:
    """Gaussian-ball persistence, one line per row (one centre each): f(y), f(y + A r), one draw
    f(y + A r + A v), and the artefacts f(y + A r) - f(y) and f(y + A r + A v) - f(y) on a shared
    diverging scale. truths: (network, image_id) -> x, for an extra x + r panel when the centre is
    image-domain (keyed by network too: networks of one study may see one image at different sizes).
    """
    _theme()
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
        clean, centre, draw = _as_image(k["clean_out"]), _as_image(k["center_out"]), _as_image(first)
        a1, a2 = centre - clean, draw - clean
        lim = float(max(np.abs(a1).max(), np.abs(a2).max())) or 1.0
        head = i == 0
        if lead:
            x = truths.get((row["network"], row["image_id"]))
            xr = _as_image(x) + _as_image(k["r"]) if x is not None and k["r"].shape == k["clean_out"].shape else None
            _panel(axes[i, 0], xr, "x + r" if head else "")
        _panel(axes[i, lead], clean, "f(y)" if head else "", f"PSNR {_fmt(row.get('psnr_clean'))} dB")
        _panel(axes[i, lead + 1], centre, "f(y + Ar)" if head else "", f"PSNR {_fmt(row.get('psnr_center'))} dB")
        _panel(axes[i, lead + 2], draw, "f(y + Ar + Av), one draw" if head else "")
        _panel(axes[i, lead + 3], a1, "artefact of r" if head else "", cmap="RdBu_r", vmin=-lim, vmax=lim)
        shown = _panel(axes[i, lead + 4], a2, "artefact with noise v" if head else "", cmap="RdBu_r",
                       vmin=-lim, vmax=lim)
        bar = fig.colorbar(shown, cax=axes[i, lead + 4].inset_axes([1.04, 0.0, 0.06, 1.0]))
        bar.ax.tick_params(labelsize=6)
        axes[i, 0].set_ylabel(f"{row['network']}\n{row['image_id']}\n‖v‖ = {row.get('radius', '-')}·‖r‖",
                              fontsize=7)
    return _save(fig, out, svg)


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


# -- statistics figures ---------------------------------------------------------------------------

def instability_curves(frame: pd.DataFrame, out: Path | str, *, svg: bool = False) -> list[Path]:
    """Relative output change against relative perturbation size, one panel per network.

    frame: attack rows with network, r_rel, out_change_rel and optionally ref_out_change_rel (the
    reference on the same perturbed data). Points are samples; lines are binned means. The dotted
    diagonal is a gain of 1 (output moves as much as the input, relatively).
    """
    _theme()
    if frame.empty:
        raise ValueError("instability_curves needs at least one row")
    parts = [frame.assign(solver="network", change=frame["out_change_rel"])]
    if "ref_out_change_rel" in frame and frame["ref_out_change_rel"].notna().any():
        parts.append(frame.assign(solver="reference (CS)", change=frame["ref_out_change_rel"]))
    long = pd.concat(parts, ignore_index=True).dropna(subset=["change", "r_rel"])
    networks = sorted(long["network"].unique())
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
    return _save(fig, out, svg)


def _interval_plot(estimates: Sequence[Mapping[str, Any]], x: str, out: Path | str, *, hue: str = "network",
                   xlabel: str, ylabel: str, method: str = "clopper-pearson", log_x: bool = False,
                   svg: bool = False) -> list[Path]:
    _theme()
    frame = pd.DataFrame([e for e in estimates if e.get("method") == method])
    if frame.empty:
        raise ValueError(f"no {method} estimates to plot")
    frame = frame.sort_values([hue, x])
    fig, ax = plt.subplots(figsize=(5.2, 3.0))
    palette = sns.color_palette("colorblind", frame[hue].nunique())
    for color, (name, group) in zip(palette, frame.groupby(hue, sort=True)):
        low = group["ci_low"].fillna(0.0).to_numpy(dtype=float)
        high = group["ci_high"].fillna(1.0).to_numpy(dtype=float)
        ax.fill_between(group[x], low, high, color=color, alpha=0.18, lw=0)
        ax.plot(group[x], group["p"], marker="o", ms=4, color=color, label=str(name))
    ax.set_ylim(-0.02, 1.02)
    if log_x:
        ax.set_xscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.legend(title=hue, frameon=True)
    fig.tight_layout()
    return _save(fig, out, svg)


def ball_curves(estimates: Sequence[Mapping[str, Any]], out: Path | str, *, x: str = "radius",
                ylabel: str = "P(artefact persists)", method: str = "clopper-pearson",
                svg: bool = False) -> list[Path]:
    """P(bad) against the ball radius per network, the band being the `method` interval.

    estimates: rows of `estimate(..., by=["network", x])` (all methods; `method` is picked here).
    """
    return _interval_plot(estimates, x, out, xlabel="radius ‖v‖ / ‖r‖", ylabel=ylabel, method=method, svg=svg)


def recovery_rates(estimates: Sequence[Mapping[str, Any]], out: Path | str, *, label: str = "solver",
                   method: str = "clopper-pearson", ylabel: str = "P(detail recovered)",
                   svg: bool = False) -> list[Path]:
    """Point estimates with interval error bars, per network, one colour per `label` value
    (e.g. network vs reference). estimates: estimate rows carrying a `label` key."""
    _theme()
    frame = pd.DataFrame([e for e in estimates if e.get("method") == method])
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


def sweep_curves(frame: pd.DataFrame, out: Path | str, *, svg: bool = False) -> list[Path]:
    """PSNR against the sampling level per network (one panel each), mean with a 95% band over images:
    the network, the reference (CS) and zero-filled H(y); a vertical line marks the training level.

    frame: sweep rows with network, value (ratio / views / sigma), axis, train_value, psnr and
    optionally ref_psnr, h_psnr. PSNR above PSNR_CAP dB is drawn at the cap.
    """
    _theme()
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
                     palette=palette, errorbar=("ci", 95), seed=0, n_boot=500, marker="o", markersize=4,
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
        ax.set_title(name)
    for ax in axes.flat[len(networks):]:
        ax.axis("off")
    if axes.flat[0].get_legend() is not None:
        sns.move_legend(axes.flat[0], "upper left", title=None, frameon=True)
    fig.tight_layout()
    return _save(fig, out, svg)


__all__ = ["PSNR_CAP", "attack_grid", "ball_curves", "ball_grid", "image_grid", "insertion_grid",
           "instability_curves", "perturbation_maps", "physics_panel", "recovery_rates", "row_tensors",
           "sweep_curves"]
