"""The network side of a search iteration: forward + backward (gradient with respect to the input, as the
attacks take it) of a zoo network, its FLOP rate against the CPU's measured fp32 matmul peak, and the
settings that might help on this CPU (channels_last, torch.compile, threads).

    python -m benchmarks.network_flops [--network dagan] [--batch 8] [--threads 2] [--compile]

FLOPs are counted by torch.utils.flop_counter (matmuls and convolutions, forward and backward); the peak
is the best of a few n x n fp32 matmuls (n = 2048). Both are measured in the same run, so the fraction
is meaningful even on a loaded machine; the absolute rates are not.
"""

from __future__ import annotations

import argparse
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from benchmarks.common import machine


def matmul_peak(n: int = 2048, repeats: int = 5) -> float:
    """Best fp32 matmul rate, GFLOP/s."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - start)
    return 2 * n ** 3 / best / 1e9


def step(net, physics, y: torch.Tensor) -> None:
    u = y.detach().requires_grad_(True)
    out = net(u, physics)
    (out.abs().square() if torch.is_complex(out) else out.square()).sum().backward()


def flops(net, physics, y: torch.Tensor) -> int:
    counter = FlopCounterMode(display=False)
    with counter:
        step(net, physics, y)
    return counter.get_total_flops()


def timed(fn, repeats: int) -> float:
    fn()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--network", default="dagan")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--compile", action="store_true", help="also time torch.compile (slow to compile)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)
    from benchmarks.budget_search import load

    net, physics, images = load(args.network, args.batch)
    y = physics.A(images)
    print(f"machine: {machine()}; load average {open('/proc/loadavg').read().split()[:3]} (shared machine)")
    peak = matmul_peak()
    count = flops(net, physics, y)
    print(f"fp32 matmul peak (2048^3, {args.threads} threads): {peak:.1f} GFLOP/s")
    print(f"{args.network} forward + input gradient, batch {args.batch}: {count / 1e9:.2f} GFLOP")
    variants = {"default": (net, y)}
    try:
        variants["channels_last"] = (net.to(memory_format=torch.channels_last), y)
    except (RuntimeError, TypeError) as err:
        print(f"channels_last unavailable: {err}")
    if args.compile:
        variants["torch.compile"] = (torch.compile(net), y)
    print("| variant | ms per batch | GFLOP/s | fraction of the matmul peak |")
    print("|---|---|---|---|")
    for name, (model, inputs) in variants.items():
        seconds = timed(lambda: step(model, physics, inputs), args.repeats)
        rate = count / seconds / 1e9
        print(f"| {name} | {1e3 * seconds:.1f} | {rate:.1f} | {rate / peak:.0%} |")
        if name == "channels_last":
            net.to(memory_format=torch.contiguous_format)
    peak_after = matmul_peak()
    print(f"matmul peak again after the runs: {peak_after:.1f} GFLOP/s (load changes between blocks)")


if __name__ == "__main__":
    main()
