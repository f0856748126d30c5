"""Figures (matplotlib Agg + seaborn), written as PNG and, with `svg=True`, SVG as well.

Image figures read the tensors a unit kept (`<store>/<tensor_file>`, safetensors) through the rows'
`tensor_file` / `tensor_index` (`row_tensors`). The ground truth x is not stored by the tasks: image
figures take it as an argument (the report reloads it from the study's dataset declaration and checks
its content hash) and leave its panel out when it is None. The clean reconstruction f(A x) is not
stored by the attack either; its PSNR (a row column) is printed instead.

Kept tensors are read only through `row_tensors`, which checks the file against the row's
`tensor_sha256`: a unit retracted by `survey forget` (file deleted) or redone since (file rewritten)
never lends its tensors to a stale row, and the in-process cache is keyed by the file's identity
(inode, size, mtime), so a rewritten file is read again. Which rows to show at all (the ledger's live
units) is the report's choice (`survey.analysis.sections.base.Context.live`).

Figures of one table live with its report section (survey.analysis.sections.<table>); the names are
importable from here as well.

Plot functions take plain data (pandas frames from `survey.analysis.db.query`, estimate rows from
`survey.analysis.estimate.estimate`) and return the paths they wrote: [png] or [png, svg].
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from importlib import import_module
from pathlib import Path
from typing import Any, Mapping, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402
import torch  # noqa: E402

from survey.layout import PER_IMAGE  # noqa: E402  (keys indexed by the row's image_index, not tensor_index)
DPI = 130
#: The text width of an A4 page in the report's print layout (inches): a wider figure is shrunk to it in the PDF,
#: so `save_figure` enlarges its text by the same factor (at most MAX_TEXT_SCALE) to keep it legible there.
A4_TEXT_WIDTH = 7.2
MAX_TEXT_SCALE = 1.5
#: PSNR above this (exact recovery, e.g. H(y) at full sampling) is drawn at the limit.
PSNR_CAP = 60.0
NETWORK_STYLE = {"network": "-", "reference (CS)": "--", "zero-filled H(y)": ":"}


def theme() -> None:
    sns.set_theme(context="paper", style="whitegrid", palette="colorblind", font="DejaVu Sans",
                  rc={"axes.titlesize": 9, "axes.labelsize": 9, "xtick.labelsize": 8, "ytick.labelsize": 8,
                      "legend.fontsize": 8, "figure.titlesize": 10, "axes.edgecolor": "#555555"})


def save_figure(fig, out: Path | str, svg: bool = False) -> list[Path]:
    """Write `fig` to out (.png) and, with svg, next to it as .svg; close it; return the paths."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    legible_at_a4(fig)
    png = out.with_suffix(".png")
    fig.savefig(png, dpi=DPI, bbox_inches="tight", facecolor="white")
    paths = [png]
    if svg:
        fig.savefig(out.with_suffix(".svg"), bbox_inches="tight", facecolor="white")
        paths.append(out.with_suffix(".svg"))
    plt.close(fig)
    return paths


def legible_at_a4(fig) -> float:
    """Enlarge every text of a figure wider than A4_TEXT_WIDTH by width / A4_TEXT_WIDTH (at most MAX_TEXT_SCALE),
    so that shrunk to the page its text keeps the size it was drawn at; re-fits a tight layout. Returns the factor."""
    width = float(fig.get_size_inches()[0])
    scale = min(MAX_TEXT_SCALE, width / A4_TEXT_WIDTH)
    if scale <= 1.0:
        return 1.0
    for text in fig.findobj(matplotlib.text.Text):
        text.set_fontsize(text.get_fontsize() * scale)
    from matplotlib.ticker import AutoLocator, MaxNLocator

    for ax in fig.axes:   # larger tick labels need fewer ticks to stay apart
        for axis in (ax.xaxis, ax.yaxis):
            if type(axis.get_major_locator()) is AutoLocator:
                axis.set_major_locator(MaxNLocator(nbins=5, steps=[1, 2, 2.5, 5, 10]))
    if fig.get_layout_engine() is None or type(fig.get_layout_engine()).__name__ == "TightLayoutEngine":
        try:
            fig.tight_layout()
        except (ValueError, RuntimeError):   # a figure tight_layout cannot fit keeps its layout
            pass
    return scale


def as_image(t: torch.Tensor) -> np.ndarray:
    """(n, n), (1, n, n) or (1, 1, n, n) tensor -> (n, n) float numpy; complex as magnitude."""
    t = t.detach().cpu()
    t = t.abs() if torch.is_complex(t) else t
    while t.ndim > 2:
        t = t[0]
    return t.to(torch.float32).numpy()


# -- tensors kept in the store --------------------------------------------------------------------

_CACHE_SIZE = 32
#: (path, inode, size, mtime_ns) -> (sha256 of the file, its tensors); least recently used first.
_cache: "OrderedDict[tuple, tuple[str, dict[str, torch.Tensor]]]" = OrderedDict()


def clear_cache() -> None:
    """Forget every tensor file read so far (the cache also notices rewritten files by itself)."""
    _cache.clear()


