"""Benchmark: one 200-iteration solve of the unrolled CS reference with the wavelet as per-level matrix products
(survey.solvers.wavelet_matrix, the default up to MAX_SIDE) against the convolutions (MAX_SIDE = 0), in one run.

Prints seconds per solve (median of `--repeats`, the two paths interleaved) and the largest output difference
relative to the largest pixel. `python -m benchmarks.reference_wavelet`
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

import survey.solvers.wavelet_matrix as wavelet_matrix
from benchmarks.common import machine
from survey.physics import make_physics
from survey.solvers import make_reference

OPERATORS = {"mri 64": ("mri", dict(size=64, ratio=0.2, mask="uniform-lines", seed=0)),
             "mri 16": ("mri", dict(size=16, ratio=0.5, mask="uniform-lines", seed=0)),
             "radon 64": ("radon", dict(size=64, views=50)),
             "denoise 64": ("denoise", dict(size=64, sigma=0.05))}


def solve(reference, y, physics, dense: bool) -> tuple[float, torch.Tensor]:
    keep = wavelet_matrix.MAX_SIDE
    wavelet_matrix.MAX_SIDE = keep if dense else 0
    try:
        start = time.perf_counter()
        out = reference(y, physics)
        return time.perf_counter() - start, out
    finally:
        wavelet_matrix.MAX_SIDE = keep


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(machine())
    for label, (kind, params) in OPERATORS.items():
        physics = make_physics(kind, **params)
        reference = make_reference(physics)
        x = torch.rand(args.images, 1, params["size"], params["size"], generator=torch.Generator().manual_seed(0))
        y = physics.A(x)
        times: dict[bool, list[float]] = {True: [], False: []}
        outputs: dict[bool, torch.Tensor] = {}
        for _ in range(args.repeats + 1):   # the first round warms both paths and is not counted
            for dense in (True, False):
                seconds, outputs[dense] = solve(reference, y, physics, dense)
                times[dense].append(seconds)
        fast, slow = (statistics.median(times[d][1:]) for d in (True, False))
        diff = float((outputs[True] - outputs[False]).abs().max() / outputs[False].abs().max())
        print(f"{label}: matrix products {fast:.3f} s, convolutions {slow:.3f} s per solve ({slow / fast:.2f}x); "
              f"outputs differ by {diff:.1e} of the largest pixel", flush=True)


if __name__ == "__main__":
    main()
