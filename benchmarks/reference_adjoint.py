"""How loosely the reference's adjoint CG may stop: the search through the converged solution map with the
backward CG stopped at several relative residuals, everything else equal (images, start, budget, iterations,
the forward solves to the tolerance), on every operator. The search needs only the gradient's direction; the
gain each search reports is from forward solves to the tolerance, so a looser CG can only steer it worse.

    python -m benchmarks.reference_adjoint [--adjoint 1e-4 1e-2 1e-1] [--tolerance 1e-5] [--iterations 12]

Reports per operator the gains per image at each residual, the largest relative difference to the tightest
one, and the CG iterations per image and search iteration (one torch thread, float64).
"""

from __future__ import annotations

import argparse

import torch

from benchmarks.common import machine
from benchmarks.converged_setup import OPERATORS, blobs, operator
from survey.solvers.converged import ConvergedCS
from survey.solvers.cs import make_reference
from survey.tasks.budget import worst_case


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--adjoint", type=float, nargs="+", default=[1e-4, 1e-2, 1e-1])
    parser.add_argument("--tolerance", type=float, default=1e-5)
    parser.add_argument("--iterations", type=int, default=12)
    parser.add_argument("--size", type=int, default=16)
    parser.add_argument("--images", type=int, default=4)
    parser.add_argument("--budget", type=float, default=0.02)
    parser.add_argument("--operators", nargs="+", default=list(OPERATORS))
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(f"machine: {machine()}; load average {open('/proc/loadavg').read().split()[:3]} (shared machine)")
    print(f"{args.images} blob images of {args.size} x {args.size}, budget {args.budget}, {args.iterations} search "
          f"iterations, 1 random start (the same for all), forward solves to {args.tolerance:g}, float64")
    print("| operator | adjoint CG residual | gains | largest difference to the tightest | CG it. per image and call |")
    print("|---|---|---|---|---|")
    x = blobs(args.images, args.size)
    for name in args.operators:
        physics = operator(name, args.size)
        first = None
        for adjoint in sorted(args.adjoint):
            solver = ConvergedCS(make_reference(physics), tolerance=args.tolerance, max_iterations=50000,
                                 adjoint_tolerance=adjoint)
            found = worst_case(solver, physics, x, (args.budget,), iterations=args.iterations, restarts=1,
                               gradient="adjoint", generator=torch.Generator().manual_seed(7))
            gain = found.gain[0]
            first = gain if first is None else first
            gap = float((gain / first - 1).abs().max())
            s = solver.stats
            cg = s["adjoint_iterations"] / max(s["adjoint_solves"] * x.shape[0], 1)
            print(f"| {name} | {adjoint:g} | {', '.join(f'{g:.3f}' for g in gain.tolist())} | {gap:.2%} | "
                  f"{cg:.0f} |", flush=True)


if __name__ == "__main__":
    main()
