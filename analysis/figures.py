"""Figures (matplotlib/seaborn), written as PNG (and SVG where asked)."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402


def _save(fig, out: Path) -> Path:
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120, bbox_inches="tight")
    plt.close(fig)
    return out


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
    return _save(fig, out)


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
    return _save(fig, out)
