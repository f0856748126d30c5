"""Coverage of the rare-event estimators on the planted maps with exact answers, at the validated settings.

`PLANTED` names the maps (survey.rare.exact); `measure(estimator, map, p, repeats)` runs `repeats`
independent estimates at the threshold with exact probability ~p (as one batch for the splitting
estimators) and returns what the tests assert and docs/INTERVALS.md tabulates: coverage of the exact p,
the share of repeats whose interval excludes it without a flag (`stop` other than reached, or importance
sampling's unresolved modes), median |log10 p_hat - log10 p|, the relative RMS error of p_hat and the mean
calls.

    .venv/bin/python -m survey.rare.coverage [--repeats 100] [--estimators splitting,last-particle,importance]

prints one JSON line per (map, p, estimator) over p = 1e-3, 1e-4, 1e-6, 1e-9 (the d = 1024 map at 1e-4 only):
the table of docs/INTERVALS.md.
"""

from __future__ import annotations

import math
from typing import Any, Callable

import numpy as np
import torch

from survey.rare.crosscheck import cross_check
from survey.rare.exact import GatedMap, LinearMap, SphereMap, three_mode_map, two_mode_map
from survey.rare.importance import importance
from survey.rare.last_particle import last_particle
from survey.rare.settings import VALIDATED
from survey.rare.splitting import splitting

PLANTED: dict[str, Callable[[], Any]] = {
    "two-mode d=64": lambda: two_mode_map(64),
    "two-mode d=1024": lambda: two_mode_map(1024),
    "three-mode d=64": lambda: three_mode_map(64),
    "linear (symmetric) d=64": lambda: LinearMap(64, gain=4.0),
    "gated d=64": lambda: GatedMap(64, gain=4.0, kappa=2.0, center=1.0),
    "sphere (isotropic) d=64": lambda: SphereMap(64),
    # cheaper variants for the test suite (the same maps in fewer dimensions)
    "linear (symmetric) d=16": lambda: LinearMap(16, gain=4.0),
    "sphere (isotropic) d=16": lambda: SphereMap(16),
}
#: The maps of the docs table (the d = 16 variants are the suite's cheaper copies).
TABLE_MAPS = ("two-mode d=64", "two-mode d=1024", "three-mode d=64", "linear (symmetric) d=64", "gated d=64",
              "sphere (isotropic) d=64")


def estimate(estimator: str, model, delta: float, repeats: int, seed: int, dtype: torch.dtype,
             check: bool = True, stop_below: float | None = None) -> list:
    """`repeats` independent estimates at the validated settings; the particle estimators' cross-checked against
    importance sampling's design points (survey.rare.crosscheck; check=False: the particle estimate alone);
    stop_below: certify P < stop_below (the particle estimators)."""
    results = _estimate(estimator, model, delta, repeats, seed, dtype, stop_below)
    if estimator == "importance" or not check or not VALIDATED[estimator].get("cross_check"):
        return results
    designs = _estimate("importance", model, delta, repeats, seed + 7919, dtype)
    return [cross_check(r, d) for r, d in zip(results, designs)]


def _estimate(estimator: str, model, delta: float, repeats: int, seed: int, dtype: torch.dtype,
              stop_below: float | None = None) -> list:
    gen = torch.Generator().manual_seed(seed)
    settings = VALIDATED[estimator]
    if estimator == "splitting":
        return splitting(model.score, model.dim, delta, generator=gen, repeats=repeats, dtype=dtype,
                         stop_below=stop_below,
                         n_particles=settings["particles"], mcmc_steps=settings["mcmc_steps"], runs=settings["runs"],
                         p0=settings["p0"])
    if estimator == "last-particle":
        return last_particle(model.score, model.dim, delta, generator=gen, repeats=repeats, dtype=dtype,
                             stop_below=stop_below,
                             n_particles=settings["particles"], mcmc_steps=settings["mcmc_steps"],
                             runs=settings["runs"])
    return importance(model.score, model.dim, delta, generator=gen, repeats=repeats, dtype=dtype,
                      n=settings["draws"], restarts=settings["restarts"])


