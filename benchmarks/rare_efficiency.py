"""Score calls of splitting, last-particle and importance sampling against naive Monte Carlo at equal error.

    .venv/bin/python benchmarks/rare_efficiency.py [--repeats 100] [--dim 64] [--gain 4]

On the planted linear map (survey.rare.exact.LinearMap, S(z) = ||G sigma z|| / ||x0||, exact p by
quadrature) at p = 1e-6 and 1e-9: `repeats` independent estimates of each estimator at its validated
settings (survey.rare.settings: every estimate pools its independent runs and is cross-checked against
importance sampling, and its calls count all of them) give its relative RMS error e = sqrt(mean((p_hat / p - 1)^2)) and mean calls C; naive Monte Carlo
needs N_mc = (1 - p) / (p e^2) calls for the same relative error; the ratio N_mc / C is printed, with the
interval coverage. Importance sampling's calls include its design-point search, each gradient evaluation
counted once; `ratio (grad = 3 calls)` counts each as three forward passes.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from survey.rare.coverage import estimate  # noqa: E402
from survey.rare.exact import LinearMap  # noqa: E402


def measure(method: str, model: LinearMap, delta: float, p: float, repeats: int) -> dict:
    start = time.perf_counter()
    results = estimate(method, model, delta, repeats, seed=20_000, dtype=torch.float64)
    ratio = np.array([res.p / p for res in results])
    rel_err = float(np.sqrt(np.mean((ratio - 1) ** 2)))
    calls = float(np.mean([res.calls for res in results]))
    grads = float(np.mean([res.grad_calls for res in results]))
    n_mc = (1 - p) / (p * rel_err**2)
    return {"method": method, "rel_err": rel_err, "calls": calls, "n_mc": n_mc, "ratio": n_mc / calls,
            "ratio_grad3": n_mc / (calls + 2 * grads),
            "coverage": float(np.mean([res.covers(p) for res in results])),
            "median_log10_err": float(np.median([abs(res.log10_p - math.log10(p)) for res in results])),
            "seconds_per_estimate": (time.perf_counter() - start) / repeats}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=100)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--gain", type=float, default=4.0)
    args = parser.parse_args()
    torch.set_num_threads(1)
    model = LinearMap(args.dim, gain=args.gain)
    print(f"linear map d={args.dim} K={args.gain}, {args.repeats} estimates each at validated settings; "
          f"torch {torch.__version__}")
    print(f"{'p':>9} {'method':>13} {'rel err':>8} {'calls':>9} {'N_mc':>10} {'ratio':>8} "
          f"{'ratio(g=3)':>10} {'cover':>6} {'med|dlog10|':>11} {'s/est':>6}")
    for nominal in (1e-6, 1e-9):
        delta = model.delta_for(nominal)
        p = model.probability(delta)
        for method in ("splitting", "last-particle", "importance"):
            m = measure(method, model, delta, p, args.repeats)
            print(f"{p:9.3e} {method:>13} {m['rel_err']:8.3f} {m['calls']:9.0f} {m['n_mc']:10.3g} "
                  f"{m['ratio']:8.0f} {m['ratio_grad3']:10.0f} {m['coverage']:6.2f} {m['median_log10_err']:11.3f} "
                  f"{m['seconds_per_estimate']:6.2f}", flush=True)


if __name__ == "__main__":
    main()