def _load_file(path: Path, sha256: str | None = None) -> dict[str, torch.Tensor]:
    """The tensors of one safetensors file; ValueError when its sha256 is not the expected one."""
    from safetensors.torch import load

    stat = path.stat()
    key = (str(path), stat.st_ino, stat.st_size, stat.st_mtime_ns)
    hit = _cache.get(key)
    if hit is None:
        data = path.read_bytes()
        hit = (hashlib.sha256(data).hexdigest(), load(data))
        _cache[key] = hit
        while len(_cache) > _CACHE_SIZE:
            _cache.popitem(last=False)
    else:
        _cache.move_to_end(key)
    if sha256 and hit[0] != sha256:
        raise ValueError(f"tensor file {path} is not the one the row recorded (sha256 {hit[0][:12]}… != "
                         f"{sha256[:12]}…): its unit was retracted or redone after this row was written")
    return hit[1]


def row_tensors(store: Path | str, row: Mapping[str, Any],
                names: Sequence[str] | None = None) -> dict[str, torch.Tensor]:
    """The tensors a row owns: name -> tensor (one sample, e.g. (1, n, n)).

    Keys "per_image/<name>" (ball centres) are indexed by the row's image_index and returned as <name>.
    ValueError naming the file when the row kept no tensors, the file is missing, or it is not the file
    the row recorded (`tensor_sha256`, when the row has one).
    """
    rel = row.get("tensor_file")
    if rel is None or (isinstance(rel, float) and np.isnan(rel)):
        raise ValueError(f"row of unit {row.get('unit_id')!r} kept no tensors (tensor_file is empty)")
    path = Path(store) / str(rel)
    if not path.is_file():
        raise ValueError(f"tensor file {path} named by unit {row.get('unit_id')!r} does not exist")
    digest = row.get("tensor_sha256")
    digest = digest if isinstance(digest, str) else None
    found: dict[str, torch.Tensor] = {}
    for key, value in _load_file(path.resolve(), digest).items():
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
    return save_figure(fig, out)[0]


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
    return save_figure(fig, out)[0]


def panel(ax, image: np.ndarray | None, title: str = "", note: str = "", cmap: str = "gray",
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


def fmt(value: Any, spec: str = ".1f", unit: str = "") -> str:
    if value is None or (isinstance(value, float) and not np.isfinite(value)):
        return "-"
    return f"{value:{spec}}{unit}"


# -- statistics figures ---------------------------------------------------------------------------

def interval_plot(estimates: Sequence[Mapping[str, Any]], x: str, out: Path | str, *, hue: str = "network",
                   xlabel: str, ylabel: str, method: str = "clopper-pearson", log_x: bool = False,
                   svg: bool = False) -> list[Path]:
    theme()   # method "primary": each group's primary interval (see survey.analysis.estimate)
    frame = pd.DataFrame([e for e in estimates if (e.get("primary") if method == "primary" else e.get("method") == method)])
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
    return save_figure(fig, out, svg)


def per_image_plot(counts: pd.DataFrame, by: Sequence[str], out: Path | str, *, max_groups: int = 12,
                   svg: bool = False) -> list[Path]:
    """The distribution over images of each image's P(bad) = k_i / n_i: one empirical CDF per group of `by`.

    counts: one row per (group, image) with the `by` columns, n_i (rows) and k_i (bad rows), as
    `survey.analysis.estimate` counts them; at most `max_groups` groups are drawn (in sorted order).
    """
    theme()
    frame = counts[counts["n_i"] > 0].copy()
    if frame.empty:
        raise ValueError("per_image_plot needs at least one image with rows")
    frame["p_i"] = frame["k_i"] / frame["n_i"]
    by = list(by)
    frame["group"] = (frame[by].astype(str).agg(", ".join, axis=1) if by else "all")
    groups = sorted(frame["group"].unique())[:max_groups]
    fig, ax = plt.subplots(figsize=(5.4, 3.2))
    for color, name in zip(sns.color_palette("colorblind", len(groups)), groups):
        p = np.sort(frame.loc[frame["group"] == name, "p_i"].to_numpy(dtype=float))
        steps = np.arange(1, p.size + 1) / p.size
        ax.step(np.concatenate([[0.0], p, [1.0]]), np.concatenate([[0.0], steps, [1.0]]), where="post",
                color=color, label=f"{name} ({p.size} images)")
    ax.set_xlim(-0.02, 1.02)
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel("P(bad) of an image (share of its rows that are bad)")
    ax.set_ylabel("fraction of images")
    ax.legend(title=", ".join(by) or None, frameon=True, fontsize=7, title_fontsize=7)
    fig.tight_layout()
    return save_figure(fig, out, svg)


#: Figures kept with their report section, importable from here too: name -> section module.
_MOVED = {"attack_grid": "attacks", "perturbation_maps": "attacks", "instability_curves": "attacks",
          "ball_grid": "ball", "ball_curves": "ball", "insertion_grid": "insertions", "recovery_rates": "insertions",
          "sweep_curves": "sweeps"}


def __getattr__(name: str):
    if name in _MOVED:
        return getattr(import_module(f"survey.analysis.sections.{_MOVED[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


#: The former private names, kept for callers outside this repository.
_theme = theme
_save = save_figure
_as_image = as_image
_panel = panel
_fmt = fmt
_interval_plot = interval_plot

__all__ = ["PSNR_CAP", "as_image", "attack_grid", "ball_curves", "ball_grid", "clear_cache", "fmt", "image_grid",
           "insertion_grid", "instability_curves", "interval_plot", "panel", "per_image_plot", "perturbation_maps",
           "physics_panel", "recovery_rates", "row_tensors", "save_figure", "sweep_curves", "theme"]
