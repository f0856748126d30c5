"""The reference's worst-case search: cost per iteration and gain, the unrolled 200-iteration FISTA
(today's path) against the reference solved to a tolerance with implicit gradients and warm starts,
and the gain against the solver's tolerance (is the reference's worst case a property of compressed
sensing or of stopping FISTA after 200 iterations?).

    python -m benchmarks.reference_search cost [--images 2] [--iterations 10] [--tolerances 1e-4] [--adjoint 1e-3 1e-1]
    python -m benchmarks.reference_search tolerance [--tolerances 1e-2 1e-3 1e-4 1e-5 1e-6] [--iterations 30]
    python -m benchmarks.reference_search warm [--tolerances 1e-5]     (what a warm start saves)

Both use brain test slices on the operator of a zoo network (default: dagan's 64 x 64 Cartesian MRI),
the reference's tuned weights, one budget, the same random start for every solver, one torch thread.
"""

from __future__ import annotations

import argparse
import time

import torch

from benchmarks.common import machine
from survey.solvers.converged import ConvergedCS
from survey.solvers.cs import make_reference
from survey.tasks.budget import worst_case


def load(network: str, count: int, dtype: torch.dtype):
    from survey.data import load_dataset
    from survey.nets.zoo import build_physics, entry

    physics = build_physics(network).to(dtype)
    data = load_dataset(entry(network).dataset, split="test", size=physics.size)
    step = max(len(data) // count, 1)
    return physics, data.images[::step][:count].to(dtype)


def search(solver, physics, x, budget: float, iterations: int, seed: int = 0):
    """(gain per image, seconds per search iteration, trace) of one search."""
    start = time.perf_counter()
    found = worst_case(solver, physics, x, (budget,), iterations=iterations, restarts=1, gradient="adjoint",
                       generator=torch.Generator().manual_seed(seed))
    seconds = (time.perf_counter() - start) / max(iterations, 1)
    return found.gain[0], seconds, found.trace[0]


def converged(physics, tolerance: float, gradient: str = "implicit", adjoint: float = 1e-3) -> ConvergedCS:
    return ConvergedCS(make_reference(physics), tolerance=tolerance, max_iterations=20000, gradient=gradient,
                       adjoint_tolerance=max(adjoint, tolerance))


def profile(history: list[float]) -> str:
    """Mean iterations per image of each call, abbreviated: the first 6 and the last 3."""
    values = [f"{v:.0f}" for v in history]
    return " ".join(values if len(values) <= 9 else values[:6] + ["..."] + values[-3:])


def warm_starts(args) -> None:
    """FISTA iterations to the tolerance from a cold start and from the exact solution of a nearby
    problem (the measurements moved by a random image perturbation of relative size d), per image."""
    from survey.solvers.fixed_point import solve

    physics, x = load(args.network, args.images, torch.float64)
    solver = converged(physics, args.tolerances[0])
    y = physics.A(x)
    problem = solver.problem(y, physics)
    exact, _ = solve(problem, y, None, 1e-9, 100000)
    print(f"machine: {machine()}; load average {open('/proc/loadavg').read().split()[:3]} (shared machine)")
    print(f"{args.network} operator, {x.shape[0]} images, tolerance {args.tolerances[0]:g}, float64")
    print("| move d = ||r|| / ||x|| | FISTA iterations, cold | warm (from the exact solution at d = 0) |")
    print("|---|---|---|")
    g = torch.Generator().manual_seed(0)
    for d in (3e-2, 1e-2, 1e-3, 1e-4):
        r = torch.randn(x.shape, generator=g, dtype=x.dtype)
        r = r * (d * x.flatten(1).norm(dim=1) / r.flatten(1).norm(dim=1)).view(-1, 1, 1, 1)
        moved = physics.A(x + r)
        _, cold = solve(problem, moved, None, args.tolerances[0], 100000)
        _, warm = solve(problem, moved, exact, args.tolerances[0], 100000)
        print(f"| {d:g} | {', '.join(map(str, cold.iterations.tolist()))} | "
              f"{', '.join(map(str, warm.iterations.tolist()))} |", flush=True)


def cost(args) -> None:
    physics, x = load(args.network, args.images, torch.float32)
    print(f"machine: {machine()}; load average {open('/proc/loadavg').read().split()[:3]} (shared machine)")
    rows = []
    unrolled = make_reference(physics)  # worst_case runs it unrolled (200 iterations, autograd)
    gain, sec, _ = search(unrolled, physics, x, args.budget, args.iterations)
    rows.append(("unrolled FISTA, 200 iterations (today)", gain, sec, ""))
    for tol in args.tolerances:
        for adjoint in args.adjoint:
            solver = converged(physics, tol, adjoint=adjoint)
            gain, sec, _ = search(solver, physics, x, args.budget, args.iterations)
            s = solver.stats
            note = (f"{s['iterations'] / max(s['images'], 1):.0f} FISTA it./solve, "
                    f"{s['adjoint_iterations'] / max(s['adjoint_solves'] * x.shape[0], 1):.0f} CG it./image, "
                    f"{s['not_converged']} solves not converged")
            rows.append((f"converged to {tol:g} (adjoint CG to {max(adjoint, tol):g}), implicit gradients, "
                         "warm starts", gain, sec, note))
            print(f"  per call at {tol:g} / adjoint {adjoint:g} (mean per image; the first is the clean solve), "
                  f"FISTA: {profile(s['forward_history'])}; CG: {profile(s['adjoint_history'])}", flush=True)
    if args.unroll_check:
        solver = converged(physics, args.tolerances[0], gradient="unroll")
        gain, sec, _ = search(solver, physics, x, args.budget, args.iterations)
        rows.append((f"converged to {args.tolerances[0]:g}, unrolled through the solve (cross-check)", gain, sec, ""))
    # The unroll again after the converged rows: on a shared machine the load moves between blocks, so the
    # base is the mean of the two unroll timings and both are shown.
    gain, again, _ = search(unrolled, physics, x, args.budget, args.iterations)
    rows.append(("unrolled FISTA, 200 iterations, timed again last", gain, again, ""))
    base = (rows[0][2] + again) / 2
    print(f"{args.network} operator, {x.shape[0]} images x 1 budget ({args.budget}) x 1 start, {args.iterations} "
          f"search iterations, {torch.get_num_threads()} thread(s), float32")
    print("| solver | median gain | s per search iteration | cost ratio (mean of the two unroll timings / this) | notes |")
    print("|---|---|---|---|---|")
    for name, gain, sec, note in rows:
        print(f"| {name} | {float(gain.median()):.3f} | {sec:.3f} | {base / sec:.1f}x | {note} |")


def tolerance(args) -> None:
    physics, x = load(args.network, args.images, torch.float64)
    print(f"machine: {machine()}; load average {open('/proc/loadavg').read().split()[:3]} (shared machine)")
    print(f"{args.network} operator, {x.shape[0]} images, budget {args.budget}, {args.iterations} search "
          f"iterations, 1 random start (the same for every solver), float64")
    print("| solver | gain per image | median gain | best gain at 50% / 100% of the iterations (median) | "
          "FISTA it. per solve | not converged |")
    print("|---|---|---|---|---|---|")
    unrolled = make_reference(physics).to(torch.float64)
    gain, _, trace = search(unrolled, physics, x, args.budget, args.iterations)
    print(f"| FISTA, 200 iterations (unrolled) | {', '.join(f'{g:.3f}' for g in gain.tolist())} | "
          f"{float(gain.median()):.3f} | {float(trace[:, 1].median()):.3f} / {float(trace[:, 2].median()):.3f} "
          "| 200 | - |")
    for tol in args.tolerances:
        solver = converged(physics, tol)
        gain, _, trace = search(solver, physics, x, args.budget, args.iterations)
        s = solver.stats
        print(f"| converged to {tol:g} | {', '.join(f'{g:.3f}' for g in gain.tolist())} | {float(gain.median()):.3f} | "
              f"{float(trace[:, 1].median()):.3f} / {float(trace[:, 2].median()):.3f} | "
              f"{s['iterations'] / max(s['images'], 1):.0f} | {s['not_converged']} of {s['images']} |", flush=True)
    # The control: the same solver path with no regulariser (lam_w = lam_tv = 0) is least squares from H's
    # image, whose solution map is linear and known, so its gain must not depend on the tolerance.
    for tol in args.tolerances:
        control = ConvergedCS(make_reference(physics, lam_w=0.0, lam_tv=0.0), tolerance=tol, max_iterations=20000,
                              adjoint_tolerance=max(1e-3, tol)).to(torch.float64)
        gain, _, trace = search(control, physics, x, args.budget, args.iterations)
        s = control.stats
        print(f"| control: no regulariser (H's least squares), to {tol:g} | "
              f"{', '.join(f'{g:.3f}' for g in gain.tolist())} | {float(gain.median()):.3f} | "
              f"{float(trace[:, 1].median()):.3f} / {float(trace[:, 2].median()):.3f} | "
              f"{s['iterations'] / max(s['images'], 1):.0f} | {s['not_converged']} of {s['images']} |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=["cost", "tolerance", "warm"])
    parser.add_argument("--network", default="dagan")
    parser.add_argument("--images", type=int, default=2)
    parser.add_argument("--budget", type=float, default=0.02)
    parser.add_argument("--iterations", type=int, default=10)
    parser.add_argument("--tolerances", type=float, nargs="+", default=None)
    parser.add_argument("--unroll-check", action="store_true", help="also time the full unroll of the converged solve")
    parser.add_argument("--adjoint", type=float, nargs="+", default=[1e-3],
                        help="relative residuals of the adjoint CG (cost mode; floored at the tolerance)")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)
    if args.mode == "warm":
        args.tolerances = args.tolerances or [1e-5]
        warm_starts(args)
    elif args.mode == "cost":
        args.tolerances = args.tolerances or [1e-4, 1e-5]
        cost(args)
    else:
        args.tolerances = args.tolerances or [1e-2, 1e-3, 1e-4, 1e-5, 1e-6]
        tolerance(args)


if __name__ == "__main__":
    main()
