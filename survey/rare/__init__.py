"""Rare-event estimators of p = P(S(z) >= delta) for z ~ N(0, I_d) and a batched score S.

`mc` (naive Monte Carlo, Clopper-Pearson), `splitting` (adaptive multilevel splitting, pCN kernel,
several independent runs checked against each other, certification "P < p_c"), `last_particle`
(last-particle splitting: exact Poisson interval and certification), `importance` (mixture of Gaussians
at the FORM design points); each returns a `RareResult`. `settings` holds the validated settings,
`coverage` the planted-map coverage measurement, `crosscheck` the particle estimates' check against importance
sampling's design points. `exact` holds planted maps with exact answers; `distance` the output
distances D; `perturbation_score` builds S(z) = D(f(apply(y, z, severity)), f(y)) for one image.
Pure torch / numpy / scipy: no Ray, no Parquet.
"""

from survey.rare.distance import make_distance, patch_change, relative_l2
from survey.rare.importance import design_points, importance
from survey.rare.last_particle import last_particle
from survey.rare.mc import mc
from survey.rare.result import RareResult, Score
from survey.rare.score import perturbation_score
from survey.rare.splitting import splitting

__all__ = ["RareResult", "Score", "design_points", "importance", "last_particle", "make_distance", "mc", "patch_change",
           "perturbation_score", "relative_l2", "splitting"]