def flagged(result) -> bool:
    """The row says it could not resolve the set (a widened or open upper end)."""
    return result.info.get("stop", "reached") not in ("reached",) or bool(result.info.get("modes_unresolved"))


def measure(estimator: str, name: str, nominal: float, repeats: int = 100, seed: int = 0,
            dtype: torch.dtype = torch.float32, check: bool = True) -> dict[str, Any]:
    """Coverage numbers of one estimator on one planted map at exact p ~ nominal (module docstring)."""
    model = PLANTED[name]()
    delta = model.delta_for(nominal)
    p = model.probability(delta)
    results = estimate(estimator, model, delta, repeats, seed, dtype, check=check)
    covers = np.array([r.covers(p) for r in results])
    flags = np.array([flagged(r) for r in results])
    errors = [abs(math.log10(r.p) - math.log10(p)) for r in results if r.p]
    ratios = np.array([r.p / p for r in results if r.p is not None])
    return {"estimator": estimator, "map": name, "p": p, "repeats": repeats, "coverage": float(covers.mean()),
            "excluded_unflagged": float((~covers & ~flags).mean()), "flagged": float(flags.mean()),
            "median_log10_error": float(np.median(errors)) if errors else math.inf,
            "relative_rmse": float(np.sqrt(np.mean((ratios - 1) ** 2))) if ratios.size else math.inf,
            "calls": float(np.mean([r.calls for r in results])),
            "cross_check_flagged": float(np.mean([bool(r.info.get("cross_check_flag")) for r in results]))}


def certificates(estimator: str, name: str, nominal: float, repeats: int = 100, seed: int = 0,
                 dtype: torch.dtype = torch.float32) -> dict[str, Any]:
    """Certification "P < p_c" at exact p = p_c ~ nominal on one planted map: the share of repeats that certify
    (wrong, since p = p_c) with the cross-check (survey.rare.crosscheck) and without it (`wrong_unchecked`)."""
    model = PLANTED[name]()
    delta = model.delta_for(nominal)
    p = model.probability(delta)
    plain = _estimate(estimator, model, delta, repeats, seed, dtype, stop_below=p)
    designs = _estimate("importance", model, delta, repeats, seed + 7919, dtype)
    checked = [cross_check(r, d) for r, d in zip(plain, designs)]

    def wrong(results):
        return float(np.mean([r.info.get("stop") == "stop_below" and r.certified_below is not None
                              and r.certified_below <= p for r in results]))

    return {"estimator": estimator, "map": name, "p_c": p, "repeats": repeats, "wrong": wrong(checked),
            "wrong_unchecked": wrong(plain), "calls": float(np.mean([r.calls for r in checked]))}


def main() -> None:
    import argparse
    import json
    import time

    parser = argparse.ArgumentParser(description="coverage of the rare-event estimators on the planted maps")
    parser.add_argument("--repeats", type=int, default=100)
    parser.add_argument("--estimators", default="splitting,last-particle,importance")
    parser.add_argument("--levels", default="1e-3,1e-4,1e-6,1e-9")
    args = parser.parse_args()
    torch.set_num_threads(1)
    for name in TABLE_MAPS:
        for nominal in (float(v) for v in args.levels.split(",")):
            if "1024" in name and nominal != 1e-4:
                continue
            for estimator in args.estimators.split(","):
                start = time.perf_counter()
                row = measure(estimator, name, nominal, repeats=args.repeats)
                print(json.dumps({**row, "seconds": round(time.perf_counter() - start, 1)}), flush=True)


if __name__ == "__main__":
    main()


__all__ = ["PLANTED", "TABLE_MAPS", "certificates", "estimate", "flagged", "measure"]
