"""The validated settings of each rare-event estimator: the defaults of the `rare` task, the settings whose
coverage tests/test_rare_coverage.py measures on the planted maps (docs/INTERVALS.md), and the floors below
which a study's rows are marked `validated = false`."""

from __future__ import annotations

VALIDATED: dict[str, dict[str, float | int]] = {
    "splitting": {"particles": 200, "mcmc_steps": 10, "runs": 4, "p0": 0.2, "cross_check": True},
    "last-particle": {"particles": 100, "mcmc_steps": 10, "runs": 4, "cross_check": True},
    "importance": {"draws": 2000, "restarts": 32},
}

#: Settings a study may not lower without its rows losing `validated` (larger is always allowed).
FLOORS: dict[str, tuple[str, ...]] = {
    "splitting": ("particles", "mcmc_steps", "runs", "cross_check"),
    "last-particle": ("particles", "mcmc_steps", "runs", "cross_check"),
    "importance": ("draws", "restarts"),
}


def below_floor(estimator: str, settings: dict) -> list[str]:
    """The settings of `estimator` below their validated value, as 'name = value < floor' strings."""
    floors = VALIDATED.get(estimator, {})
    return [f"{key} = {settings[key]} < {floors[key]}" for key in FLOORS.get(estimator, ())
            if key in settings and settings[key] < floors[key]]


__all__ = ["FLOORS", "VALIDATED", "below_floor"]
