"""Shared set-up for the benchmarks: a DAGAN-sized U-Net on 64 x 64 MRI and real brain slices."""

from __future__ import annotations

import platform
import time

import torch


def machine() -> str:
    return f"{platform.machine()} {platform.processor() or ''} {torch.get_num_threads()} torch threads, " \
           f"torch {torch.__version__}, {'cuda' if torch.cuda.is_available() else 'cpu'}".replace("  ", " ")


def setup(count: int = 16, size: int = 64):
    """(net, physics, images, ids): the dagan architecture (trained weights when present) on brain slices."""
    from survey.data import load_dataset
    from survey.nets.zoo import build_network, build_physics, is_trained, load_network

    torch.set_flush_denormal(True)
    if is_trained("dagan"):
        net, physics = load_network("dagan")
    else:  # throughput does not depend on the weights
        physics = build_physics("dagan")
        net = build_network("dagan").eval()
    for p in net.parameters():
        p.requires_grad_(False)
    data = load_dataset("brain", split="test", size=size)
    reps = (count + len(data) - 1) // len(data)
    images = data.images.repeat(reps, 1, 1, 1)[:count]
    ids = [f"{i}" for i in range(count)]
    return net, physics, images, ids


def timed(fn, repeats: int = 3) -> float:
    """Best wall time of `repeats` calls (seconds)."""
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best
