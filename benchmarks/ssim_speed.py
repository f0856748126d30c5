"""SSIM speed on this machine, measured in one run: `survey.metrics.ssim` (depthwise convolutions)
over the previous implementation (a batch of single-channel convolutions), on ball-sized batches
of 64 x 64 images (target >= 2x), and what SSIM adds to a ball draw: its time over one forward
pass of the dagan U-Net on the same batch.

Both sides get the same reconstructions (the network's outputs on brain slices, float32) and the
values are checked to agree to 1e-6 before anything is timed.

    python -m benchmarks.ssim_speed [--batches 64 128 256] [--repeats 5] [--threads N]
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

from benchmarks.common import machine, setup
from survey.metrics import ssim


def ssim_before(x_hat: torch.Tensor, x: torch.Tensor, data_range: float = 1.0) -> torch.Tensor:
    """`survey.metrics.ssim` before the rewrite (same numbers; the speed baseline)."""
    a = x_hat.abs() if torch.is_complex(x_hat) else x_hat
    b = x.abs() if torch.is_complex(x) else x
    batch, channels, height, width = a.shape
    t = torch.arange(-5, 6, dtype=a.dtype, device=a.device)
    w = torch.exp(-0.5 * (t / 1.5) ** 2)
    w = w / w.sum()
    a = a.reshape(batch * channels, 1, height, width)
    b = b.reshape(batch * channels, 1, height, width)
    moments = torch.cat([a, b, a * a, b * b, a * b], dim=0)
    moments = F.conv2d(F.conv2d(moments, w.view(1, 1, 11, 1)), w.view(1, 1, 1, 11))
    mu_a, mu_b, aa, bb, ab = moments.chunk(5, dim=0)
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    num = (2 * mu_a * mu_b + c1) * (2 * (ab - mu_a * mu_b) + c2)
    den = (mu_a ** 2 + mu_b ** 2 + c1) * (aa - mu_a ** 2 + bb - mu_b ** 2 + c2)
    return (num / den).reshape(batch, -1).mean(dim=1)


def interleaved(fns, repeats: int) -> list[float]:
    """Best wall time (seconds) of each function, calling them in turn `repeats` times, so a burst
    of load from other processes on a shared machine hits every side alike."""
    best = [float("inf")] * len(fns)
    for _ in range(repeats):
        for i, fn in enumerate(fns):
            start = time.perf_counter()
            fn()
            best[i] = min(best[i], time.perf_counter() - start)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, nargs="+", default=[64, 128, 256])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    net, physics, images, _ = setup(max(args.batches))
    print(f"machine: {machine()}")
    with torch.inference_mode():
        y = physics.A(images)
        noisy = y + 0.02 * y.abs().amax() * torch.randn(y.shape, dtype=y.dtype, generator=torch.Generator().manual_seed(0))
        outputs = net(noisy, physics)
        print(f"images {tuple(images.shape)} {images.dtype}; outputs {tuple(outputs.shape)} {outputs.dtype}")
        print("batch | before ms | now ms | ratio | max |diff| | dagan forward ms | ssim / forward")
        for b in args.batches:
            x_hat, x = outputs[:b], images[:b]
            diff = float((ssim(x_hat, x) - ssim_before(x_hat, x)).abs().max())
            if diff > 1e-6:
                raise SystemExit(f"values differ by {diff:.3g} at batch {b}")
            before, now, forward = interleaved([lambda: ssim_before(x_hat, x), lambda: ssim(x_hat, x),
                                                lambda: net(noisy[:b], physics)], args.repeats)
            print(f"{b:5d} | {before * 1e3:9.1f} | {now * 1e3:6.1f} | {before / now:5.1f}x | {diff:10.2g} "
                  f"| {forward * 1e3:16.1f} | {now / forward:.3f} (before {before / forward:.2f})")


if __name__ == "__main__":
    main()
