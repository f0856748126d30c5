"""The reference's worst-case search through its converged solution map: implicit gradients at the fixed
point against autograd through the same tolerance-stopped FISTA (the unroll), on every operator.

Same images, start, budget and iterations for both; both score with the same solve, so the gains differ
only through the gradients. Reports per operator the largest per-image relative gain difference and the
wall time of each search (one torch thread; on a shared machine the times are indicative, the ratio is
measured in one run).

    python -m benchmarks.converged_agreement [--tolerance 1e-7] [--iterations 8] [--size 16] [--images 4]
"""

from __future__ import annotations

import argparse
import time

import torch

from benchmarks.common import machine
from benchmarks.converged_setup import OPERATORS, blobs, operator
from survey.solvers.converged import ConvergedCS
from survey.solvers.cs import make_reference
from survey.tasks.budget import worst_case

def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tolerance", type=float, default=1e-7)
    parser.add_argument("--adjoint-tolerance", type=float, default=1e-4)
    parser.add_argument("--iterations", type=int, default=8)
    parser.add_argument("--size", type=int, default=16)
    parser.add_argument("--images", type=int, default=4)
    parser.add_argument("--budget", type=float, default=0.02)
    parser.add_argument("--operators", nargs="+", default=list(OPERATORS))
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(f"machine: {machine()}; load average {open('/proc/loadavg').read().split()[:3]} (shared machine)")
    print(f"{args.images} images of {args.size} x {args.size}, budget {args.budget}, {args.iterations} search "
          f"iterations, 1 random start, tolerance {args.tolerance:g} (adjoint CG {args.adjoint_tolerance:g}), float64")
    print("| operator | gains, implicit | gains, unroll | largest difference | s implicit | s unroll | ratio |")
    print("|---|---|---|---|---|---|---|")
    x = blobs(args.images, args.size)
    for name in args.operators:
        physics = operator(name, args.size)
        gains, seconds = {}, {}
        for rule in ("implicit", "unroll"):
            solver = ConvergedCS(make_reference(physics), tolerance=args.tolerance, max_iterations=50000,
                                 gradient=rule, adjoint_tolerance=args.adjoint_tolerance)
            start = time.perf_counter()
            found = worst_case(solver, physics, x, (args.budget,), iterations=args.iterations, restarts=1,
                               gradient="adjoint", generator=torch.Generator().manual_seed(7))
            seconds[rule] = time.perf_counter() - start
            gains[rule] = found.gain[0]
            if solver.stats["not_converged"]:
                print(f"  {name} {rule}: {solver.stats['not_converged']} solves did not reach the tolerance")
        gap = float((gains["implicit"] / gains["unroll"] - 1).abs().max())
        print(f"| {name} | {', '.join(f'{g:.3f}' for g in gains['implicit'].tolist())} | "
              f"{', '.join(f'{g:.3f}' for g in gains['unroll'].tolist())} | {gap:.2%} | {seconds['implicit']:.1f} | "
              f"{seconds['unroll']:.1f} | {seconds['unroll'] / seconds['implicit']:.1f}x |", flush=True)


if __name__ == "__main__":
    main()
