"""Certified bounds: rigorous layer norms (spectral.py, conv.py), local bounds over a perturbation ball by
bound propagation (propagate.py, programs.py), and center smoothing (smoothing.py).

Every number a function here calls a bound is an upper bound in exact arithmetic on the quantity it names,
with the floating-point error of its own computation added under the standard model of IEEE arithmetic
(|fl(a op b) - a op b| <= u |a op b|, u = 2^-53 in float64); the numerical estimates the survey also prints
(Lanczos, power iteration) are never called bounds.
"""
