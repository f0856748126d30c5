"""The network side of a search iteration: forward + backward (gradient with respect to the input, as the
attacks take it) of a zoo network, its FLOP rate against the CPU's measured fp32 matmul peak, and the
settings that might help on this CPU (channels_last, torch.compile, threads).

    python -m benchmarks.network_flops [--network dagan] [--batch 8] [--threads 2] [--compile]

FLOPs are counted by torch.utils.flop_counter (matmuls and convolutions, forward and backward); the peak
is the best of a few n x n fp32 matmuls (n = 2048). Both are measured in the same run, so the fraction
is meaningful even on a loaded machine; the absolute rates are not.

What limits it: a torch.profiler run splits the step's self CPU time into the ops that carry the FLOPs
(convolutions and matmuls, forward and backward) and the rest (batch norm, activations, the skip
connections' cat / copy, additions: memory-bound, no FLOPs counted). The convolutions' own rate is the
FLOPs over their time; the bound is the fraction the whole would reach with the convolutions at the
matmul peak and the rest as measured: (F / peak) / (F / peak + t_rest). The benchmark prints the
measured fraction, that bound and which of the two (convolution efficiency or memory-bound rest)
keeps it below 75%.
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


#: Self-time op names that carry the counted FLOPs (substrings of the profiler's op names).
FLOP_OPS = ("conv", "mm", "matmul", "linear", "addmm", "bmm")


def breakdown(net, physics, y: torch.Tensor, steps: int = 2) -> tuple[float, float, list[tuple[str, float]]]:
    """(seconds per step in FLOP-carrying ops, seconds per step in the rest, the rest's 5 largest ops)."""
    from torch.profiler import ProfilerActivity, profile

    step(net, physics, y)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            step(net, physics, y)
    heavy, rest, others = 0.0, 0.0, {}
    for event in prof.key_averages():
        seconds = event.self_cpu_time_total / 1e6 / steps
        if any(key in event.key.lower() for key in FLOP_OPS):
            heavy += seconds
        else:
            rest += seconds
            others[event.key] = others.get(event.key, 0.0) + seconds
    return heavy, rest, sorted(others.items(), key=lambda kv: -kv[1])[:5]


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
    best_peak = max(peak, peak_after)
    heavy, rest, top = breakdown(net, physics, y)
    total = heavy + rest
    measured = count / total / 1e9 / best_peak
    conv_rate = count / heavy / 1e9
    bound = (count / best_peak / 1e9) / (count / best_peak / 1e9 + rest)
    print(f"profiled step: {1e3 * total:.1f} ms, {heavy / total:.0%} in convolutions / matmuls "
          f"({conv_rate:.1f} GFLOP/s there, {conv_rate / best_peak:.0%} of the peak), {rest / total:.0%} in the rest: "
          + ", ".join(f"{name} {1e3 * sec:.1f} ms" for name, sec in top))
    print(f"measured fraction of the matmul peak {measured:.0%}; with the convolutions at the peak and the rest as "
          f"measured at most {bound:.0%}")
    if measured >= 0.75:
        print("limit: none (>= 75% of the peak)")
    elif bound < 0.75:
        print(f"limit: the memory-bound rest ({rest / total:.0%} of the time, no FLOPs): even convolutions at the "
              f"peak leave the whole at {bound:.0%} < 75%")
    else:
        print(f"limit: the convolutions' own efficiency ({conv_rate / best_peak:.0%} of the peak at these shapes)")


if __name__ == "__main__":
    main()
